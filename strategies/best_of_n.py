"""Best-of-N with a process reward model (the standard test-time scaling baseline).

N complete solutions are sampled in ONE batched generation sharing the prompt's KV
(strategies/search.StepSampler, whole=True); each is split into steps at blank lines and scored
by the scorer (per-step scores aggregated by last / min / prod / mean); the highest value wins
(ties: the earliest sample). Rows report generated_tokens (all N), prm_calls and policy_forwards.
"""

from __future__ import annotations

from strategies.search import SampleN


class BestOfN(SampleN):
    name = "best_of_n"
    uses_scorer = True

    def generate(self, target, prompt_ids, max_new_tokens, rng, draft=None, messages=None):
        trace, snap, sampler, question, sc = self.start(target, messages)
        cands = self.sample(target, prompt_ids, max_new_tokens, rng, sampler)
        vals = self.score(question, cands)
        best = max(range(len(cands)), key=lambda i: (vals[i], -i))
        return self.finish(trace, snap, target, max_new_tokens, cands[best], sampler, sc, len(cands))
