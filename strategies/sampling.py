"""Plain autoregressive decoding: one target forward per token, any SamplingParams.

Ancestral sampling with temperature, top-k, top-p (Holtzman et al. 2020) and min-p
(Nguyen et al. 2024) truncation; temperature 0 is greedy. The reference every
speed-up is measured against.
"""

from __future__ import annotations

import torch

from strategies.base import Strategy


class Sampling(Strategy):
    name = "sampling"

    def generate(self, target, prompt_ids, max_new_tokens, rng: torch.Generator, draft=None):
        trace, snap = self.begin(target)
        logits = target.forward(prompt_ids, last_only=True)  # prefill: [V]
        while True:
            tok = self.sampling.next_token(logits, rng)
            trace.emit([tok])
            if trace.done(target.eos_ids, max_new_tokens):
                break
            logits = target.forward([tok], last_only=True)
        return self.end(trace, snap, target, max_new_tokens)
