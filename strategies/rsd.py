"""Recursive Speculative Decoding (RSD; Jeon et al. 2024): a draft tree sampled WITHOUT
replacement, verified by recursive rejection sampling. This file is the paper's RSD-C (constant
branching); RSD-S, the stochastic-beam-search tree, is strategies/rsd_sbs.py.

RSD-C: grow the tree level by level: every node at depth d gets
branching[d] children drawn without replacement from the draft q (Gumbel-Top-k; top-k when
greedy), one draft forward per level.

Verification (both RSD variants): the whole tree in ONE target forward (tree mask, positions =
depth), then recursive rejection sampling over siblings (strategies/core/probs.verify_tree): sibling
x_i accepted with min(1, p_res(x_i) / q_i(x_i)); on rejection p_res = norm(max(0, p_res - q_i))
and q loses x_i (renormalised) for the next sibling; if all fail, sample p_res. Lossless.
`max_nodes` caps the tree: comparisons at a fixed target compute budget.
"""

from __future__ import annotations

from harness.errors import ConfigError
from strategies.core.base import TreeSpeculation


class RSD(TreeSpeculation):
    name = "rsd"

    def __init__(self, draft, branching=(2, 2, 1), max_nodes: int = 0, sampling=None, draft_vocab: int = 0):
        super().__init__(sampling)
        self.set_draft_vocab(draft_vocab)
        branching = [int(b) for b in branching]
        if not branching or min(branching) < 1 or max_nodes < 0:
            raise ConfigError(f"rsd: branching must be a non-empty list of ints >= 1 and max_nodes >= 0, got "
                              f"{branching}, {max_nodes}")
        self.draft, self.branching, self.max_nodes = draft, branching, max_nodes

    def params(self) -> dict:
        return {**super().params(), "branching": self.branching}

    def draft_tree(self, state, tree):
        """(tokens, parents, q_by_parent) of this step's draft tree: branching[d] children per node
        at depth d, drawn without replacement from q (Gumbel-Top-k), one draft forward per level."""
        cap = self.max_nodes or float("inf")
        frontier_logits, frontier = tree.begin(state.seq)[None], [-1]  # [1, V]: the root
        qmap = {}
        for depth, width in enumerate(self.branching):
            level = []
            for parent, logits in zip(frontier, frontier_logits):
                q, kids = tree.children(logits, width, state.rng)
                qmap[parent] = q
                for tok in kids:
                    if len(tree.tokens) < cap:
                        level.append(tree.add(tok, parent))
            if not level or depth == len(self.branching) - 1:
                break
            frontier, frontier_logits = level, tree.expand(level)  # one draft forward per level
        return tree.tokens, tree.parents, qmap
