"""RSD-S: Recursive Speculative Decoding (Jeon et al. 2024) with its Stochastic-Beam-Search
draft tree; verification as in strategies/rsd.py (recursive rejection sampling, one target forward).

The tree is the union of the prefixes kept by Stochastic
Beam Search (Kool et al. 2019) over draft SEQUENCES, `beam_width` kept per level for
`beam_depth` levels (one draft forward per level, at most width x depth nodes). A kept prefix
S has log-probability phi(S) = sum of log q along it and a perturbed value G(S) (G(root) = 0).
Its candidate children c get Gumbel-perturbed values G~(c) = phi(S) + log q(c | S) + Gumbel,
then conditioned on their maximum being G(S): with Z = max_c G~(c),
G(c) = -log(exp(-G(S)) - exp(-Z) + exp(-G~(c))), computed stably as G(S) - softplus(u),
u = G(S) - G~(c) + log(1 - exp(G~(c) - Z)). The beam_width candidates of the whole level with
the largest G are kept (at most beam_width per parent are ever needed: the others cannot beat
their own siblings). At T=0 it is plain beam search on the draft's log-probabilities.

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
from strategies.rsd import RSD


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
    u = torch.rand(q.shape, generator=rng, dtype=torch.float64, device=q.device).clamp_min(1e-300)
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


class RSDSBS(RSD):
    name = "rsd_sbs"

    def __init__(self, draft, beam_width: int = 3, beam_depth: int = 4, max_nodes: int = 0, sampling=None,
                 draft_vocab: int = 0):
        super().__init__(draft, branching=(1,), max_nodes=max_nodes, sampling=sampling, draft_vocab=draft_vocab)
        if beam_width < 1 or beam_depth < 1:
            raise ConfigError(f"rsd_sbs: beam_width and beam_depth must be >= 1, got {beam_width}, {beam_depth}")
        self.beam_width, self.beam_depth = int(beam_width), int(beam_depth)

    def params(self) -> dict:
        out = super().params()
        out.pop("branching", None)
        return out

    def draft_tree(self, state, tree):
        s = self.sampling
        dist = (lambda lg: torch.softmax(lg, -1)) if s.greedy else s.probs  # greedy: beam search on log q

        def expand(nodes, tokens, parents):
            return dist(tree.expand_grown(nodes, tokens, parents))  # one draft forward per level

        return stochastic_beam_tree(dist(tree.begin(state.seq)), expand, self.beam_width, self.beam_depth, state.rng,
                                    s.greedy, self.max_nodes)
