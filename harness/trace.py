"""What a strategy returns: tokens + counters. Every efficiency number derives from these."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Trace:
    tokens: list[int] = field(default_factory=list)  # generated ids (prompt excluded, EOS kept)
    target_forwards: int = 0  # forwards of the target model (prefill included)
    draft_forwards: int = 0  # forwards of a draft model
    target_tokens_fed: int = 0  # positions the target processed (prompt + drafts + tree nodes)
    drafted: int = 0  # draft tokens proposed for verification
    accepted: int = 0  # draft tokens accepted
    accept_hist: Counter = field(default_factory=Counter)  # accepted length per verification
    verifications: int = 0  # verification forwards
    finish: str = ""  # "eos" | "length"
    extra: dict = field(default_factory=dict)  # strategy-specific counters (summable numbers)
    candidates: list = field(default_factory=list)  # all outputs of a multi-draft method, best first (list[list[int]])
    t_start: float = field(default_factory=time.perf_counter)
    t_first: float | None = None  # perf_counter when the first token became known
    _last: list = field(default_factory=list, repr=False)

    def emit(self, toks: list[int]) -> None:
        """Append tokens produced by the strategy; the first call fixes time-to-first-token."""
        if toks and self.t_first is None:
            self.t_first = time.perf_counter()
        self.tokens.extend(int(t) for t in toks)
        self._last = toks

    def done(self, eos_ids, max_new_tokens: int) -> bool:
        """True once the output fills the budget or the last emitted tokens hold an EOS."""
        return len(self.tokens) >= max_new_tokens or any(int(t) in eos_ids for t in self._last)

    def record_verification(self, drafted: int, accepted: int) -> None:
        self.verifications += 1
        self.drafted += drafted
        self.accepted += accepted
        self.accept_hist[accepted] += 1

    def finish_with(self, eos_ids, max_new_tokens: int) -> "Trace":
        """Cut at the first EOS or at the budget; set `finish`."""
        for i, t in enumerate(self.tokens):
            if t in eos_ids:
                self.tokens = self.tokens[: i + 1]
                self.finish = "eos"
                return self
        self.tokens = self.tokens[:max_new_tokens]
        self.finish = "length"
        return self

