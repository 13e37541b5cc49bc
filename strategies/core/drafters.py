"""Chain drafting: draw a draft token, and propose a chain from a draft engine.

`draw(sampling, logits, rng)`: one draft token and its distribution q (None at T = 0, where a
draft is a point mass: the argmax).

`ChainDrafter(engine, sampling)`: the draft side of speculative decoding, shared by
speculative, SmartSpec and both SpecDec++ variants (a self-draft is a draft engine made of the
target's first layers):

    drafts, q = drafter.propose(state, k, stop=...)   # catch up on unseen tokens, draft up to k
    new = strategy.verify_step(state, drafts, q)       # the target verifies
    drafter.update(state, new)                         # keep only what was accepted
    state.emit(new)

`stop(i, logits, q, x, hidden)` is asked after the i-th draft x (its distribution `logits`, q)
whether to stop early (adaptive lengths). With `judge_layer` set, x is fed to the draft FIRST
and its hidden state at that layer is passed as `hidden` (SpecDec++'s head judges the token it
sees); otherwise x is fed only if drafting goes on.
"""

from __future__ import annotations

import torch

from strategies.core import probs as P


def draw(sampling, logits: torch.Tensor, rng: torch.Generator) -> tuple[int, torch.Tensor | None]:
    """A draft token from draft logits [V]: the argmax at T = 0 (q None), else a draw from q."""
    if sampling.greedy:
        return int(logits.argmax()), None
    q = sampling.probs(logits)
    return P.sample(q, rng), q


class ChainDrafter:
    def __init__(self, engine, sampling):
        self.engine, self.sampling = engine, sampling

    def propose(self, state, k: int, stop=None, judge_layer: int | None = None) -> tuple[list[int], torch.Tensor | None]:
        """Up to k drafts after state.seq and their q [n, V] (None at T = 0)."""
        d = self.engine
        drafts, qs = [], []
        if k <= 0:
            return drafts, None
        logits = d.forward(state.seq[d.length:], last_only=True)  # catch up; logits of x_1
        while True:
            x, q = draw(self.sampling, logits, state.rng)
            drafts.append(x)
            if q is not None:
                qs.append(q)
            if len(drafts) >= k:
                break
            if judge_layer is None:
                if stop is not None and stop(len(drafts), logits, q, x, None):
                    break
                logits = d.forward([x], last_only=True)
            else:
                nxt = d.forward([x], hidden_layers=[judge_layer], last_only=True)
                if stop(len(drafts), logits, q, x, d.hidden[judge_layer][-1]):
                    break
                logits = nxt
        return drafts, (torch.stack(qs) if qs else None)

    def update(self, state, new: list[int]) -> None:
        """After verification (before `state.emit(new)`): the draft cached state.seq + some drafts;
        keep what was accepted (all of new but the correction / bonus token)."""
        self.engine.truncate_to(min(self.engine.length, len(state.seq) + len(new) - 1))
