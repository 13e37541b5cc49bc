"""Best-of-N with a process reward model (the standard test-time scaling baseline).

N complete solutions are sampled in ONE batched generation sharing the prompt's KV
(strategies/core/search.StepSampler, whole=True); each is split into steps at blank lines and scored
by the scorer (per-step scores aggregated by last / min / prod / mean); the highest value wins
(ties: the earliest sample). Rows report generated_tokens (all N), prm_calls and policy_forwards.
"""

from __future__ import annotations

from strategies.core.search import SampleN


class BestOfN(SampleN):
    name = "best_of_n"
    uses_scorer = True

    def search(self, s):
        cands = self.sample(s)
        vals = s.score(cands)
        best = max(range(len(cands)), key=lambda i: (vals[i], -i))
        return self.chose(cands[best], len(cands))
