"""Plain autoregressive decoding: one target forward per token, any SamplingParams.

Ancestral sampling with temperature, top-k, top-p (Holtzman et al. 2020) and min-p
(Nguyen et al. 2024) truncation; temperature 0 is greedy. The reference every
speed-up is measured against.
"""

from __future__ import annotations

from strategies.core.base import Strategy


class Sampling(Strategy):
    name = "sampling"

    def decode(self, state):
        logits = state.target.forward(state.seq, last_only=True)  # prefill: [V]
        while True:
            tok = self.sampling.next_token(logits, state.rng)
            state.emit([tok])
            if state.done:
                break
            logits = state.target.forward([tok], last_only=True)
