"""DVTS: diverse verifier tree search (Beeching et al., search-and-learn, 2024).

PRM beam search split into N/M independent subtrees so that one high-scoring prefix cannot take
over every beam. N = `n`, M = `beam_width`; each subtree is a beam of width 1:

    beam[t] <- the empty solution for every subtree t = 0 .. N/M - 1;  live <- all subtrees
    for round = 1 .. max_rounds while live:
        parents <- beam[t] repeated M times for every live t (subtree-major order)
        kids    <- ONE StepSampler.extend call for all live subtrees together (one batched
                   generation, shared prompt KV)
        score each kid's new step with the scorer (`score_last`) and aggregate its step scores
        beam[t] <- the best of subtree t's M kids by aggregate (ties: the earlier row)
        a subtree whose kept kid is finished (EOS, or max_new_tokens reached) leaves `live`
    final answer (`final: best`): among the finished subtrees, the best aggregate (ties: the
        lower subtree index).
    `final: weighted_vote`: the finished subtrees' solutions vote with their aggregates (answer
        classes by the task's equivalence, strategies/core/search.vote; ties: the class holding the
        lower subtree index) and the best-scored member of the winning class is returned; when
        no solution has an answer, falls back to `best`.
    If no subtree finished within max_rounds, the best live beam is completed by one sampled
    continuation (whole=True, unscored, counted; `completed_after_budget` = 1).

Kept kids only: unfinished siblings are discarded (no backtracking), as in the method. A kid
whose new step is blank (EOS alone) is not scored and keeps its parent's scores. Rows:
generated_tokens, prm_calls, candidates (= steps sampled), rounds, finished (subtrees).
"""

from __future__ import annotations

from harness.errors import ConfigError
from scorers.base import aggregate
from strategies.prm_beam_search import PRMBeamSearch, score_new_steps
from strategies.core.search import Candidate, vote

FINALS = ("best", "weighted_vote")


class DVTS(PRMBeamSearch):
    """PRM beam search's parameters and checks (n, beam_width, max_rounds; N/M kept = N/M
    subtrees, `self.beams`), with independent subtrees and a final answer rule."""

    name = "dvts"

    def __init__(self, n: int = 8, beam_width: int = 4, max_rounds: int = 40, final: str = "best", sampling=None,
                 scorer=None, aggregate: str = "last", max_step_tokens: int = 256):
        super().__init__(n, beam_width, max_rounds, sampling, scorer, aggregate, max_step_tokens)
        if final not in FINALS:
            raise ConfigError(f"{self.name}: final must be one of {', '.join(FINALS)}, got '{final}'")
        self.final = final

    def bind_task(self, task) -> None:
        if self.final == "weighted_vote" and not getattr(task, "votes", False):
            raise ConfigError(f"{self.name}: final=weighted_vote votes on final answers, which task "
                              f"{task.name} does not define")
        super().bind_task(task)

    def search(self, s):
        M = self.beam_width
        beam: list[Candidate] = [Candidate()] * self.beams
        live = list(range(self.beams))
        rounds = sampled = 0
        while live and rounds < self.max_rounds:
            rounds += 1
            kids = s.extend([beam[t] for t in live for _ in range(M)])
            sampled += len(kids)
            vals = score_new_steps(self, s.question, kids)
            for j, t in enumerate(live):
                best = max(range(j * M, (j + 1) * M), key=lambda i: (vals[i], -i))
                beam[t] = kids[best]
            live = [t for t in live if not beam[t].finished]
        done = [t for t in range(self.beams) if beam[t].finished]
        values = {t: aggregate(beam[t].scores, self.aggregate) for t in range(self.beams)}
        completed, voted = 0, 0
        if not done:  # nothing finished within max_rounds: complete the best live beam
            t = max(live, key=lambda t: (values[t], -t))
            chosen = s.extend([beam[t]], whole=True)[0]
            completed = 1
        else:
            t = max(done, key=lambda t: (values[t], -t))
            if self.final == "weighted_vote":
                sols = [beam[u] for u in done]
                classes = self.answer_classes(sols)
                k = vote(classes, [values[u] for u in done])
                if k is not None:
                    t = done[max(classes[k][1], key=lambda i: (values[done[i]], -i))]
                    voted = 1
            chosen = beam[t]
        return self.chose(chosen, sampled, rounds=rounds, finished=len(done), completed_after_budget=completed, voted=voted)
