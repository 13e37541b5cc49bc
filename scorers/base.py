"""Step scorers (process reward models and verifiers) for test-time search.

    scorer.bind(policy)                                   # once, after the models load
    scores = scorer.score(question, [steps_a, steps_b])   # per-step scores in [0, 1], one list per candidate
    value  = aggregate(scores[0], "min")                  # last | min | prod | mean

A candidate solution is a list of reasoning steps (strings; a step ends at a blank line).
`score` is batched: every candidate's steps are scored, and `calls` counts the scorer's model
forwards (the "PRM calls" in every row). Scorers are built by Hydra from a nested `_target_`
node (`strategy.scorer`), and `describe()` names the scorer in every row.

Adapters for real PRMs (Qwen2.5-Math-PRM, Math-Shepherd, Skywork-PRM) live in
`scorers/prm.py`; the default that runs offline here is `LMJudge`: an available packed causal
LM asked, with a fixed prompt, whether the LAST step of a partial solution is correct; the
step's score is P("Yes") / (P("Yes") + P("No")) at the answer position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from harness.errors import ConfigError

AGGREGATES = ("last", "min", "prod", "mean")


def aggregate(step_scores: Sequence[float], how: str) -> float:
    """One value per candidate from its per-step scores (an empty list scores 0)."""
    if how not in AGGREGATES:
        raise ConfigError(f"unknown step-score aggregate '{how}' (choose from {', '.join(AGGREGATES)})")
    if not step_scores:
        return 0.0
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "mean":
        return float(sum(step_scores) / len(step_scores))
    return float(math.prod(step_scores))


class Scorer:
    """Scores each step of each candidate solution; counts its forwards in `calls`."""

    name = "scorer"

    def __init__(self):
        self.calls = 0  # model forwards spent scoring (cumulative; strategies read differences)
        self.tokens = 0  # tokens the scorer processed (cumulative)

    def bind(self, policy) -> None:
        """Load weights / attach to the already-loaded policy engine. Called once by setup()."""

    def score(self, question: str, candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        raise NotImplementedError

    def score_last(self, question: str, candidates: Sequence[Sequence[str]]) -> list[float]:
        """The score of each candidate's last step only (what step-wise search needs). Scorers
        that can score one step without the others override this to save work."""
        return [s[-1] if s else 0.0 for s in self.score(question, candidates)]

    def artifacts(self) -> dict[str, str]:
        """Files this scorer loads (a trained head): hashed into the run identity like a strategy's."""
        return {}

    def describe(self) -> dict:
        return {"name": self.name}
