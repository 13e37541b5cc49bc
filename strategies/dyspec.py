"""DySpec: faster speculative decoding with a dynamic token tree (Xiong et al. 2024).

Each step grows the draft tree greedily under a node budget: a max-heap of candidate nodes
keyed by the estimated probability that the path to them is accepted, which the paper takes
to be the product of the draft's probabilities along the path. Pop the best candidate, add it
to the tree, run the draft on it (its children's distribution) and make its first child and
its next sibling candidates; stop when the budget is spent. Verification: one target forward
over the tree, then recursive rejection sampling over siblings (T > 0) or the longest path of
target argmaxes (T = 0), both in strategies/core/probs.verify_tree.

Keys use the draft's real probabilities at every temperature: softmax of the draft logits at
T = 0 (top-k children, whose identities are fixed by the context), and at T > 0 the processed
q the children are drawn from. A one-hot greedy q would give every sibling key 0 and turn the
"dynamic" tree into a chain.

Why the tree stays exact at T > 0. Recursive rejection sampling (RRS) at a node v with
children x_1, x_2, ... (drawn in this order WITHOUT replacement from q_v, Gumbel-Top-k) emits
a token distributed exactly as p_v provided that, for every i, the event "an i-th child is in
the tree" is independent of the identity of x_i given x_1..x_{i-1} (then sibling i is a fresh
draw from q_v without x_<i whenever RRS reaches it, which is what its residual update
assumes). The paper's key for the i-th child, score(v) * q_v(x_i), looks at x_i: a child with
a large q enters the tree more often than one with a small q, and the emitted token is biased
(measured: 0.10 total variation with a budget of 2). Here a child whose identity is not yet
in the tree is keyed by its EXPECTED draft probability given the siblings already drawn,

    key(i-th child of v) = score(v) * E[q_v(x_i) | x_<i]
                         = score(v) * (sum_x q_v(x)^2 - sum_{j<i} q_v(x_j)^2) / (1 - sum_{j<i} q_v(x_j)),

a function of q_v and x_<i only, and a child is only made a candidate once its predecessor is
in the tree, so each node's children are always a prefix of its draw sequence. Once a node is
in the tree its real score, score(v) * q_v(x_i), is known and keys its own children; that key
can decide whether a LATER sibling x_{i+1}, a cousin, or x_i's own children enter the tree,
never whether x_i itself does, so the condition holds at every node and RRS is exact by
induction down the accepted path (tests/test_distribution.py enumerates the first two tokens;
the identity-keyed rule fails the same test). At T = 0 the children are the draft's top-k and
verification is the longest argmax path, which is exact for any tree shape, so the real
q_v(x_i) keys them directly. `expand_batch` nodes are popped and drafted per draft forward
(1 = the paper's exact greedy order); the pop order uses only keys, so batching keeps the
argument.
"""

from __future__ import annotations

import heapq
import itertools

import torch

from harness.errors import ConfigError
from strategies.core import probs as P
from strategies.core.base import TreeSpeculation


def expected_next_q(q: torch.Tensor, drawn: list[int]) -> float:
    """E[q(x) | x drawn from q without `drawn`]: the identity-free key of the next sibling."""
    q = q.double()
    taken = q[drawn] if drawn else q.new_zeros(0)
    left = 1.0 - float(taken.sum())
    if left <= 1e-12:
        return 0.0
    return max(float((q * q).sum() - (taken * taken).sum()), 0.0) / left


def sibling_key(q: torch.Tensor, kids: list[int], rank: int, greedy: bool) -> float:
    """The key factor of the rank-th child of a node (q: the key distribution, kids: its draws).

    Greedy: the child's own draft probability (top-k children are fixed by the context).
    Sampling: its expected draft probability given the earlier draws (never its own identity)."""
    if greedy:
        return float(q[kids[rank]])
    return expected_next_q(q, kids[:rank])


def grow_tree(root_logits: torch.Tensor, expand, node_budget: int, max_children: int, sampling,
              rng: torch.Generator, expand_batch: int = 1):
    """Grow one DySpec tree (see the module docstring).

    root_logits: [V] draft logits after the committed sequence. expand(nodes, tokens, parents)
    -> [len(nodes), V] draft logits after each of those (just added) nodes.
    Returns (tokens, parents, q_by_parent): q_by_parent[v] is the distribution v's children were
    drawn from (the processed q at T > 0), each parent's children listed in draw order."""
    tokens, parents, qmap, draws, keyq, score = [], [], {}, {}, {}, {}
    heap: list = []
    tie = itertools.count()
    greedy = sampling.greedy

    def open_node(node, logits, node_score):
        q = sampling.probs(logits)
        kq = torch.softmax(logits.float(), -1) if greedy else q  # the draft's real probabilities
        kids = torch.topk(logits, min(max_children, logits.shape[-1])).indices.tolist() if greedy \
            else P.gumbel_top_k(q, max_children, rng)
        qmap[node], draws[node], keyq[node] = q, kids, kq
        if kids:  # the first child becomes a candidate; later siblings follow one by one
            heapq.heappush(heap, (-node_score * sibling_key(kq, kids, 0, greedy), next(tie), node, 0))

    open_node(-1, root_logits, 1.0)
    while heap and len(tokens) < node_budget:
        batch = []
        while heap and len(batch) < expand_batch and len(tokens) < node_budget:
            _, _, parent, rank = heapq.heappop(heap)  # the best estimated path acceptance
            tok = draws[parent][rank]
            tokens.append(tok)
            parents.append(parent)
            node = len(tokens) - 1
            base = score[parent] if parent >= 0 else 1.0
            score[node] = base * float(keyq[parent][tok])  # now known: keys this node's children
            if rank + 1 < len(draws[parent]):  # its next sibling becomes a candidate
                k = sibling_key(keyq[parent], draws[parent], rank + 1, greedy)
                if k > 0:
                    heapq.heappush(heap, (-base * k, next(tie), parent, rank + 1))
            batch.append(node)
        if len(tokens) >= node_budget:
            break  # budget spent: the last nodes need no children
        for node, logits in zip(batch, expand(batch, tokens, parents)):  # draft the popped nodes
            open_node(node, logits, score[node])
    return tokens, parents, qmap


class DySpec(TreeSpeculation):
    name = "dyspec"

    def __init__(self, draft, node_budget: int = 16, max_children: int = 8, expand_batch: int = 1,
                 sampling=None, draft_vocab: int = 0):
        super().__init__(sampling)
        self.set_draft_vocab(draft_vocab)
        if node_budget < 1 or max_children < 1 or expand_batch < 1:
            raise ConfigError("dyspec: node_budget, max_children and expand_batch must be >= 1")
        self.draft, self.node_budget, self.max_children, self.expand_batch = draft, node_budget, max_children, expand_batch

    def draft_tree(self, state, tree):
        return grow_tree(tree.begin(state.seq), tree.expand_grown, self.node_budget, self.max_children, self.sampling,
                         state.rng, self.expand_batch)
