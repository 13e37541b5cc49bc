"""DySpec: faster speculative decoding with a dynamic token tree (Xiong et al. 2024).

Each step grows the draft tree greedily under a node budget: a max-heap of candidate nodes
keyed by the product of draft probabilities along their path; pop the best, add it to the
tree, run the draft on it (its children's q) and push its first child and its next sibling;
stop when the budget is spent. Verification: one target forward over the tree, recursive
rejection sampling / longest greedy path (strategies/probs.verify_tree). Lossless.

Siblings enter the tree in the order they were drawn (top-k order when greedy, Gumbel-Top-k
draw order at T>0, pushed lazily one after another), so the tree always holds a prefix of each
node's draw sequence, which is what the sibling-wise rejection rule assumes. `expand_batch`
nodes are popped and drafted per draft forward (1 = the paper's exact greedy order).
"""

from __future__ import annotations

import heapq
import itertools

from harness.errors import ConfigError
from strategies.base import Strategy
from strategies.tree_draft import TreeDrafter


class DySpec(Strategy):
    name = "dyspec"
    needs = frozenset({"rollback", "tree_mask"})

    def __init__(self, draft, node_budget: int = 16, max_children: int = 8, expand_batch: int = 1,
                 sampling=None):
        super().__init__(sampling)
        if node_budget < 1 or max_children < 1 or expand_batch < 1:
            raise ConfigError("dyspec: node_budget, max_children and expand_batch must be >= 1")
        self.draft, self.node_budget, self.max_children, self.expand_batch = draft, node_budget, max_children, expand_batch

    def generate(self, target, prompt_ids, max_new_tokens, rng, draft=None):
        trace, snap = self.begin(target, draft)
        tree = TreeDrafter(draft, self.sampling)
        tie = itertools.count()
        seq = list(prompt_ids)
        while not trace.done(target.eos_ids, max_new_tokens):
            qmap, draws, score = {}, {}, {}  # parent -> q, parent -> drawn children, node -> path prob
            heap: list = []

            def open_node(node, logits, node_score):
                q, kids = tree.children(logits, self.max_children, rng)
                qmap[node], draws[node] = q, kids
                if kids:  # 1. push the first drawn child; later siblings follow lazily
                    heapq.heappush(heap, (-node_score * float(q[kids[0]]), next(tie), node, 0))

            open_node(-1, tree.begin(seq), 1.0)
            while heap and len(tree.tokens) < self.node_budget:
                batch = []
                while heap and len(batch) < self.expand_batch and len(tree.tokens) < self.node_budget:
                    neg, _, parent, rank = heapq.heappop(heap)  # 2. the best path probability
                    node = tree.add(draws[parent][rank], parent)
                    score[node] = -neg
                    if rank + 1 < len(draws[parent]):  # 3. its next sibling becomes a candidate
                        sib = draws[parent][rank + 1]
                        base = score[parent] if parent >= 0 else 1.0
                        heapq.heappush(heap, (-base * float(qmap[parent][sib]), next(tie), parent, rank + 1))
                    batch.append(node)
                if len(tree.tokens) >= self.node_budget:
                    break  # budget spent: the last nodes need no children
                for node, logits in zip(batch, tree.expand(batch)):  # 4. draft the popped nodes
                    open_node(node, logits, score[node])
            new = self.verify_tree_step(target, seq, tree.tokens, tree.parents, qmap, rng, trace)
            tree.finish()
            seq += new
            trace.emit(new)
        return self.end(trace, snap, target, max_new_tokens, draft)
