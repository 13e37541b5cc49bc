"""Token trees: the one ancestor builder, the one tree forward, and growing a draft tree.

`ancestors(parents)`: the ancestor matrix and depths of a tree given as parent indices.
`tree_forward(engine, tail, tokens, parents)`: ONE forward over an uncached chain + a tree.
`TreeDrafter`: growing a draft token tree with a draft model (the drafting side of tree methods).

The draft engine's cache holds the committed sequence, then tree nodes in the order they were
fed. Feeding a batch of nodes uses one forward with a mask over cached AND new positions: each
node sees the committed prefix, its ancestors' slots and itself, at position = prefix + depth.
`finish()` drops every tree slot, so the next step starts from the committed sequence.
"""

from __future__ import annotations

import torch


def ancestors(parents) -> tuple[torch.Tensor, list[int]]:
    """(anc [m, m] bool, depth per node): anc[i, j] = node j is node i or one of its ancestors.
    parents[i] < i (-1 = the root's children)."""
    parents = [int(x) for x in parents]
    if any(not -1 <= par < i for i, par in enumerate(parents)):
        raise ValueError("tree nodes must come after their parents (parents[i] < i)")
    m = len(parents)
    anc = torch.zeros(m, m, dtype=torch.bool)
    depth: list[int] = []
    for i, par in enumerate(parents):
        if par >= 0:
            anc[i] = anc[par]
        anc[i, i] = True
        depth.append(0 if par < 0 else depth[par] + 1)
    return anc, depth


def chain_and_tree(t: int, anc: torch.Tensor) -> torch.Tensor:
    """The attention pattern of a chain of t tokens then a tree: [t + m, t + m] bool, causal over
    the chain, every node sees the chain, its ancestors and itself."""
    m = anc.shape[0]
    allowed = torch.zeros(t + m, t + m, dtype=torch.bool)
    allowed[:t, :t] = torch.tril(torch.ones(t, t, dtype=torch.bool))
    allowed[t:, :t] = True
    allowed[t:, t:] = anc
    return allowed


def tree_forward(engine, tail: list[int], tokens: list[int], parents=None, *, anc: torch.Tensor | None = None,
                 depths=None, plain_if_empty: bool = False) -> torch.Tensor:
    """ONE forward over the uncached tail (a chain) + a token tree; logits [t + m, V].

    Row i < t: after tail[i]; row t - 1 is the tree's root context; row t + j: after node j, at
    position = depth. Give `parents` (the mask is built here) or a precomputed `anc` with
    `depths`. plain_if_empty: without tree nodes, feed the tail as an ordinary chain.
    """
    if anc is None:
        anc, depths = ancestors(parents)
    t, m = len(tail), len(tokens)
    if m == 0 and plain_if_empty:
        return engine.forward(tail)
    pos = torch.cat([torch.arange(t), t + torch.as_tensor(depths, dtype=torch.long).reshape(-1)])
    return engine.forward(list(tail) + list(tokens), tree=chain_and_tree(t, anc), depths=pos)


class TreeDrafter:
    def __init__(self, draft, sampling):
        self.draft, self.sampling = draft, sampling
        self.tokens: list[int] = []  # node tokens
        self.parents: list[int] = []  # parent node, -1 = root (after the committed sequence)
        self.depth: list[int] = []
        self.slot: dict[int, int] = {}  # node -> its cache slot (offset from base) once fed

    def begin(self, seq: list[int]) -> torch.Tensor:
        """Catch the draft up on the committed sequence; return the root's draft logits [V]."""
        self.tokens, self.parents, self.depth, self.slot = [], [], [], {}
        logits = self.draft.forward(seq[self.draft.length:], last_only=True)
        self.base = self.draft.length
        return logits

    def add(self, token: int, parent: int) -> int:
        self.tokens.append(int(token))
        self.parents.append(parent)
        self.depth.append(0 if parent < 0 else self.depth[parent] + 1)
        return len(self.tokens) - 1

    def expand_grown(self, nodes: list[int], tokens: list[int], parents: list[int]) -> torch.Tensor:
        """For tree builders that keep their own (tokens, parents): add the nodes not mirrored
        here yet, then `expand(nodes)`."""
        while len(self.tokens) < len(tokens):
            i = len(self.tokens)
            self.add(tokens[i], parents[i])
        return self.expand(nodes)

    def expand(self, nodes: list[int]) -> torch.Tensor:
        """Feed these nodes (their ancestors already fed) in one draft forward; logits [len, V]."""
        fed, n = len(self.slot), len(nodes)
        allowed = torch.zeros(n, self.base + fed + n, dtype=torch.bool)
        allowed[:, : self.base] = True
        for row, node in enumerate(nodes):
            allowed[row, self.base + fed + row] = True
            a = self.parents[node]
            while a >= 0:
                allowed[row, self.base + self.slot[a]] = True
                a = self.parents[a]
        for row, node in enumerate(nodes):
            self.slot[node] = fed + row
        depths = torch.tensor([self.base - self.draft.length + self.depth[v] for v in nodes])  # = depth
        return self.draft.forward([self.tokens[v] for v in nodes], tree=allowed, depths=depths)

    def children(self, logits: torch.Tensor, k: int, rng: torch.Generator) -> tuple[torch.Tensor, list[int]]:
        """Draft distribution q and k child tokens: top-k when greedy, else drawn without replacement."""
        from strategies.core import probs as P

        q = self.sampling.probs(logits)
        if self.sampling.greedy:
            return q, torch.topk(logits, min(k, logits.shape[-1])).indices.tolist()
        return q, P.gumbel_top_k(q, k, rng)

    def finish(self) -> None:
        self.draft.truncate_to(self.base)
