"""Calibrated best-of-N: InfAlign's inference-time transform (Balashankar et al. 2024, "InfAlign:
Inference-aware language model alignment"). Only this part is implemented: the paper's RL
alignment of the policy to the transformed reward is out of scope here.

InfAlign's point: what users get is not a policy's sample but the output of an inference-time
procedure T (best-of-N, worst-of-N) applied to it, so rewards should be judged by T's win rate
against the base policy. Its reward transformation is calibrate-then-transform:

    calibrated reward   r_c(x, y) = P_{y' ~ base(x)}( r(x, y') <= r(x, y) )
                        estimated with `calibration` = C base-policy samples of the same prompt:
                        r_c(y) = #{j : r(y'_j) <= r(y)} / C      (empirical CDF; a tie counts as
                        "<=", so a candidate equal to every calibration sample gets 1.0)
    transform           Phi(r_c) = exp(t * r_c)   for best-of-N  (`mode: best`,  `transform: exp`)
                        Phi(r_c) = -exp(t * r_c)  for worst-of-N (`mode: worst`: the negated
                                                                  transform, so argmax = worst)
                        `transform: identity`: Phi(r_c) = +-r_c

Procedure per example: N = `n` candidates and C calibration samples are drawn together in ONE
batched generation (StepSampler.extend(whole=True), shared prompt KV; rows 0..N-1 are the
candidates, rows N..N+C-1 the calibration set: all are base-policy samples); all N + C are
scored by the scorer (reward r = aggregate of its step scores); the answer is the candidate
with the largest Phi(r_c). Ties: the better raw reward in the mode's direction (higher for best,
lower for worst), then the earliest candidate.

Because Phi is monotone and r_c is a step function of r, the pick equals plain best-of-N
(worst-of-N) on the raw reward; what calibration adds at inference time is a prompt-independent
scale and the win-rate report below. InfAlign's training half (RL fine-tuning of the policy
with Phi(r_c) as its reward) is not part of this strategy: there is no policy training here.

Win rate vs the base policy (the paper's metric), reported in trace.extra per example:
    infalign_wins   = #{calibration samples with raw reward < the chosen's} + 0.5 * #{ties}
    win_trials      = C
Both are summable: the run's inference-time win rate is sum(infalign_wins) / sum(win_trials)
over examples (the summary's per-example means give the same ratio: mean wins / mean trials).
0.5 means "no better than a base-policy sample"; best-of-N pushes it towards N / (N + 1).
Also reported: infalign_rc (r_c of the chosen), infalign_phi (its Phi), the budget counters
(generated_tokens counts the C calibration samples too: calibration is part of the cost).
Sweep N with the experiment config (conf/experiment/tts_infalign_bon.yaml).
"""

from __future__ import annotations

import math

from harness.errors import ConfigError
from strategies.core.search import Candidate, SearchStrategy

MODES = ("best", "worst")
TRANSFORMS = ("exp", "identity")


def calibrated(rewards: list[float], calibration: list[float]) -> list[float]:
    """Empirical CDF of each reward under the calibration rewards: #{c <= r} / len(calibration)."""
    if not calibration:
        raise ValueError("calibration needs at least one sample")
    return [sum(c <= r for c in calibration) / len(calibration) for r in rewards]


def win_count(reward: float, calibration: list[float]) -> float:
    """Calibration samples beaten by `reward`, ties counted half."""
    return sum(1.0 if c < reward else 0.5 if c == reward else 0.0 for c in calibration)


class InfAlignBoN(SearchStrategy):
    name = "infalign_bon"
    uses_scorer = True

    def __init__(self, n: int = 4, calibration: int = 8, mode: str = "best", transform: str = "exp",
                 t: float = 1.0, sampling=None, scorer=None, aggregate: str = "last", max_step_tokens: int = 256):
        super().__init__(sampling, scorer, aggregate, max_step_tokens)
        if n < 1 or calibration < 1:
            raise ConfigError(f"{self.name}: need n >= 1 and calibration >= 1")
        if mode not in MODES:
            raise ConfigError(f"{self.name}: mode must be one of {', '.join(MODES)}, got '{mode}'")
        if transform not in TRANSFORMS:
            raise ConfigError(f"{self.name}: transform must be one of {', '.join(TRANSFORMS)}, got '{transform}'")
        if not t > 0:
            raise ConfigError(f"{self.name}: t must be > 0, got {t}")
        self.n, self.calibration, self.mode, self.transform, self.t = n, calibration, mode, transform, t

    def params(self):
        return {**super().params(), "budget": f"N={self.n}"}

    def phi(self, rc: float) -> float:
        v = math.exp(self.t * rc) if self.transform == "exp" else rc
        return v if self.mode == "best" else -v

    def search(self, s):
        rows = s.extend([Candidate()] * (self.n + self.calibration), whole=True)
        rewards = s.score(rows)
        cand, calib = rewards[: self.n], rewards[self.n:]
        rc = calibrated(cand, calib)
        sign = 1.0 if self.mode == "best" else -1.0
        best = max(range(self.n), key=lambda i: (self.phi(rc[i]), sign * cand[i], -i))
        return self.chose(rows[best], self.n + self.calibration, infalign_wins=win_count(cand[best], calib), win_trials=self.calibration,
                           infalign_rc=rc[best], infalign_phi=self.phi(rc[best]))
