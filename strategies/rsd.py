"""Recursive Speculative Decoding (RSD; Jeon et al. 2024), Gumbel-Top-k variant.

Each step: (1) grow a draft tree level by level: every node at depth d gets branching[d]
children drawn WITHOUT replacement from the draft q (Gumbel-Top-k; top-k when greedy), one
draft forward per level; (2) verify the whole tree in ONE target forward (tree mask, positions
= depth) by recursive rejection sampling over siblings (strategies/probs.verify_tree): sibling
x_i accepted with min(1, p_res/q_i), residual p_res = norm(max(0, p_res - q_i)) and q
renormalised without x_i on rejection. Lossless. `max_nodes` caps the tree: comparisons at a
fixed target compute budget (the target forward's cost grows with tree size).
The paper's Stochastic-Beam-Search variant is not implemented here.
"""

from __future__ import annotations

from harness.errors import ConfigError
from strategies.base import Strategy
from strategies.tree_draft import TreeDrafter


class RSD(Strategy):
    name = "rsd"
    needs = frozenset({"rollback", "tree_mask"})

    def __init__(self, draft, branching=(2, 2, 1), max_nodes: int = 0, sampling=None):
        super().__init__(sampling)
        branching = [int(b) for b in branching]
        if not branching or min(branching) < 1 or max_nodes < 0:
            raise ConfigError(f"rsd: branching must be a non-empty list of ints >= 1 and max_nodes >= 0, got "
                              f"{branching}, {max_nodes}")
        self.draft, self.branching, self.max_nodes = draft, branching, max_nodes

    def params(self) -> dict:
        return {**super().params(), "branching": self.branching}

    def generate(self, target, prompt_ids, max_new_tokens, rng, draft=None):
        trace, snap = self.begin(target, draft)
        tree = TreeDrafter(draft, self.sampling)
        cap = self.max_nodes or float("inf")
        seq = list(prompt_ids)
        while not trace.done(target.eos_ids, max_new_tokens):
            frontier_logits, frontier = tree.begin(seq)[None], [-1]  # [1, V]: the root
            qmap = {}
            for depth, width in enumerate(self.branching):
                level = []
                for parent, logits in zip(frontier, frontier_logits):
                    q, kids = tree.children(logits, width, rng)
                    qmap[parent] = q
                    for tok in kids:
                        if len(tree.tokens) < cap:
                            level.append(tree.add(tok, parent))
                if not level or depth == len(self.branching) - 1:
                    break
                frontier, frontier_logits = level, tree.expand(level)  # one draft forward per level
            new = self.verify_tree_step(target, seq, tree.tokens, tree.parents, qmap, rng, trace)
            tree.finish()
            seq += new
            trace.emit(new)
        return self.end(trace, snap, target, max_new_tokens, draft)
