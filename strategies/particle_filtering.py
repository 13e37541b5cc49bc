"""Particle filtering for inference-time scaling (Puri et al. 2025, "A Probabilistic Inference
Approach to Inference-Time Scaling of LLMs using Particle-Based Monte Carlo Methods").

Generation is treated as inference in a state-space model: the policy proposes the next step
(transition), the process reward model's step score is the likelihood (emission). Instead of
keeping the top beams (deterministic pruning), particles are RESAMPLED in proportion to their
weights, so lower-scored partial solutions survive with some probability.

    particles <- N = `n` empty solutions;  done <- []
    for round = 1 .. max_rounds while particles:
        kids <- every particle extended by ONE step: one StepSampler.extend call (one batched
                generation, shared prompt KV)
        score each kid's new step (`score_last`); s_i = aggregate of its step scores
        finished kids (EOS, or max_new_tokens reached) -> done (kept as they are, never resampled)
        the k unfinished kids get weights
            weighting = softmax:      w_i = softmax_i( logit(s_i) / temperature_pf )
                                          = (s_i / (1 - s_i))^(1/T) / sum_j (...)
            weighting = proportional: w_i = s_i / sum_j s_j
        (s = 0 gives weight exactly 0 under both; s is clipped to 1 - 1e-6 before the logit;
        if every weight is 0 the weights are uniform)
        particles <- k draws with replacement from the unfinished kids by w (multinomial
                     resampling with the example's rng: torch.multinomial(w, k, replacement=True,
                     generator=rng)), sorted by kid index
    answer <- the finished particle with the highest aggregate (ties: the earliest finished:
              earlier round, then earlier row); if none finished within max_rounds, the
              unfinished kid of the last round with the highest aggregate is completed by one
              sampled continuation (whole=True, unscored, counted; `completed_after_budget` = 1).

The particle count shrinks as particles finish (finished ones leave the population), so a run
costs at most N sampled steps per round. The paper resamples by softmax-normalised PRM scores;
here the softmax is taken over logit(s) / T (T = 1: weights proportional to the odds s / (1 - s),
so a step judged 0 can never survive); `proportional` is the plain alternative, recorded in the
row's params either way. A kid whose new step is blank (EOS alone)
is not scored and keeps its parent's scores. Rows: generated_tokens, prm_calls, candidates
(= steps sampled), rounds, resamples (resampling steps), resample_dropped (unfinished kids
that got no offspring, summed over rounds), resample_unique (distinct survivors, summed),
finished.
"""

from __future__ import annotations

import math

import torch

from harness.errors import ConfigError
from strategies.prm_beam_search import score_new_steps
from strategies.core.search import Candidate, SearchStrategy

WEIGHTINGS = ("softmax", "proportional")


def particle_weights(scores: list[float], weighting: str = "softmax", temperature: float = 1.0) -> torch.Tensor:
    """Normalised resampling weights (float64) from scorer values in [0, 1] (see the module doc)."""
    s = torch.tensor([min(max(float(v), 0.0), 1.0) for v in scores], dtype=torch.float64)
    if weighting == "proportional":
        w = s
    else:
        s = s.clamp(max=1 - 1e-6)
        logit = torch.log(s) - torch.log1p(-s)  # log 0 = -inf: weight exactly 0
        w = torch.softmax(logit / temperature, 0) if torch.isfinite(logit).any() else torch.zeros_like(s)
    total = float(w.sum())
    if not total > 0 or not math.isfinite(total):
        return torch.full_like(s, 1.0 / len(s))
    return w / total


class ParticleFiltering(SearchStrategy):
    name = "particle_filtering"
    uses_scorer = True

    def __init__(self, n: int = 8, weighting: str = "softmax", temperature_pf: float = 1.0, max_rounds: int = 40,
                 sampling=None, scorer=None, aggregate: str = "last", max_step_tokens: int = 256):
        super().__init__(sampling, scorer, aggregate, max_step_tokens)
        if n < 1 or max_rounds < 1:
            raise ConfigError(f"{self.name}: need n >= 1 and max_rounds >= 1")
        if weighting not in WEIGHTINGS:
            raise ConfigError(f"{self.name}: weighting must be one of {', '.join(WEIGHTINGS)}, got '{weighting}'")
        if not temperature_pf > 0:
            raise ConfigError(f"{self.name}: temperature_pf must be > 0, got {temperature_pf}")
        self.n, self.weighting, self.temperature_pf, self.max_rounds = n, weighting, temperature_pf, max_rounds

    def params(self):
        return {**super().params(), "budget": f"N={self.n}"}

    def resample(self, scores: list[float], rng: torch.Generator) -> list[int]:
        """Indices (sorted) of len(scores) multinomial draws with replacement by the weights."""
        w = particle_weights(scores, self.weighting, self.temperature_pf)
        return sorted(torch.multinomial(w.to(rng.device), len(scores), replacement=True, generator=rng).tolist())

    def search(self, s):
        particles: list[Candidate] = [Candidate()] * self.n
        done: list[tuple[float, Candidate]] = []
        rounds = sampled = resamples = dropped = unique = 0
        alive: list[tuple[float, Candidate]] = []
        while particles and rounds < self.max_rounds:
            rounds += 1
            kids = s.extend(particles)
            sampled += len(kids)
            vals = score_new_steps(self, s.question, kids)
            alive = []
            for k, v in zip(kids, vals):
                (done if k.finished else alive).append((v, k))
            particles = []
            if alive and rounds < self.max_rounds:
                idx = self.resample([v for v, _ in alive], s.rng)
                resamples += 1
                dropped += len(alive) - len(set(idx))
                unique += len(set(idx))
                particles = [alive[i][1] for i in idx]
        completed = 0
        if done:
            chosen = max(enumerate(done), key=lambda e: (e[1][0], -e[0]))[1][1]
        else:  # nothing finished within max_rounds: complete the best live particle
            best = max(enumerate(alive), key=lambda e: (e[1][0], -e[0]))[1][1]
            chosen = s.extend([best], whole=True)[0]
            completed = 1
        return self.chose(chosen, sampled, rounds=rounds,
                           resamples=resamples, resample_dropped=dropped, resample_unique=unique,
                           finished=len(done), completed_after_budget=completed)
