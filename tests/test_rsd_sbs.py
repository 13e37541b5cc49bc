"""RSD's Stochastic-Beam-Search drafting (RSD-S): the conditioned Gumbel values, the tree, and
exactness of recursive rejection sampling on it (rule level, with a wrong sibling order that must
fail, and end to end on V=4 models). Greedy equality comes from tests/test_lossless.py (rsd_sbs.yaml)."""

import itertools

import pytest
import torch

from harness.errors import ConfigError
from strategies.core import probs as P
from strategies.core.base import SamplingParams
from strategies.greedy import Greedy
from strategies.rsd import RSD
from strategies.rsd_sbs import RSDSBS, sbs_children, stochastic_beam_tree
from tests.test_distribution import _check_distribution
from tests.test_tree_verify import _rand_dist, assert_first_two_tokens_follow_p


def test_children_values_are_conditioned_on_the_parent():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        q = _rand_dist(g, 50)
        q[3] = 0.0
        q = q / q.sum()
        phi, value = float(torch.randn(1, generator=g)) - 3, float(torch.randn(1, generator=g)) * 3
        kids = sbs_children(q, phi, value, 5, g, greedy=False)
        keys = [k for k, _, _ in kids]
        assert len(kids) == 5 and 3 not in [t for _, _, t in kids]
        assert keys == sorted(keys, reverse=True) and keys[0] == pytest.approx(value, abs=1e-9)
        assert all(k <= value + 1e-12 for k in keys)
        assert all(ph == pytest.approx(phi + float(torch.log(q[t].double()))) for _, ph, t in kids)


def test_greedy_tree_is_beam_search():
    V, W = 5, 2
    g = torch.Generator().manual_seed(2)
    ctx = {c: _rand_dist(g, V) for c in itertools.chain([()], itertools.product(range(V), repeat=1))}

    tokens, parents, _ = stochastic_beam_tree(
        ctx[()], lambda ids, t, p: torch.stack([ctx[_path(i, t, p)] for i in ids]), W, 2, g, greedy=True)
    level1 = sorted(range(V), key=lambda a: -float(ctx[()][a]))[:W]
    score = {(a, b): float(torch.log(ctx[()][a]) + torch.log(ctx[(a,)][b])) for a in level1 for b in range(V)}
    level2 = sorted(score, key=score.get, reverse=True)[:W]
    got = [_path(i, tokens, parents) for i in range(len(tokens))]
    assert got == [(a,) for a in level1] + level2


def _path(i, tokens, parents):
    out = []
    while i != -1:
        out.append(tokens[i])
        i = parents[i]
    return tuple(out[::-1])


def _reorder_siblings_by_q(tokens, parents, qmap):
    """The same tree with each parent's children sorted by q (how beam search usually lists them)."""
    kids = {}
    for i, par in enumerate(parents):
        kids.setdefault(par, []).append(i)
    nt, np_, nq, old2new, queue = [], [], {}, {-1: -1}, [-1]
    while queue:
        old = queue.pop(0)
        if old in qmap:
            nq[old2new[old]] = qmap[old]
        for c in sorted(kids.get(old, []), key=lambda c: -float(qmap[old][tokens[c]])):
            nt.append(tokens[c])
            np_.append(old2new[old])
            old2new[c] = len(nt) - 1
            queue.append(c)
    return nt, np_, nq


def _sbs_trial(g, P_of, Q_of, width, depth, broken):
    tokens, parents, qmap = stochastic_beam_tree(
        Q_of(()), lambda ids, t, p: torch.stack([Q_of(_path(i, t, p)) for i in ids]), width, depth, g, greedy=False)
    assert len(tokens) <= width * depth
    if broken:
        tokens, parents, qmap = _reorder_siblings_by_q(tokens, parents, qmap)
    rows = torch.stack([P_of(())] + [P_of(_path(i, tokens, parents)) for i in range(len(tokens))])
    path, nxt = P.verify_tree(rows, tokens, parents, qmap, g, greedy=False)
    out = [tokens[i] for i in path] + [nxt]
    while len(out) < 2:
        out.append(P.sample(P_of(tuple(out)), g))  # the next step would be plain decoding
    return tuple(out[:2])


@pytest.mark.parametrize("width,depth,broken,n", [(2, 2, False, 8000), (3, 3, False, 4000), (2, 2, True, 3000)],
                         ids=["w2d2", "w3d3", "w2d2-siblings-by-q"])
def test_rrs_on_stochastic_beam_tree_is_exact(width, depth, broken, n):
    """First two emitted tokens ~ p. Listing siblings by q instead of draw order must fail."""
    V, N = 4, n
    g = torch.Generator().manual_seed(5)
    ctxs = itertools.chain.from_iterable(itertools.product(range(V), repeat=r) for r in range(depth + 1))
    ctx_p = {c: _rand_dist(g, V) for c in ctxs}
    ctx_q = {c: _rand_dist(g, V) for c in ctx_p}
    assert_first_two_tokens_follow_p(lambda: _sbs_trial(g, ctx_p.__getitem__, ctx_q.__getitem__, width, depth, broken),
                                     ctx_p, V, N, broken)


def test_rsd_sbs_preserves_distribution(small_models):
    _check_distribution(lambda sp: RSDSBS(draft=None, beam_width=2, beam_depth=2,
                                       sampling=sp), small_models)


def test_tree_size_and_greedy_equality(tiny_target, tiny_selfdraft):
    ref = Greedy().generate(tiny_target, [5, 6, 7, 8], 40, torch.Generator()).tokens
    for temp in (0.0, 1.0):
        s = RSDSBS(draft=None, beam_width=3, beam_depth=4,
                sampling=SamplingParams(temperature=temp))
        tr = s.generate(tiny_target, [5, 6, 7, 8], 40, torch.Generator().manual_seed(0), draft=tiny_selfdraft)
        assert tr.tree_nodes <= 12 * tr.verifications
        assert tr.draft_forwards <= 4 * tr.verifications  # one draft forward per level
        if temp == 0.0:
            assert tr.tokens == ref and 12 * (tr.verifications - 1) < tr.tree_nodes <= 12 * tr.verifications
    capped = RSDSBS(draft=None, beam_width=3, beam_depth=4, max_nodes=5)
    tr = capped.generate(tiny_target, [5, 6, 7, 8], 40, torch.Generator(), draft=tiny_selfdraft)
    assert tr.tokens == ref and tr.tree_nodes <= 5 * tr.verifications


def test_bad_config():
    with pytest.raises(ConfigError, match="beam_width"):
        RSDSBS(draft=None, beam_width=0)
    assert RSDSBS(draft=None).params()["beam_width"] == 3
    assert "beam_width" not in RSD(draft=None).params()
