"""Growing a draft token tree with a draft model: the shared drafting side of tree methods.

The draft engine's cache holds the committed sequence, then tree nodes in the order they were
fed. Feeding a batch of nodes uses one forward with a mask over cached AND new positions: each
node sees the committed prefix, its ancestors' slots and itself, at position = prefix + depth.
`finish()` drops every tree slot, so the next step starts from the committed sequence.
"""

from __future__ import annotations

import torch


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
        from strategies import probs as P

        q = self.sampling.probs(logits)
        if self.sampling.greedy:
            return q, torch.topk(logits, min(k, logits.shape[-1])).indices.tolist()
        return q, P.gumbel_top_k(q, k, rng)

    def finish(self) -> None:
        self.draft.truncate_to(self.base)
