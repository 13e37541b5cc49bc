"""Top-k parallel unmasking for masked-diffusion LMs (the standard dLLM baseline; LLaDA's sampler
with `steps = canvas / k`): every forward fixes the k masked positions of the current block that
the unmasking rule ranks highest (confidence, margin, entropy or random), each to its argmax
token. k = 1 is one-token-per-step decoding, the reference FreeDave reproduces; k = canvas length
decodes the whole answer from one forward (every position from its marginal).

ParallelBench (Kang et al. 2025) sweeps k (tokens per step) x rule x block length and shows that
tasks whose answer tokens are dependent given the prompt (shuffle, replace-random) collapse as k
grows while copy does not: see docs/strategies.md and tools/parallelbench_sweep.py.
"""

from __future__ import annotations

from harness.errors import ConfigError
from strategies.core.diffusion import SCORES, DiffusionStrategy, position_scores, ranked


class DllmTopk(DiffusionStrategy):
    name = "dllm_topk"

    def __init__(self, k: int = 1, rule: str = "confidence", block_length: int = 0, eos_stop: bool = False):
        super().__init__(block_length, eos_stop)
        if k < 1:
            raise ConfigError(f"dllm_topk: k (tokens per step) must be >= 1, got {k}")
        if rule not in SCORES:
            raise ConfigError(f"dllm_topk: rule '{rule}' is not one of {', '.join(SCORES)}")
        self.k, self.rule = int(k), rule
        self.lossless = k == 1 and rule != "random"  # k = 1 IS the one-per-step reference

    def decode(self, canvas, rng) -> None:
        while not canvas.done:
            logits = canvas.logits()
            act = canvas.active()
            toks, s = position_scores(logits[act], self.rule, rng)
            pick = ranked(s)[: self.k]
            canvas.fix(act[pick].tolist(), toks[pick].tolist())
