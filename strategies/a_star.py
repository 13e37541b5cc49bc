"""A*-decoding: best-first search over partial solutions scored by a process reward model.

A state is a prefix of reasoning steps (a step ends at a blank line). The frontier is a
priority queue ordered by f = g + h (lower is better), with costs from the scorer's step
probability s in (0, 1]:

    step cost     c = -log s                       (s = P(step correct | prefix), from the PRM)
    g(n)          sum of c over n's steps          (= -log of the path's product of step scores)
    h(n)          h_weight * c(latest step)        (the newest judgement as the estimate of the
                                                     cost still ahead; h_weight = 0 gives uniform-
                                                     cost search)

Each iteration pops the best state; a finished state (EOS, or the token budget per solution
reached) popped from the queue is the answer (the A* goal test at expansion time). Otherwise
it is expanded: `expansions` candidate next steps are sampled from the policy for it in ONE
batched forward per token (shared prompt KV), duplicates dropped, their latest step scored in
one scorer call, and pushed. The search stops at the token budget (`token_budget`, all sampled
tokens), the scorer budget (`prm_budget` calls) or `max_iterations`; then the best finished
state seen is returned, or, if none finished, the best frontier state is completed by one
sampled continuation (counted in generated_tokens). Ties in f go to the earlier-pushed state.
Rows: generated_tokens, prm_calls, iterations, pushed, popped.
"""

from __future__ import annotations

import heapq
import math

from harness.errors import ConfigError
from strategies.core.search import Candidate, SearchStrategy


class AStar(SearchStrategy):
    name = "a_star"
    uses_scorer = True

    def __init__(self, expansions: int = 4, h_weight: float = 1.0, token_budget: int = 2048,
                 prm_budget: int = 0, max_iterations: int = 64, sampling=None, scorer=None,
                 max_step_tokens: int = 256):
        super().__init__(sampling, scorer, "last", max_step_tokens)
        if expansions < 1 or h_weight < 0 or token_budget < 1 or prm_budget < 0 or max_iterations < 1:
            raise ConfigError(f"{self.name}: need expansions >= 1, h_weight >= 0, token_budget >= 1, "
                              f"prm_budget >= 0, max_iterations >= 1")
        self.expansions, self.h_weight = expansions, h_weight
        self.token_budget, self.prm_budget, self.max_iterations = token_budget, prm_budget, max_iterations
        self.last_order: list[float] = []  # f of each popped state in the last call (for tests)

    def params(self):
        return {**super().params(), "budget": f"T={self.token_budget},k={self.expansions}"}

    @staticmethod
    def cost(s: float) -> float:
        return -math.log(max(float(s), 1e-9))

    def search(self, s):
        heap: list = [(0.0, 0, 0.0, Candidate())]  # (f, push order, g, state)
        pushed, iterations, best_done = 1, 0, None
        self.last_order = []
        while heap:
            f, _, g, node = heapq.heappop(heap)
            self.last_order.append(f)
            if node.finished:
                best_done = (f, node)
                break
            over = (s.generated >= self.token_budget or iterations >= self.max_iterations
                    or (self.prm_budget and s.prm_calls >= self.prm_budget))
            if over:
                heapq.heappush(heap, (f, -1, g, node))  # back on the frontier for the fallback
                break
            iterations += 1
            kids = s.extend([node] * self.expansions)
            uniq, seen = [], set()
            for k in kids:
                key = tuple(k.steps[-1])
                if key and key not in seen:
                    seen.add(key)
                    uniq.append(k)
            if not uniq:
                continue
            s.score(uniq, last_only=True)
            for k in uniq:
                c = self.cost(k.scores[-1])
                heapq.heappush(heap, (g + c + self.h_weight * c, pushed, g + c, k))
                pushed += 1
                if k.finished and (best_done is None or g + c + self.h_weight * c < best_done[0]):
                    best_done = (g + c + self.h_weight * c, k)
        completed = 0
        if best_done is not None:
            chosen = best_done[1]
        else:  # budget spent before any solution finished: complete the best frontier state
            _, _, _, node = min(heap, key=lambda e: (e[0], e[1])) if heap else (0, 0, 0, Candidate())
            chosen = s.extend([node], whole=True)[0] \
                if not node.finished else node
            completed = 1
        return self.chose(chosen, pushed, iterations=iterations, popped=len(self.last_order), completed_after_budget=completed)
