"""PRM beam search: step-level beam search guided by a process reward model.

The standard test-time search baseline (search-and-learn; Snell et al. 2024), parameters:
N = `n` (step candidates sampled per round), M = `beam_width` (expansions per kept beam), so
N/M beams are kept. A reasoning step ends at a blank line (strategies/core/search.StepSampler).

    active <- N/M copies of the empty solution;  done <- []
    for round = 1 .. max_rounds:
        parents <- every active beam repeated M times (beam-major: beam 0's M rows first)
        kids    <- ONE StepSampler.extend call (one batched generation, shared prompt KV)
        score each kid's new step with the scorer (`score_last`), aggregate its step scores
        finished kids (EOS, or the per-solution budget max_new_tokens reached) -> done
        unfinished kids: identical token sequences count once (the first copy stays); keep the
            top N/M by aggregate (ties: the earlier row of this round's batch) as the new active
        stop when len(done) >= N/M, or no unfinished kid is left
    answer <- the finished solution with the best aggregate (ties: the one finished first, i.e.
              earlier round, then earlier row); if none finished within max_rounds, the best
              active beam is completed by one sampled continuation (whole=True, unscored,
              counted in generated_tokens; `completed_after_budget` = 1 in the row)

A kid whose new step holds no text (only EOS after a blank line) is not scored: it keeps its
parent's step scores, so the aggregate of a finished solution is that of its last real step.
Round 1 thus samples N first steps of the empty prefix (N/M identical beams x M). Each round
costs one batched generation and one scorer call batch. Rows: generated_tokens (every sampled
token, all beams), prm_calls, candidates (= steps sampled, all rounds), rounds, finished.
"""

from __future__ import annotations

from harness.errors import ConfigError
from scorers.base import aggregate
from strategies.core.search import Candidate, SearchStrategy


def score_new_steps(strategy: SearchStrategy, question: str, kids: list[Candidate]) -> list[float]:
    """Score each kid's newest step (one scorer batch) and return every kid's aggregate. A kid
    whose newest step is blank (EOS alone) is not scored and keeps its parent's scores."""
    real = [k for k in kids if k.texts and k.texts[-1].strip()]
    if real:
        strategy.score(question, real, last_only=True)
    return [aggregate(k.scores, strategy.aggregate) for k in kids]


class PRMBeamSearch(SearchStrategy):
    name = "prm_beam_search"
    uses_scorer = True

    def __init__(self, n: int = 8, beam_width: int = 4, max_rounds: int = 40, sampling=None, scorer=None,
                 aggregate: str = "last", max_step_tokens: int = 256):
        super().__init__(sampling, scorer, aggregate, max_step_tokens)
        if n < 1 or beam_width < 1 or max_rounds < 1:
            raise ConfigError(f"{self.name}: need n >= 1, beam_width >= 1, max_rounds >= 1")
        if n % beam_width:
            raise ConfigError(f"{self.name}: n ({n}) must be a multiple of beam_width ({beam_width})")
        self.n, self.beam_width, self.max_rounds = n, beam_width, max_rounds

    @property
    def beams(self) -> int:
        return self.n // self.beam_width

    def params(self):
        return {**super().params(), "budget": f"N={self.n},M={self.beam_width}"}

    def search(self, s):
        keep = self.beams
        active: list[Candidate] = [Candidate()] * keep
        done: list[tuple[float, Candidate]] = []
        rounds = sampled = 0
        while active and rounds < self.max_rounds and len(done) < keep:
            rounds += 1
            parents = [b for b in active for _ in range(self.beam_width)]
            kids = s.extend(parents)
            sampled += len(kids)
            vals = score_new_steps(self, s.question, kids)
            ranked, seen = [], set()
            for i, (k, v) in enumerate(zip(kids, vals)):
                if k.finished:
                    done.append((v, k))
                    continue
                key = tuple(k.tokens)
                if key not in seen:
                    seen.add(key)
                    ranked.append((v, i, k))
            ranked.sort(key=lambda e: (-e[0], e[1]))
            active = [k for _, _, k in ranked[:keep]]
        completed = 0
        if done:
            chosen = max(enumerate(done), key=lambda e: (e[1][0], -e[0]))[1][1]
        else:  # nothing finished within max_rounds: complete the best active beam
            chosen = s.extend(active[:1], whole=True)[0]
            completed = 1
        return self.chose(chosen, sampled, rounds=rounds, finished=len(done), completed_after_budget=completed)
