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
    drafted: int = 0  # chain drafts proposed for verification (within the token budget)
    tree_nodes: int = 0  # tree nodes verified that could be emitted (depth < tokens still allowed)
    accepted: int = 0  # draft tokens accepted AND emitted (none past the budget or an EOS)
    accept_hist: Counter = field(default_factory=Counter)  # accepted length per verification
    verifications: int = 0  # verification forwards
    finish: str = ""  # "eos" | "length"
    extra: dict = field(default_factory=dict)  # strategy-specific counters (summable numbers)
    candidates: list = field(default_factory=list)  # all outputs of a multi-draft method, best first (list[list[int]])
    candidate_scores: list = field(default_factory=list)  # the method's own score of each candidate (beam: normalised log p)
    t_start: float = field(default_factory=time.perf_counter)
    t_first: float | None = None  # perf_counter when the first token became known
    _last: list = field(default_factory=list, repr=False)
    budget: int | None = field(default=None, repr=False)  # max new tokens (set by `done`)
    _pending: int | None = field(default=None, repr=False)  # accepted count of the verification not yet emitted
    _last_accepted: int | None = field(default=None, repr=False)  # accepted count behind the last emit

    def emit(self, toks: list[int]) -> None:
        """Append tokens produced by the strategy; the first call fixes time-to-first-token."""
        if toks and self.t_first is None:
            self.t_first = time.perf_counter()
        self.tokens.extend(int(t) for t in toks)
        self._last = toks
        self._last_accepted, self._pending = self._pending, None

    def done(self, eos_ids, max_new_tokens: int) -> bool:
        """True once the output fills the budget or the last emitted tokens hold an EOS."""
        self.budget = max_new_tokens
        return len(self.tokens) >= max_new_tokens or any(int(t) in eos_ids for t in self._last)

    def _room(self) -> int:
        return (self.budget - len(self.tokens)) if self.budget is not None else 1 << 30

    def record_verification(self, drafted: int, accepted: int) -> None:
        """A chain of `drafted` drafts verified, the first `accepted` kept (emitted next)."""
        self.verifications += 1
        self.drafted += min(drafted, self._room())
        self.accepted += accepted
        self.accept_hist[accepted] += 1
        self._pending = accepted

    def record_tree_verification(self, parents: list[int], accepted: int) -> None:
        """A token tree (node i's parent: parents[i], -1 = root) verified, a path of `accepted`
        nodes kept. Nodes deeper than the tokens still allowed can never be emitted: not counted."""
        room, depth = self._room(), []
        for par in parents:
            depth.append(0 if par < 0 else depth[par] + 1)
        self.verifications += 1
        self.tree_nodes += sum(d < room for d in depth)
        self.accepted += accepted
        self.accept_hist[accepted] += 1
        self._pending = accepted

    def row_fields(self, t0: float) -> dict:
        """The row's output and counter fields (t0: perf_counter when generation started)."""
        return {"output_tokens": self.tokens, "finish": self.finish,
                "ttft_s": (self.t_first - t0) if self.t_first else None, "new_tokens": len(self.tokens),
                "target_forwards": self.target_forwards, "draft_forwards": self.draft_forwards,
                "target_tokens_fed": self.target_tokens_fed, "drafted": self.drafted, "tree_nodes": self.tree_nodes,
                "accepted": self.accepted, "verifications": self.verifications,
                "accept_hist": {str(k): v for k, v in sorted(self.accept_hist.items())}, "extra": self.extra}

    def finish_with(self, eos_ids, max_new_tokens: int, stop_at: int | None = None) -> "Trace":
        """Cut at the first EOS, after the token `stop_at` (the one completing a stop string: see
        harness/decoding.py) or at the budget, whichever comes first; set `finish` ("eos", "stop",
        "length"). Accepted drafts that the cut removes (the last step's tokens past the cut) are
        taken out of the counts."""
        before = len(self.tokens)
        self.finish = "length"
        for i, t in enumerate(self.tokens):
            if stop_at is not None and i == stop_at and i < max_new_tokens:
                self.tokens = self.tokens[: i + 1]
                self.finish = "stop"
                break
            if t in eos_ids:
                self.tokens = self.tokens[: i + 1]
                self.finish = "eos"
                break
        else:
            self.tokens = self.tokens[:max_new_tokens]
        cut = before - len(self.tokens)
        if cut and self._last_accepted:  # the last emit was a verification: accepted drafts + 1
            kept = max(len(self._last) - cut, 0)
            lost = self._last_accepted - min(self._last_accepted, kept)
            if lost:
                self.accepted -= lost
                self.accept_hist[self._last_accepted] -= 1
                if not self.accept_hist[self._last_accepted]:
                    del self.accept_hist[self._last_accepted]
                self.accept_hist[self._last_accepted - lost] += 1
        return self

