"""Best-of-N with a process reward model (the standard test-time scaling baseline).

N complete solutions are sampled in ONE batched generation sharing the prompt's KV
(strategies/search.StepSampler, whole=True); each is split into steps at blank lines and scored
by the scorer (per-step scores aggregated by last / min / prod / mean); the highest value wins
(ties: the earliest sample). Rows report generated_tokens (all N), prm_calls and policy_forwards.
"""

from __future__ import annotations

from harness.errors import ConfigError
from strategies.search import Candidate, SearchStrategy


class BestOfN(SearchStrategy):
    name = "best_of_n"
    uses_scorer = True

    def __init__(self, n: int = 4, sampling=None, scorer=None, aggregate: str = "last", max_step_tokens: int = 256):
        super().__init__(sampling, scorer, aggregate, max_step_tokens)
        if n < 1:
            raise ConfigError(f"{self.name}: n must be >= 1, got {n}")
        self.n = n

    def params(self):
        return {**super().params(), "budget": f"N={self.n}"}

    def sample(self, target, prompt_ids, max_new_tokens, rng, sampler) -> list[Candidate]:
        return sampler.extend(prompt_ids, [Candidate()] * self.n, rng, max_new_tokens, whole=True)

    def generate(self, target, prompt_ids, max_new_tokens, rng, draft=None, messages=None):
        trace, snap, sampler, question, sc = self.start(target, messages)
        cands = self.sample(target, prompt_ids, max_new_tokens, rng, sampler)
        vals = self.score(question, cands)
        best = max(range(len(cands)), key=lambda i: (vals[i], -i))
        return self.finish(trace, snap, target, max_new_tokens, cands[best], sampler, sc, len(cands))
