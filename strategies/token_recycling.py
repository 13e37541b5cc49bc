"""Token Recycling (Luo et al. 2024, "Turning Trash into Treasure"): model-free tree drafting.

Every verification forward computes the target's logits at every tree node, and all but the
accepted path's are normally thrown away. Token Recycling keeps them: an adjacency matrix
M [vocab, 8] (int32) holds, for each token, the top-8 tokens the target predicted after it the
last time it was seen. After every verification the row of each node's token is overwritten
with the top-8 of the logits after that node (the root row with the logits after the last
committed token), all rows in one vectorised `torch.topk`.

Drafting: a STATIC tree template (parent node + child rank per node, levels in BFS order) is
filled by BFS: a node of rank r under a parent holding token a gets token M[a, r]; the root is
the last committed token. Nodes whose parent's row was never written are pruned (with their
subtrees), so siblings are always distinct. Templates (`template`):

  paper80   the paper's 80-node tree: 6 levels of 8/21/25/15/8/3 nodes. The paper gives the
            level sizes; the concrete tree here is built level by level, keeping at each level
            the candidates (children of the previous level, ranks 0..7) with the highest
            expected acceptance prod(rank_accept[rank] along the path).
  cpuN      the N-node tree (N = 1..256, e.g. cpu16, cpu24, cpu32) with the highest expected
            accepted length under the same per-rank acceptance model (best-first, depth <=
            max_depth): small trees for CPUs, where verifying 80 nodes costs ~3.5 plain
            forwards (../shared/DESIGN.md) while 16-32 are nearly free on a 1.5B model.

Verification: ONE target forward over the tail + tree (tree mask, positions = depth).
Greedy: the longest path whose tokens equal the target's argmax (probs.verify_tree).
T > 0: drafts are deterministic, so each sibling's q is a point mass. The lossless rule is
recursive rejection sampling with point masses (`verify_point_mass_tree`): at a node with
distinct children x1..xk, accept x1 with probability p(x1); on rejection p <- norm(p without
x1) and try x2 with probability p_res(x2), ...; if all are rejected, sample from p_res. The
emitted token is distributed exactly as p (it is sampling p by elimination). This is NOT
what probs.verify_tree does with a one-hot q per parent (it stops after the first sibling,
since q has no mass left), hence the separate function.

Initialisation and persistence (`reset`, recorded in the rows' params):
  per_example  (default) the matrix starts empty at every generate() call, so rows do not
               depend on example order; with `prefill_update` (default true) the prompt's
               prefill logits fill it first (the same recycling idea applied to the prefill
               forward; an addition of this harness, switch it off for the paper's empty start).
  never        the paper's setting: the matrix persists across prompts (hot start), so
               outputs at T > 0 and all speed counters depend on example order.
Memory: vocab x 8 x 4 bytes (Qwen2.5: 151,936 x 32 B = 4.9 MB; SmolLM2: 1.6 MB), in params
as `adjacency_bytes` once the vocabulary is known (after `setup` or the first example).
"""

from __future__ import annotations

import heapq
import re

import torch

from harness.errors import ConfigError
from strategies.core import probs as P
from strategies.core.base import Strategy
from strategies.core.trees import ancestors, tree_forward

WIDTH = 8  # candidates kept per token (the paper's k)
PAPER_LEVELS = (8, 21, 25, 15, 8, 3)  # the paper's 80-node template: nodes per level
# P(the rank-r candidate of a row is the target's next token | its parent was accepted): the
# ranking model used to lay out templates. Measured here (greedy, paper80 template, per_example
# + prefill_update) on SmolLM2-135M fp32, 4 bench prompts x 96 tokens: rank 0..7 hit 0.458,
# 0.084, 0.048, 0.016, 0.016, 0.023, 0.010, 0.010 (no hit 0.335); smoothed to be non-increasing.
RANK_ACCEPT = (0.46, 0.085, 0.05, 0.02, 0.018, 0.016, 0.012, 0.01)


# ---------------------------------------------------------------------------- templates
def build_template(levels=None, nodes: int | None = None, max_depth: int = 6, rank_accept=RANK_ACCEPT):
    """A static tree template as (parents, ranks), in BFS order, siblings contiguous in rank order.

    Either `levels` (nodes per level; each level keeps the best candidates among the children
    of the previous level) or `nodes` (the best `nodes` nodes overall, best-first, depth <=
    max_depth). A node's value is prod(rank_accept[rank]) along its path; since rank_accept
    is non-increasing, a kept rank-r child always comes with its rank 0..r-1 siblings, so
    "children of a node = the first c entries of its token's row" holds.
    """
    a = list(rank_accept)
    chosen = []  # (depth, parent, rank, value), parent indexes `chosen`
    if levels is not None:
        prev = [(-1, 1.0)]  # (index in chosen, value)
        for depth, size in enumerate(levels):
            cands = [(-val * a[r], pi, r, par) for pi, (par, val) in enumerate(prev) for r in range(WIDTH)]
            cands.sort()
            if size > len(cands):
                raise ConfigError(f"token_recycling: level {depth} of {size} nodes exceeds {len(cands)} candidates")
            prev = []
            for neg, _, r, par in cands[:size]:
                chosen.append((depth, par, r, -neg))
                prev.append((len(chosen) - 1, -neg))
    else:
        heap, tie = [(-a[0], 0, -1, 0, 0)], 0  # (-value, tie, parent, rank, depth)
        while heap and len(chosen) < nodes:
            neg, _, par, r, depth = heapq.heappop(heap)
            chosen.append((depth, par, r, -neg))
            me = len(chosen) - 1
            if r + 1 < WIDTH:  # next sibling
                pv = chosen[par][3] if par >= 0 else 1.0
                tie += 1
                heapq.heappush(heap, (-pv * a[r + 1], tie, par, r + 1, depth))
            if depth + 1 < max_depth:  # first child
                tie += 1
                heapq.heappush(heap, (neg * a[0], tie, me, 0, depth + 1))
    # BFS order: by depth, then parent's BFS position, then rank
    order, pos = [], {-1: -1}
    for depth in range(max(c[0] for c in chosen) + 1):
        lvl = sorted((i for i, c in enumerate(chosen) if c[0] == depth), key=lambda i: (pos[chosen[i][1]], chosen[i][2]))
        for i in lvl:
            pos[i] = len(order)
            order.append(i)
    return [pos[chosen[i][1]] for i in order], [chosen[i][2] for i in order]


class Template:
    """A template's tensors, computed once: parents, ranks, depths, ancestor matrix, levels."""

    def __init__(self, parents: list[int], ranks: list[int]):
        n = len(parents)
        self.n = n
        self.parents = torch.tensor(parents, dtype=torch.long)
        self.ranks = torch.tensor(ranks, dtype=torch.long)
        self.anc, depth = ancestors(parents)  # anc[i, j]: j is i or an ancestor of i
        self.depths = torch.tensor(depth, dtype=torch.long)
        self.levels = [(d, (self.depths == d).nonzero().squeeze(1)) for d in range(int(self.depths.max()) + 1)] \
            if n else []
        self.level_sizes = [len(ix) for _, ix in self.levels]

    def fill(self, adj: torch.Tensor, root_token: int, max_depth: int):
        """BFS over the template: node tokens from the adjacency rows; prune empty rows.

        Returns (tokens [m] long, parents [m] long re-indexed, depths [m], ancestor matrix [m, m]).
        """
        tok = torch.full((self.n,), -1, dtype=torch.long)
        for d, ix in self.levels:
            if d >= max_depth:
                break
            if d == 0:
                tok[ix] = adj[root_token].long()[self.ranks[ix]]
            else:
                ptok = tok[self.parents[ix]]
                t = adj[ptok.clamp(min=0), self.ranks[ix]].long()
                tok[ix] = torch.where(ptok >= 0, t, -1)
        keep = (tok >= 0).nonzero().squeeze(1)  # closed under ancestors: a pruned node prunes its subtree
        if len(keep) == self.n:
            return tok, self.parents, self.depths, self.anc
        remap = torch.full((self.n,), -1, dtype=torch.long)
        remap[keep] = torch.arange(len(keep))
        par = self.parents[keep]
        par = torch.where(par >= 0, remap[par.clamp(min=0)], -1)
        return tok[keep], par, self.depths[keep], self.anc[keep][:, keep]


def parse_template(template: str, max_depth: int, rank_accept) -> Template:
    if template == "paper80":
        return Template(*build_template(levels=PAPER_LEVELS, rank_accept=rank_accept))
    m = re.fullmatch(r"cpu(\d+)", str(template))
    if m and 1 <= int(m.group(1)) <= 256:
        return Template(*build_template(nodes=int(m.group(1)), max_depth=max_depth, rank_accept=rank_accept))
    raise ConfigError(f"token_recycling: template must be paper80 or cpuN with 1 <= N <= 256, got {template!r}")


# ---------------------------------------------------------------------------- shared helpers
def remove_token(p: torch.Tensor, x: int) -> torch.Tensor:
    """norm(p without x): the residual after rejecting a point-mass draft x (p(x) < 1 here)."""
    p = p.clone()
    p[x] = 0.0
    return p / p.sum()


def verify_point_mass_tree(row_probs, tokens: list[int], parents: list[int], rng: torch.Generator):
    """Lossless verification of a DETERMINISTIC token tree at T > 0; returns (path, next token).

    row_probs(i): target probabilities after node i - 1 (0 = the root context).
    Siblings must be distinct. At each node, children are tried in order: x accepted with
    probability p_res(x) (= min(1, p_res(x) / q(x)) for a point mass q), else
    p_res <- norm(p_res without x); if none is accepted the next token is drawn from p_res.
    """
    children: dict[int, list[int]] = {}
    for i, par in enumerate(parents):
        children.setdefault(par, []).append(i)
    path, cur = [], -1
    while True:
        p = row_probs(cur + 1)
        accepted = None
        for c in children.get(cur, ()):
            px = float(p[tokens[c]])
            if px <= 0.0:
                continue
            if P.uniform(rng) < px:
                accepted = c
                break
            p = remove_token(p, tokens[c])
        if accepted is None:
            return path, P.sample(p, rng)
        path.append(accepted)
        cur = accepted


def last_occurrence(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique keys and, for each, the index of its LAST occurrence (later writes win, deterministically)."""
    uniq, inv = torch.unique(keys, return_inverse=True)
    last = torch.full((len(uniq),), -1, dtype=torch.long).scatter_reduce(0, inv, torch.arange(len(keys)), "amax")
    return uniq, last


# ---------------------------------------------------------------------------- the strategy
class TokenRecycling(Strategy):
    name = "token_recycling"
    needs = frozenset({"rollback", "tree_mask"})

    def __init__(self, template: str = "cpu16", reset: str = "per_example", prefill_update: bool = True,
                 max_depth: int = 6, rank_accept=RANK_ACCEPT, sampling=None):
        super().__init__(sampling)
        if reset not in ("per_example", "never"):
            raise ConfigError(f"token_recycling: reset must be per_example or never, got {reset!r}")
        ra = [float(x) for x in rank_accept]
        if len(ra) != WIDTH or any(not 0 < x <= 1 for x in ra) or any(b > a for a, b in zip(ra, ra[1:])):
            raise ConfigError(f"token_recycling: rank_accept must be {WIDTH} non-increasing values in (0, 1], got {ra}")
        if max_depth < 1:
            raise ConfigError(f"token_recycling: max_depth must be >= 1, got {max_depth}")
        self.template, self.reset, self.prefill_update, self.max_depth = str(template), reset, bool(prefill_update), max_depth
        self.rank_accept = ra
        self.tpl = parse_template(self.template, max_depth, ra)
        self._adj: torch.Tensor | None = None  # persists only with reset=never

    def params(self) -> dict:
        out = {**super().params(), "template_level_sizes": self.tpl.level_sizes, "template_nodes": self.tpl.n,
               "rank_accept": self.rank_accept}
        if self._adj is not None:
            out["adjacency_bytes"] = self._adj.numel() * self._adj.element_size()
        return out

    def setup(self, target, draft=None) -> None:
        self._adj = self._new_matrix(target.vocab_size)

    @staticmethod
    def _new_matrix(vocab: int) -> torch.Tensor:
        return torch.full((vocab, WIDTH), -1, dtype=torch.int32)  # -1 = never written

    def matrix(self, vocab: int) -> torch.Tensor:
        """The adjacency matrix for a new example: fresh (per_example) or the persistent one."""
        if self.reset == "per_example" or self._adj is None or self._adj.shape[0] != vocab:
            self._adj = self._new_matrix(vocab)
        return self._adj

    @staticmethod
    def update(adj: torch.Tensor, row_tokens: torch.Tensor, logits: torch.Tensor) -> None:
        """adj[row_tokens[i]] <- top-8 of logits[i], one topk for all rows; later rows win on repeats."""
        if len(row_tokens) == 0:
            return
        uniq, last = last_occurrence(row_tokens)
        k = min(WIDTH, logits.shape[-1])
        top = torch.topk(logits[last], k, dim=-1).indices.to(torch.int32)
        if k < WIDTH:
            top = torch.cat([top, torch.full((len(top), WIDTH - k), -1, dtype=torch.int32)], dim=1)
        adj[uniq.to(adj.device)] = top.to(adj.device)  # the matrix lives on the CPU (it is small)

    def decode(self, state):
        target, s, rng, seq = state.target, self.sampling, state.rng, state.seq
        adj = self.matrix(target.vocab_size)
        while not state.done:
            remaining = state.remaining
            seq = state.seq
            tail = seq[target.length:]
            t = len(tail)
            tok_t, par_t, depth_t, anc = self.tpl.fill(adj, seq[-1], remaining - 1)
            tokens, parents = tok_t.tolist(), par_t.tolist()
            m = len(tokens)
            logits = tree_forward(target, tail, tokens, anc=anc, depths=depth_t, plain_if_empty=True)  # [t + m, V]
            rows = logits[t - 1:]  # root + nodes
            if s.greedy:
                path, nxt = P.verify_tree(rows, tokens, parents, None, rng, True)
            else:
                cache: dict[int, torch.Tensor] = {}

                def row_probs(i):
                    if i not in cache:
                        cache[i] = s.probs(rows[i])
                    return cache[i]

                path, nxt = verify_point_mass_tree(row_probs, tokens, parents, rng)
            if m:
                state.verified_tree(parents[:m], len(path))
                target.keep(path, m)
            # recycle: prompt rows (first step), the other nodes, the root, the accepted path last
            # (on a repeated token the later write wins: the committed trajectory's rows)
            on_path = torch.zeros(m, dtype=torch.bool)
            pth = torch.tensor(path, dtype=torch.long)
            on_path[pth] = True
            off = (~on_path).nonzero().squeeze(1)
            first = 0 if (self.prefill_update and not state.tokens) else t - 1
            row_idx = torch.cat([torch.arange(first, t - 1), t + off, torch.tensor([t - 1]), t + pth])
            row_tok = torch.cat([torch.tensor(tail[first:t - 1], dtype=torch.long), tok_t[off],
                                 torch.tensor([tail[-1]]), tok_t[pth]])
            self.update(adj, row_tok, logits[row_idx])
            state.emit([tokens[i] for i in path] + [nxt])
