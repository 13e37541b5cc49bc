"""Lexical Unit Decoding (LUD), the decoding side (docs/strategies.md).

LUD fine-tunes a model to predict several next tokens in parallel: k placeholder tokens are
appended after the sequence, and the output at the i-th placeholder (which sits at position
t + i) predicts the token at t + i + 1, while the last real token predicts t + 1 as usual. At
decoding time one forward over sequence + k placeholders gives the ordinary next token plus k
parallel predictions; the leading run of parallel predictions whose confidence (max softmax
probability) reaches `threshold` is emitted together with the next token as one "lexical unit".

Two modes (`verify`):
- verify: false is the paper's mode: the unit is emitted as is (one forward per unit; LOSSY,
  the instance declares lossless = False).
- verify: true makes it lossless by treating the confident span as a draft, verified by the
  NEXT forward, folded so each step is still one forward: feed the uncached tail + the previous
  span + k placeholders; the rows of the span are verified with the standard rule (q = the
  placeholder distribution the span token was drawn from; argmax at T = 0), and when the whole
  span is accepted, the placeholders (which sit after it, at the bonus token's position
  onwards) give the next span. After a rejection the placeholder rows follow a rejected token
  and are dropped: the next step drafts nothing and only collects new parallel predictions.
  Token-identical to greedy at T = 0, the target distribution at T > 0.

Placeholder id: `placeholder_id`, else the model's pad token, else its unk token (either only
when it is not an end-of-sequence id), else the last vocabulary id.

Honest expectations: the parallel predictions only mean something for a model FINE-TUNED for
them (the paper's +33% text / +30% code). No such model is available here: an untuned model
reads the placeholders as ordinary tokens and predicts what follows them, so its spans are
short or wrong; in verify mode they are rejected (MAT near or below 1 + their rare hits, and
the k extra positions per forward cost time), in lossy mode they corrupt the output. The code
path is the real one: give it a LUD-fine-tuned model and its placeholder id.
"""

from __future__ import annotations

import torch

from harness.errors import ConfigError
from strategies.core.base import Strategy
from strategies.core.drafters import draw


def confident_span(logits: torch.Tensor, threshold: float) -> int:
    """Length of the leading run of rows [k, V] whose max softmax probability >= threshold."""
    if logits.shape[0] == 0:
        return 0
    ok = (torch.softmax(logits.float(), -1).max(-1).values >= threshold).tolist()
    return next((i for i, good in enumerate(ok) if not good), len(ok))


class LUD(Strategy):
    name = "lud"
    needs = frozenset({"rollback"})

    def __init__(self, k: int = 4, threshold: float = 0.9, verify: bool = True, placeholder_id: int | None = None,
                 sampling=None):
        super().__init__(sampling)
        if k < 1 or not 0 < threshold <= 1:
            raise ConfigError(f"lud: need k >= 1 and 0 < threshold <= 1 (got {k}, {threshold})")
        if placeholder_id is not None and int(placeholder_id) < 0:
            raise ConfigError(f"lud: placeholder_id must be a token id >= 0 or null (got {placeholder_id})")
        self.k, self.threshold, self.verify = k, float(threshold), bool(verify)
        self.placeholder_id = None if placeholder_id is None else int(placeholder_id)
        self.lossless = self.verify  # the paper's unverified mode changes the output

    def placeholder(self, target) -> int:
        if self.placeholder_id is not None:
            if self.placeholder_id >= target.vocab_size:
                raise ConfigError(f"lud: placeholder_id {self.placeholder_id} >= vocabulary size {target.vocab_size}")
            return self.placeholder_id
        for kind in ("pad", "unk"):
            i = target.special_id(kind)
            if i is not None and i not in target.eos_ids and 0 <= i < target.vocab_size:
                return i
        return target.vocab_size - 1

    def setup(self, target, draft=None) -> None:
        self.placeholder(target)  # a bad placeholder id fails before the first example

    def decode(self, state):
        target, s = state.target, self.sampling
        pad = self.placeholder(target)
        ex = state.extra
        ex.update({"lud_units": 0, "lud_unit_tokens": 0, "lud_span_tokens": 0, "lud_placeholders_fed": 0})
        drafts, qs = [], []  # verify mode: the span predicted by the previous forward
        while not state.done:  # the first forward also prefills the prompt
            remaining = state.remaining
            drafts, qs = drafts[:max(remaining - 1, 0)], qs[:max(remaining - 1, 0)]
            d = len(drafts)
            kk = min(self.k, remaining - d - 1)  # parallel predictions past the budget are useless
            tail = state.seq[target.length:]
            logits = target.forward(tail + drafts + [pad] * kk)  # feed: tail + span + placeholders ...
            ex["lud_placeholders_fed"] += kk
            t = len(tail)
            rows = logits[t - 1:t + d]  # row j predicts the token after drafts[:j]
            n, nxt = self.accept(state, self.target_probs(rows), drafts, torch.stack(qs) if qs else None)  # ... accept
            placeholder_rows = logits[t + d:]  # row i predicts the position after nxt, + i
            m = confident_span(placeholder_rows, self.threshold) if n == d else 0
            span = [draw(s, placeholder_rows[i], state.rng) for i in range(m)]
            ex["lud_span_tokens"] += m
            if self.verify:
                target.rollback(kk + d - n)
                new = drafts[:n] + [nxt]
                drafts, qs = [x for x, _ in span], [q for _, q in span if q is not None]
            else:  # the paper's mode: the whole unit is emitted unverified; the span is fed next step
                target.rollback(kk)
                new = [nxt] + [x for x, _ in span]
            ex["lud_units"] += 1
            ex["lud_unit_tokens"] += len(new)
            state.emit(new)
