"""SmartSpec: goodput-optimal speculation length (Liu et al. 2024, "Optimizing Speculative
Decoding for Serving Large Language Models Using Goodput").

Before each step choose K in {0, ..., k_max} maximising

    goodput(K) = E[tokens | K, alpha] / step_time(K),   E = (1 - alpha^(K+1)) / (1 - alpha)

alpha = this request's acceptance rate so far (Beta prior: `prior_accept` of `prior_weight`
drafted tokens), step_time(K) = K * draft_token_s + target_a + target_b * (K + 1), a linear model
of the target's cost in verified tokens plus the draft's cost per token. The times are
profiled on this machine (a few timed forwards before the first example; recorded in every
row) or given in the YAML (`step_model`). K = 0 is plain decoding: speculation switches
itself off where it would lose. Lossless whatever K is chosen (standard verification).
"""

from __future__ import annotations

import time

import torch

from harness.errors import ConfigError
from strategies.speculative import Speculative


def expected_tokens(k: int, alpha: float) -> float:
    """E[tokens per step] with k drafts accepted i.i.d. with probability alpha, bonus included."""
    if alpha >= 1.0:
        return k + 1.0
    return (1 - alpha ** (k + 1)) / (1 - alpha)


class SmartSpec(Speculative):
    name = "smartspec"

    def __init__(self, draft, k_max: int = 8, prior_accept: float = 0.6, prior_weight: float = 4.0,
                 step_model: dict | None = None, sampling=None):
        super().__init__(draft, k=max(k_max, 1), sampling=sampling)
        if k_max < 0 or not 0 < prior_accept < 1 or prior_weight < 0:
            raise ConfigError("smartspec: need k_max >= 0, 0 < prior_accept < 1, prior_weight >= 0")
        self.k_max, self.prior_accept, self.prior_weight = k_max, prior_accept, prior_weight
        self.step_model = dict(step_model) if step_model else None  # {target_a, target_b, draft_token_s}

    def params(self) -> dict:
        return {**super().params(), "step_model": self.step_model}

    @torch.inference_mode()
    def profile(self, target, draft, prefix: list[int], repeats: int = 3) -> dict:
        """Time target forwards of 1 and 8 new tokens after `prefix`, and a 1-token draft forward
        (median of `repeats`); fit step time = target_a + target_b * tokens."""

        def timed(engine, n):
            out = []
            for _ in range(repeats):
                engine.reset()
                engine.forward(prefix)
                t0 = time.perf_counter()
                engine.forward(prefix[:1] * n)
                out.append(time.perf_counter() - t0)
            return sorted(out)[len(out) // 2]

        t1, t8, d1 = timed(target, 1), timed(target, 8), timed(draft, 1)
        b = max((t8 - t1) / 7, 0.0)
        return {"target_a": max(t1 - b, 0.0), "target_b": b, "draft_token_s": d1}

    def setup(self, target, draft) -> None:
        """Profile the step-time model once, before the first example (the runner calls this
        outside any example's timing); the model is recorded in every row."""
        if self.step_model is None:
            self.step_model = self.profile(target, draft, list(range(10, 42)))

    def generate(self, target, prompt_ids, max_new_tokens, rng, draft=None):
        self.setup(target, draft)  # no-op after the first call
        trace = super().generate(target, prompt_ids, max_new_tokens, rng, draft=draft)
        trace.extra.update({f"step_model_{k}": v for k, v in self.step_model.items()})
        return trace

    def draft_length(self, trace, remaining: int) -> int:
        m = self.step_model
        alpha = (trace.accepted + self.prior_accept * self.prior_weight) / (trace.drafted + self.prior_weight)
        alpha = min(max(alpha, 0.0), 0.999)

        def goodput(k):
            t = k * m["draft_token_s"] + m["target_a"] + m["target_b"] * (k + 1)
            return expected_tokens(k, alpha) / t

        best = max(range(0, min(self.k_max, remaining) + 1), key=goodput)
        trace.extra["k_chosen"] = trace.extra.get("k_chosen", 0) + best
        trace.extra["steps_without_speculation"] = trace.extra.get("steps_without_speculation", 0) + (best == 0)
        return best
