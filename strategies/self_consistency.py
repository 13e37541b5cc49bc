"""Self-consistency (Wang et al. 2023): majority vote over the final answers of N samples.

N solutions are sampled in one batched generation sharing the prompt's KV; answers are
extracted and grouped by the task's own equivalence (math-verify for MATH/AIME, numbers for
GSM8K). The largest class wins; a tie goes to the class whose first member is the earliest
sample (documented in strategies/core/search.vote). The output is that class's first sample.
Samples without an answer do not vote; if none has one, sample 0 is returned. No scorer.
"""

from __future__ import annotations

from strategies.core.search import SampleN, vote


class SelfConsistency(SampleN):
    name = "self_consistency"
    needs_answers = True

    def weights(self, question, cands) -> list[float] | None:
        return None  # one vote each

    def search(self, s):
        cands = self.sample(s)
        classes = self.answer_classes(cands)
        w = self.weights(s.question, cands)
        k = vote(classes, w)
        if k is None:
            chosen = cands[0]
        elif w is None:
            chosen = cands[classes[k][1][0]]
        else:  # the best-scored member of the winning class
            chosen = cands[max(classes[k][1], key=lambda i: (w[i], -i))]
        return self.chose(chosen, len(cands),
                           answer_classes=len(classes), winning_votes=len(classes[k][1]) if k is not None else 0)
