"""Recursive Speculative Decoding (RSD; Jeon et al. 2024): a draft tree sampled WITHOUT
replacement, verified by recursive rejection sampling. Both of the paper's drafting variants:

`drafting: gumbel_topk` (RSD-C): grow the tree level by level: every node at depth d gets
branching[d] children drawn without replacement from the draft q (Gumbel-Top-k; top-k when
greedy), one draft forward per level.

`drafting: stochastic_beam` (RSD-S): the tree is the union of the prefixes kept by Stochastic
Beam Search (Kool et al. 2019) over draft SEQUENCES, `beam_width` kept per level for
`beam_depth` levels (one draft forward per level, at most width x depth nodes). A kept prefix
S has log-probability phi(S) = sum of log q along it and a perturbed value G(S) (G(root) = 0).
Its candidate children c get Gumbel-perturbed values G~(c) = phi(S) + log q(c | S) + Gumbel,
then conditioned on their maximum being G(S): with Z = max_c G~(c),
G(c) = -log(exp(-G(S)) - exp(-Z) + exp(-G~(c))), computed stably as G(S) - softplus(u),
u = G(S) - G~(c) + log(1 - exp(G~(c) - Z)). The beam_width candidates of the whole level with
the largest G are kept (at most beam_width per parent are ever needed: the others cannot beat
their own siblings). At T=0 it is plain beam search on the draft's log-probabilities.

Verification (both variants): the whole tree in ONE target forward (tree mask, positions =
depth), then recursive rejection sampling over siblings (strategies/probs.verify_tree): sibling
x_i accepted with min(1, p_res(x_i) / q_i(x_i)); on rejection p_res = norm(max(0, p_res - q_i))
and q loses x_i (renormalised) for the next sibling; if all fail, sample p_res. Lossless.
`max_nodes` caps the tree: comparisons at a fixed target compute budget.

Why RRS stays exact on a stochastic-beam tree (the subtle part). verify_tree assumes that a
node's children, in sibling order, are draws without replacement from q(. | parent). In SBS a
parent S keeps a RANDOM number m_S of children (those that reach the level's top beam_width,
in competition with other parents' children), so what must hold is: for every i, given the
earlier siblings x_1..x_{i-1} and given that an i-th sibling exists (m_S >= i), x_i is
distributed as q(. | S) without x_1..x_{i-1}. It holds when the siblings are listed in
DECREASING perturbed value, which is the order this module emits (the level's candidates are
added to the tree sorted by G, so each parent's children appear in that order):
 - the map G~ -> G is increasing, so ordering by G is ordering by G~ = log q(c) + Gumbel + const:
   the Gumbel-Top-k trick, i.e. the children in that order are a sequential draw without
   replacement from q(. | S) (a Plackett-Luce permutation);
 - in the equivalent exponential race (exp(-G~(c)) ~ Exp(rate q(c) exp(phi))), memorylessness
   gives: the identity of the i-th arrival is distributed as q without the earlier arrivals,
   independently of the arrival TIMES up to i (the sorted values);
 - the event m_S >= i ("the i-th child of S is in the level's top beam_width") depends only on
   the i-th value G_(i) (through G~_(i), Z = G~_(1) and G(S)) and on the other parents'
   candidates, whose noise is independent of S's; it never looks at the identity of x_i.
 So x_i | (x_<i, m_S >= i) ~ q(. | S) without x_<i, and RRS's induction applies at every node;
 pruning at later levels never removes a kept node, so m_S is final once S's level is done.
 Listing the same siblings in another order (e.g. by q, as beam search usually reports them,
 or by token id) breaks exactness: tests/test_rsd_sbs.py shows the distribution test failing.
 The node cap keeps a prefix of the level's G-sorted candidates, again a function of values
 only, so it is exact too.
"""

from __future__ import annotations

import math

import torch

from harness.errors import ConfigError
from strategies.base import Strategy
from strategies.tree_draft import TreeDrafter

DRAFTING = ("gumbel_topk", "stochastic_beam")


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, stable at both ends (-inf at x = 0)."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def sbs_children(q: torch.Tensor, phi: float, value: float, width: int, rng: torch.Generator,
                 greedy: bool) -> list[tuple[float, float, int]]:
    """A beam's best `width` candidate children: (key, phi of the child, token), best first.

    Stochastic: key = the child's perturbed value, conditioned so that the maximum over ALL of
    the parent's children equals the parent's `value`. Greedy: key = phi (beam search)."""
    logq = torch.log(q.double())
    k = min(width, int((q > 0).sum()))
    if greedy:
        top, idx = torch.topk(logq, k)
        return [(phi + float(v), phi + float(v), int(i)) for v, i in zip(top, idx)]
    u = torch.rand(q.shape, generator=rng, dtype=torch.float64).clamp_min(1e-300)
    g = phi + logq - torch.log(-torch.log(u))  # -inf where q = 0
    top, idx = torch.topk(g, k)
    z = top[0]
    u = value - top + _log1mexp(top - z)
    cond = value - torch.nn.functional.softplus(u)
    return [(float(c), phi + float(logq[i]), int(i)) for c, i in zip(cond, idx)]


def stochastic_beam_tree(root_q: torch.Tensor, expand, width: int, depth: int, rng: torch.Generator,
                         greedy: bool, max_nodes: int = 0):
    """Stochastic Beam Search over sequences as a token tree (see the module docstring).

    root_q: [V] draft distribution after the committed sequence. expand(node_ids, tokens, parents)
    -> [len(node_ids), V] draft distributions after each of those (just added) nodes.
    Returns (tokens, parents, q_by_parent); each parent's children appear in decreasing
    perturbed value (their draw order), as recursive rejection sampling needs."""
    tokens, parents, qmap = [], [], {}
    beams, rows = [(-1, 0.0, 0.0)], root_q[None]  # (node, phi, perturbed value)
    for level in range(depth):
        cands = []
        for b, (node, phi, value) in enumerate(beams):
            qmap[node] = rows[b]
            cands += [(key, ph, tok, node) for key, ph, tok in sbs_children(rows[b], phi, value, width, rng, greedy)]
        cands.sort(key=lambda c: -c[0])  # stable: ties keep the parent / draw order
        new = []
        for key, ph, tok, parent in cands[:width]:
            if max_nodes and len(tokens) >= max_nodes:
                break
            tokens.append(tok)
            parents.append(parent)
            new.append((len(tokens) - 1, ph, key))
        if not new or level == depth - 1:
            break
        rows = expand([n for n, _, _ in new], tokens, parents)
        beams = new
    return tokens, parents, qmap


class RSD(Strategy):
    name = "rsd"
    needs = frozenset({"rollback", "tree_mask"})

    def __init__(self, draft, branching=(2, 2, 1), max_nodes: int = 0, drafting: str = "gumbel_topk",
                 beam_width: int = 3, beam_depth: int = 4, sampling=None):
        super().__init__(sampling)
        branching = [int(b) for b in branching]
        if not branching or min(branching) < 1 or max_nodes < 0:
            raise ConfigError(f"rsd: branching must be a non-empty list of ints >= 1 and max_nodes >= 0, got "
                              f"{branching}, {max_nodes}")
        if drafting not in DRAFTING:
            raise ConfigError(f"rsd: drafting must be one of {', '.join(DRAFTING)}, got '{drafting}'")
        if beam_width < 1 or beam_depth < 1:
            raise ConfigError(f"rsd: beam_width and beam_depth must be >= 1, got {beam_width}, {beam_depth}")
        self.draft, self.branching, self.max_nodes = draft, branching, max_nodes
        self.drafting, self.beam_width, self.beam_depth = drafting, int(beam_width), int(beam_depth)
        if drafting == "stochastic_beam":
            self.name = "rsd_sbs"

    def params(self) -> dict:
        out = super().params()
        if self.drafting == "gumbel_topk":
            out.pop("beam_width", None)
            out.pop("beam_depth", None)
            out["branching"] = self.branching
        return out

    def generate(self, target, prompt_ids, max_new_tokens, rng, draft=None):
        trace, snap = self.begin(target, draft)
        tree = TreeDrafter(draft, self.sampling)
        seq = list(prompt_ids)
        while not trace.done(target.eos_ids, max_new_tokens):
            if self.drafting == "stochastic_beam":
                tokens, parents, qmap = self._draft_beam(tree, seq, rng)
            else:
                tokens, parents, qmap = self._draft_levels(tree, seq, rng)
            new = self.verify_tree_step(target, seq, tokens, parents, qmap, rng, trace)
            tree.finish()
            seq += new
            trace.emit(new)
        return self.end(trace, snap, target, max_new_tokens, draft)

    def _draft_levels(self, tree, seq, rng):
        cap = self.max_nodes or float("inf")
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
        return tree.tokens, tree.parents, qmap

    def _draft_beam(self, tree, seq, rng):
        s = self.sampling
        dist = (lambda lg: torch.softmax(lg, -1)) if s.greedy else s.probs  # greedy: beam search on log q

        def expand(nodes, tokens, parents):
            while len(tree.tokens) < len(tokens):  # mirror the new nodes into the drafter
                i = len(tree.tokens)
                tree.add(tokens[i], parents[i])
            return dist(tree.expand(nodes))  # one draft forward per level

        return stochastic_beam_tree(dist(tree.begin(seq)), expand, self.beam_width, self.beam_depth, rng,
                                    s.greedy, self.max_nodes)
