"""A*-decoding (Chatziveroglou 2025): best-first search over partial solutions guided by a
process reward model.

A state is a prefix of reasoning steps (a step ends at a blank line). The frontier is a
priority queue ordered by f = g + h (lower is better). Two cost models (`mode`):

`mode: paper` (default) - the paper's definitions, as far as its text could be read here:
    r(s)          the scorer's value of the partial solution s, in [0, 1] (the latest step's
                  score: P(step correct | prefix) for a PRM, P(solution will be right) for a
                  value head)
    h(s)          1 - r(s)                          (the paper's heuristic)
    transition    an expansion of s SAMPLES k candidate continuations C(s) from the policy
                  (one reasoning step each) and a deterministic selection step keeps
                  s* = argmin_{s' in C(s)} f(s'); only s* enters the frontier (the paper's
                  two-step transition model)
    g(s')         from the doubts d_i = 1 - r(prefix i) of the prefixes on the path (OUR
                  READING; the paper's exact g could not be read here): `g: mean` (default)
                  the mean doubt along the path, a path-quality cost that does not grow with
                  depth; `g: sum` the accumulated doubt (the literal cost-so-far); `g: none`
                  (greedy best-first on h). Why not `sum` by default: h = 1 - r does not
                  shrink towards a goal, so a summed g makes every deeper state costlier than
                  any shallow one and the search spends its budget re-sampling first steps
                  (a test shows it); the paper reports the opposite (fewer tokens).
    parent        goes back on the frontier with f = f(s*) (OUR READING, after partial-
                  expansion A*, Yoshizumi et al. 2000: a sampled expansion reveals only some
                  successors, and the next one is estimated to cost what the best sampled one
                  did). The parent is expanded again (new candidates drawn) only when the
                  search backs off to that f. Ties in f pop the most recently pushed state
                  (deeper first; s* before its parent). A state whose k candidates are all
                  duplicates is closed.
    root          g = 0, h = 1 (nothing judged yet), f = 1
  A candidate whose token sequence is already on the frontier (or was ever pushed) is not
  selected again.

`mode: nll` - this project's earlier variant, kept as a named option: step cost
  c = -log r(step), g = sum of c over the path, h = h_weight x c(latest step), every sampled
  child pushed (h_weight = 0 gives uniform-cost search).

Both: each iteration pops the lowest f; a finished state (EOS, or the per-solution token
budget reached) popped is the answer (the A* goal test at expansion time). Otherwise it is
expanded: `expansions` candidate next steps sampled for it in ONE batched forward per token
(shared prompt KV), duplicates dropped, their latest step scored in one scorer call. The
search stops at the token budget (`token_budget`, all sampled tokens), the scorer budget
(`prm_budget` calls) or `max_iterations`; then the best finished state seen is returned, or,
if none finished, the lowest-f frontier state is completed by one sampled continuation
(counted in generated_tokens). Ties in f: paper mode pops the latest-pushed state, nll mode
the earliest.
Rows: generated_tokens, prm_calls, iterations, candidates (distinct states pushed, the root
included), popped, reexpanded (paper mode: expansions of a state that had been expanded before).
"""

from __future__ import annotations

import heapq
import math

from harness.errors import ConfigError
from strategies.core.search import Candidate, SearchStrategy

MODES = ("paper", "nll")
G_RULES = ("mean", "sum", "none")  # paper mode's g from the path's doubts 1 - r


class AStar(SearchStrategy):
    name = "a_star"
    uses_scorer = True

    def __init__(self, expansions: int = 4, mode: str = "paper", g: str = "mean", h_weight: float = 1.0,
                 token_budget: int = 2048, prm_budget: int = 0, max_iterations: int = 64, sampling=None, scorer=None,
                 max_step_tokens: int = 256):
        super().__init__(sampling, scorer, "last", max_step_tokens)
        if mode not in MODES:
            raise ConfigError(f"{self.name}: mode must be one of {', '.join(MODES)}, got '{mode}'")
        if g not in G_RULES:
            raise ConfigError(f"{self.name}: g must be one of {', '.join(G_RULES)}, got '{g}'")
        self.g = g
        if expansions < 1 or h_weight < 0 or token_budget < 1 or prm_budget < 0 or max_iterations < 1:
            raise ConfigError(f"{self.name}: need expansions >= 1, h_weight >= 0, token_budget >= 1, "
                              f"prm_budget >= 0, max_iterations >= 1")
        self.expansions, self.mode, self.h_weight = expansions, mode, h_weight
        self.token_budget, self.prm_budget, self.max_iterations = token_budget, prm_budget, max_iterations
        self.last_order: list[float] = []  # f of each popped state in the last call (for tests)
        self.last_popped: list[Candidate] = []  # the popped states themselves, in order (for tests)

    def params(self):
        out = {**super().params(), "budget": f"T={self.token_budget},k={self.expansions}"}
        if self.mode == "paper":
            out.pop("h_weight", None)  # not used by the paper's f
        else:
            out.pop("g", None)  # nll mode has its own g
        return out

    def path_cost(self, doubts: list[float]) -> float:
        """g of a state from the doubts 1 - r of every prefix on its path (itself included)."""
        if self.g == "sum":
            return float(sum(doubts))
        if self.g == "mean":
            return float(sum(doubts) / len(doubts))
        return 0.0

    @staticmethod
    def cost(s: float) -> float:
        return -math.log(max(float(s), 1e-9))

    def _over(self, s, iterations: int) -> bool:
        return bool(s.generated >= self.token_budget or iterations >= self.max_iterations
                    or (self.prm_budget and s.prm_calls >= self.prm_budget))

    @staticmethod
    def _fresh(kids: list[Candidate], seen: set) -> list[Candidate]:
        """Sampled children with a non-empty new step whose token sequence was never pushed."""
        out = []
        for k in kids:
            key = tuple(k.tokens)
            if k.steps and k.steps[-1] and key not in seen:
                seen.add(key)
                out.append(k)
        return out

    def search(self, s):
        return self._search_paper(s) if self.mode == "paper" else self._search_nll(s)

    def _finish(self, s, heap, best_done, states, iterations, **extra):
        completed = 0
        if best_done is not None:
            chosen = best_done[1]
        else:  # budget spent before any solution finished: complete the best frontier state
            _, _, _, node = min(heap, key=lambda e: (e[0], e[1])) if heap else (0, 0, 0, Candidate())
            chosen = s.extend([node], whole=True)[0] if not node.finished else node
            completed = 1
        return self.chose(chosen, states, iterations=iterations, popped=len(self.last_order),
                          completed_after_budget=completed, **extra)

    # ------------------------------------------------------------------ the paper's f
    def _search_paper(self, s):
        root = Candidate()
        heap: list = [(1.0, 0, 0.0, root)]  # (f, -push order, g, state); root: g 0, h 1
        seen = {()}
        expanded: set = set()
        pushed, states, iterations, reexpanded, best_done = 1, 1, 0, 0, None
        self.last_order, self.last_popped = [], []
        while heap:
            f, order, g, node = heapq.heappop(heap)
            self.last_order.append(f)
            self.last_popped.append(node)
            if node.finished:
                best_done = (f, node)
                break
            if self._over(s, iterations):
                heapq.heappush(heap, (f, order, g, node))  # back on the frontier for the fallback
                break
            iterations += 1
            key = tuple(node.tokens)
            reexpanded += key in expanded
            expanded.add(key)
            kids = self._fresh(s.extend([node] * self.expansions), seen)
            if not kids:  # nothing new was sampled: the state is closed
                continue
            s.score(kids, last_only=True)
            scored = []
            for i, k in enumerate(kids):
                doubts = [1.0 - min(max(float(x), 0.0), 1.0) for x in k.scores]  # 1 - r of each prefix on the path
                gk = self.path_cost(doubts)
                scored.append((gk + doubts[-1], i, gk, k))  # f = g + h, h = 1 - r(s')
            fk, _, gk, best = min(scored, key=lambda e: (e[0], e[1]))  # the deterministic selection step
            # the parent goes back with the f of the successor it just gave (partial-expansion A*'s
            # re-insertion): it is expanded again only when the search backs off to that value.
            # Ties pop the most recently pushed state (deeper first): s* before its parent.
            heapq.heappush(heap, (fk, -pushed, g, node))
            heapq.heappush(heap, (fk, -(pushed + 1), gk, best))
            pushed, states = pushed + 2, states + 1
            if best.finished and (best_done is None or fk < best_done[0]):
                best_done = (fk, best)
        return self._finish(s, heap, best_done, states, iterations, reexpanded=reexpanded)

    # ------------------------------------------------------------------ the earlier variant
    def _search_nll(self, s):
        heap: list = [(0.0, 0, 0.0, Candidate())]  # (f, push order, g, state)
        pushed, iterations, best_done = 1, 0, None
        self.last_order, self.last_popped = [], []
        while heap:
            f, _, g, node = heapq.heappop(heap)
            self.last_order.append(f)
            self.last_popped.append(node)
            if node.finished:
                best_done = (f, node)
                break
            if self._over(s, iterations):
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
        return self._finish(s, heap, best_done, pushed, iterations)
