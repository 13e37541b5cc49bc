"""What a strategy is given for one example: a `Prompt` and a `DecodingState`.

    def decode(self, state):                       # a strategy's whole contract
        while not state.done:
            logits = state.target.forward(state.seq[state.target.length:], last_only=True)
            state.emit([self.sampling.next_token(logits, state.rng)])

The state owns the engines (reset at the start of the example), the token budget, the EOS ids,
the stop strings, the sequence (prompt + emitted tokens), the RNG and the counters; `finish()`
turns it into the `Trace` whose `row_fields()` the runner writes. Remaining budget, finish reason
and the attribution of forwards live here once, not in every strategy.

Stop strings (lm-eval's `until`): `done` turns true once the decoded output contains one (checked
on a window of the newest tokens, so a step costs a short decode, not the whole output); `finish`
cuts the tokens after the one that completes the first stop string (`stop_index`, on the full
decode) and sets finish = "stop"; the runner cuts the text before it (`cut_text`). A lossless
method stops at the same token as greedy, since its tokens are greedy's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from harness.trace import Trace

if TYPE_CHECKING:
    from harness.engines.base import Engine

STOP_MARGIN = 4  # extra tokens before a stop string's length in the windowed check (multi-byte characters)


def cut_text(text: str, stops) -> str:
    """`text` before the earliest occurrence of any stop string (all of it when none occurs)."""
    hits = [i for i in (text.find(s) for s in stops or ()) if i >= 0]
    return text[: min(hits)] if hits else text


def stop_index(decode, tokens: list[int], stops) -> int | None:
    """The index of the token that completes the first stop string: the smallest i with a stop
    string in decode(tokens[: i + 1]) (found by bisection: a prefix's text only grows), or None."""
    if not stops or not tokens or not any(s in decode(tokens) for s in stops):
        return None
    lo, hi = 0, len(tokens) - 1  # the answer is in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if any(s in decode(tokens[: mid + 1]) for s in stops):
            hi = mid
        else:
            lo = mid + 1
    return lo


def stop_before_eos(decode, tokens: list[int], stops, eos_ids, budget: int | None = None) -> int | None:
    """`stop_index` within the tokens that the budget and the first EOS keep."""
    toks = list(tokens[:budget] if budget is not None else tokens)
    for i, tok in enumerate(toks):
        if tok in eos_ids:
            toks = toks[:i]
            break
    return stop_index(decode, toks, stops)


@dataclass(frozen=True)
class Prompt:
    """One prompt in every shape a strategy may need: the token ids the target reads, the chat
    messages they were rendered from, and task-provided structure (an N-best list). Never the
    gold answer."""

    ids: list[int]
    messages: list[dict] | str | None = None
    nbest: list[str] | None = None  # N-best hypotheses (HyPoradise), best first
    context: list[str] | None = None  # source texts an extractive answer comes from (QA documents)
    stop: tuple[str, ...] = ()  # stop strings (task.prompting.stop): the output ends where one appears

    @property
    def sources(self) -> list[str]:
        """The texts an extractive / copying strategy may copy from: the context documents, else
        the N-best hypotheses; [] when the task gives neither."""
        return list(self.context or self.nbest or [])

    @property
    def question(self) -> str:
        """The last user message (what a scorer judges steps against); '' without messages."""
        m = self.messages
        if m is None:
            return ""
        if isinstance(m, str):
            return m
        users = [x["content"] for x in m if x.get("role") == "user"]
        return users[-1] if users else ""


@dataclass
class DecodingState:
    """One example's decoding: engines, budget, sequence, RNG and counters."""

    target: Engine
    prompt: Prompt
    budget: int  # max new tokens
    rng: torch.Generator
    draft: Engine | None = None
    trace: Trace = field(default_factory=Trace)
    seq: list[int] = field(default_factory=list)  # prompt ids + emitted tokens
    self_draft_forwards: int = 0  # drafting forwards run on the target's own layers (early exit)

    def __post_init__(self):
        self._snap = []
        for e in (self.target, self.draft):
            if e is not None:
                e.reset()
            self._snap.append(e.counters() if e is not None else (0, 0))
        self.seq = list(self.prompt.ids)
        self.trace.budget = self.budget
        self.stops = tuple(self.prompt.stop or ())
        self._stop_seen = 0  # emitted tokens already checked for a stop string
        self._stop_back = max((len(s) for s in self.stops), default=0) + STOP_MARGIN
        self.stopped = False  # a stop string appeared in the output

    # ------------------------------------------------------------------ reading
    @property
    def target_forwards_at_start(self) -> int:
        return self._snap[0][0]

    @property
    def eos_ids(self) -> frozenset:
        return self.target.eos_ids

    @property
    def tokens(self) -> list[int]:
        """Emitted tokens so far."""
        return self.trace.tokens

    @property
    def remaining(self) -> int:
        """Tokens the budget still allows."""
        return self.budget - len(self.trace.tokens)

    @property
    def done(self) -> bool:
        """The budget is full, the last emitted tokens hold an EOS, or the output holds a stop string."""
        return self.trace.done(self.target.eos_ids, self.budget) or self._stop_check()

    def _stop_check(self) -> bool:
        """Whether a stop string has appeared: the tokens emitted since the last check, decoded with
        the longest stop string's length (+ STOP_MARGIN) of tokens before them."""
        if self.stopped or not self.stops:
            return self.stopped
        toks = self.trace.tokens
        if len(toks) > self._stop_seen:
            text = self.target.decode(toks[max(0, self._stop_seen - self._stop_back):])
            self._stop_seen = len(toks)
            self.stopped = any(s in text for s in self.stops)
        return self.stopped

    @property
    def extra(self) -> dict:
        """Strategy-specific counters for the row (summable numbers)."""
        return self.trace.extra

    # ------------------------------------------------------------------ writing
    def emit(self, tokens: list[int]) -> None:
        """Append tokens to the output (and the sequence)."""
        self.trace.emit(tokens)
        self.seq += [int(t) for t in tokens]

    def count(self, key: str, n=1) -> None:
        self.trace.extra[key] = self.trace.extra.get(key, 0) + n

    def verified_chain(self, drafted: int, accepted: int) -> None:
        """A chain of drafts verified, the first `accepted` kept (to be emitted next)."""
        self.trace.record_verification(drafted, accepted)

    def verified_tree(self, parents: list[int], accepted: int) -> None:
        """A token tree verified, a path of `accepted` nodes kept (to be emitted next)."""
        self.trace.record_tree_verification(parents, accepted)

    def finish(self) -> Trace:
        """The example's Trace: this example's forwards, cut at the first EOS, stop string or the budget."""
        t, (t0, d0) = self.trace, self._snap
        t.target_forwards = self.target.forwards - t0[0]
        t.target_tokens_fed = self.target.tokens_fed - t0[1]
        t.draft_forwards = (self.draft.forwards - d0[0] if self.draft is not None else 0) + self.self_draft_forwards
        return t.finish_with(self.target.eos_ids, self.budget, stop_at=self._stop_at())

    def _stop_at(self) -> int | None:
        """Where the output's first stop string ends (a token index), on the exact full decode, within
        the tokens the EOS and the budget keep."""
        if not self.stops:
            return None
        return stop_before_eos(self.target.decode, self.trace.tokens, self.stops, self.target.eos_ids, self.budget)
