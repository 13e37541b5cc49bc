"""SpecTr: fast speculative decoding via optimal transport (Sun et al., NeurIPS 2023).

Each step: (1) draw k i.i.d. draft sequences of length L from q (one batched-as-tree draft
forward per depth: sequences sharing a prefix share a node); (2) verify the merged tree in ONE
target forward; (3) walk down: at a node whose m continuing sequences propose i.i.d. tokens
x_1..x_m, k-sequential selection accepts the first x_i with U <= min(1, p(x_i)/(rho q(x_i))),
rho in [1, m] chosen per node (strategies/core/probs.kseq_rho, (1 - 1/e)-optimal); if none is
accepted, sample the leftover distribution and stop. At temperature 0 it reduces to matching
the target's argmax along the tree (lossless == greedy).
"""

from __future__ import annotations

from harness.errors import ConfigError
from strategies.core import probs as P
from strategies.core.base import TreeSpeculation
from strategies.core.trees import TreeDrafter


class SpecTr(TreeSpeculation):
    name = "spectr"

    def __init__(self, draft, num_drafts: int = 3, draft_len: int = 3, sampling=None, draft_vocab: int = 0):
        super().__init__(sampling)
        self.set_draft_vocab(draft_vocab)
        if num_drafts < 1 or draft_len < 1:
            raise ConfigError("spectr: num_drafts and draft_len must be >= 1")
        self.draft, self.num_drafts, self.draft_len = draft, num_drafts, draft_len

    def _draft_sequences(self, tree: TreeDrafter, seq, rng):
        """k i.i.d. sequences from q, merged into a tree; per node the list of children proposed
        by each continuing sequence (with repeats) and the q they were drawn from."""
        k, greedy = self.num_drafts if not self.sampling.greedy else 1, self.sampling.greedy
        lanes = [-1] * k  # the node each sequence is at
        logits_at = {-1: tree.begin(seq)}
        proposals, qmap = {}, {}
        for depth in range(self.draft_len):
            new_nodes = []
            for lane, node in enumerate(lanes):
                q = self.sampling.probs(logits_at[node])
                qmap[node] = q
                x = int(logits_at[node].argmax()) if greedy else P.sample(q, rng)
                proposals.setdefault(node, []).append(x)
                child = next((c for c, t in zip(range(len(tree.tokens)), tree.tokens)
                              if tree.parents[c] == node and t == x), None)
                if child is None:
                    child = tree.add(x, node)
                    new_nodes.append(child)
                lanes[lane] = child
            if depth < self.draft_len - 1 and new_nodes:
                for node, logits in zip(new_nodes, tree.expand(new_nodes)):
                    logits_at[node] = logits
        return proposals, qmap

    def step(self, state, tree):
        proposals, qmap = self._draft_sequences(tree, state.seq, state.rng)
        return self._verify(state, tree, proposals, qmap)

    def _verify(self, state, tree, proposals, qmap):
        """One target forward over the tree, then k-sequential selection down the tree."""
        tokens, parents, rng = tree.tokens, tree.parents, state.rng
        p_all = self.target_probs(self.tree_logits(state, tokens, parents))  # [n + 1, V]
        path, node = [], -1
        while True:
            p, cands = p_all[node + 1], proposals.get(node, [])
            if self.sampling.greedy:
                t = int(p.argmax())
                child = next((c for c in range(len(tokens)) if parents[c] == node and tokens[c] == t), None)
                if child is None:
                    nxt = t
                    break
            else:
                if not cands:
                    nxt = P.sample(p, rng)
                    break
                q = qmap[node]
                i, left = P.kseq_select(p, q, cands, P.kseq_rho(p, q, len(cands)), rng)
                if i is None:
                    nxt = P.sample(left, rng)
                    break
                child = next(c for c in range(len(tokens)) if parents[c] == node and tokens[c] == cands[i])
            path.append(child)
            node = child
        state.verified_tree(parents, len(path))
        state.target.keep(path, len(tokens))
        return [tokens[c] for c in path] + [nxt]
