"""Weighted majority vote: self-consistency where each sample's vote is its scorer value.

Answer classes as in self_consistency (the task's equivalence); a class's weight is the sum of
its members' aggregated scorer values; the heaviest class wins (ties: the earliest sample) and
its best-scored member is returned.
"""

from __future__ import annotations

from strategies.self_consistency import SelfConsistency


class WeightedVote(SelfConsistency):
    name = "weighted_vote"
    uses_scorer = True

    def weights(self, question, cands):
        return self.score(question, cands)
