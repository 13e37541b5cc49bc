"""First Finish Search (FFS; Agarwal et al. 2025, "First Finish Search: Efficient Test-Time
Scaling in Large Language Models"), synchronous variant.

Observation behind it: for reasoning models, shorter traces are more often correct, so among n
parallel samples the first to finish is a good pick, and stopping the others then saves tokens.

    n = `n` samples of the prompt grow in ONE lockstep batch (StepSampler.extend(whole=True,
    stop_first=True): one batched forward per token, shared prompt KV); the batch stops at the
    first step at which any row emits EOS, and that row is the answer. Ties (several rows emit
    EOS at the same step): the lowest row index. If no row emits EOS within the per-solution
    budget (max_new_tokens), row 0 (cut at the budget) is returned (`ffs_none_finished` = 1).

No scorer, no answer extraction. Cost: all n rows advance together, so when the first finisher
has L tokens (its EOS included) exactly n x L tokens were sampled; the row's
`generated_tokens` counts every one of them (StepSampler.generated; the rows that did not
finish are cut at the same step), i.e. tokens = n x the shortest, as in the paper's accounting.
`ffs_length` = L, `ffs_ties` = how many rows emitted EOS at that step.

Paper claim (docs/strategies.md): DeepSeek-R1 82.23% on AIME24/25 (+15% over a single
sample), up to 45% fewer tokens than majority voting. The length-correctness link is a
property of long-reasoning models; with the small instruct models available here it may not
hold, which is what a reproduction measures. The asynchronous variant (independent servers)
is not implemented: with one batch it is the same choice.
"""

from __future__ import annotations

from harness.errors import ConfigError
from strategies.core.search import Candidate, SearchStrategy


class FirstFinishSearch(SearchStrategy):
    name = "ffs"

    def __init__(self, n: int = 4, sampling=None, max_step_tokens: int = 256):
        super().__init__(sampling, None, "last", max_step_tokens)
        if n < 1:
            raise ConfigError(f"{self.name}: n must be >= 1, got {n}")
        self.n = n

    def params(self):
        return {**super().params(), "budget": f"n={self.n}"}

    def search(self, s):
        rows = s.extend([Candidate()] * self.n, whole=True, stop_first=True)
        first = [i for i, c in enumerate(rows) if c.eos]
        chosen = rows[first[0]] if first else rows[0]
        return self.chose(chosen, len(rows),
                           ffs_length=len(chosen.tokens), ffs_ties=len(first), ffs_none_finished=int(not first))
