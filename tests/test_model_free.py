"""Model-free tree drafting: Token Recycling and STAND (strategies/token_recycling.py, stand.py).

Greedy equality comes from tests/test_lossless.py (their YAMLs); here: the adjacency update on
a hand-checked case, the templates' shapes, the reset / persistence policies, the n-gram table,
the tree-shape rule, and T > 0 distribution tests (chi-square on the V=4 models) each with a
deliberately broken rule that must fail.
"""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from harness.errors import ConfigError
from strategies.core import probs as P
from strategies import token_recycling as TRmod
from strategies.core.base import SamplingParams
from strategies.greedy import Greedy
from strategies.stand import STAND, NgramTable, ShapeStats
from strategies.token_recycling import (PAPER_LEVELS, Template, TokenRecycling, build_template, parse_template,
                                        verify_point_mass_tree)
from tests.test_distribution import N, chi2_pvalue, empirical, exact_joint

SP = SamplingParams(temperature=1.0, top_k=3)
BROKEN_N = 1000  # samples for the broken-rule checks (their bias is large)
PROMPTS = [[1, 2, 3, 1, 2, 3, 1, 2], [72, 101, 108, 108, 111, 32, 119]]


# ---------------------------------------------------------------------------- Token Recycling
def test_adjacency_update_hand_checked():
    V = 12
    adj = TokenRecycling._new_matrix(V)
    assert adj.dtype == torch.int32 and adj.shape == (V, 8) and bool((adj == -1).all())
    logits = torch.zeros(3, V)
    logits[0] = torch.arange(V, dtype=torch.float)  # top-8: 11, 10, ..., 4
    logits[1, [2, 7, 5]] = torch.tensor([3.0, 2.0, 1.0])  # top: 2, 7, 5, then ties at 0
    logits[2] = -torch.arange(V, dtype=torch.float)  # top-8: 0, 1, ..., 7
    TokenRecycling.update(adj, torch.tensor([3, 5, 3]), logits)
    assert adj[3].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]  # token 3 twice: the later row wins
    assert adj[5].tolist()[:3] == [2, 7, 5]
    assert bool((adj[[0, 1, 2, 4, 6, 7, 8, 9, 10, 11]] == -1).all())  # nothing else written
    TokenRecycling.update(adj, torch.tensor([0]), logits[:1])
    assert adj[0].tolist() == [11, 10, 9, 8, 7, 6, 5, 4]


def test_small_vocab_rows_padded():
    adj = TokenRecycling._new_matrix(4)
    TokenRecycling.update(adj, torch.tensor([1]), torch.tensor([[0.0, 3.0, 1.0, 2.0]]))
    assert adj[1].tolist() == [1, 3, 2, 0, -1, -1, -1, -1]


def _check_template(parents, ranks):
    kids = {}
    for i, (par, r) in enumerate(zip(parents, ranks)):
        assert par < i
        kids.setdefault(par, []).append(r)
    for rs in kids.values():  # children of a node = the first c entries of its row, in rank order
        assert rs == list(range(len(rs)))


def test_paper_template_has_80_nodes_in_levels_8_21_25_15_8_3():
    tpl = parse_template("paper80", 6, TRmod.RANK_ACCEPT)
    assert tpl.n == 80 and tpl.level_sizes == [8, 21, 25, 15, 8, 3] == list(PAPER_LEVELS)
    _check_template(tpl.parents.tolist(), tpl.ranks.tolist())
    assert tpl.anc.sum() == int((tpl.depths + 1).sum())  # each node sees itself + its depth ancestors


@pytest.mark.parametrize("n", [1, 16, 24, 32])
def test_cpu_templates(n):
    tpl = parse_template(f"cpu{n}", 6, TRmod.RANK_ACCEPT)
    assert tpl.n == n and len(tpl.level_sizes) <= 6
    _check_template(tpl.parents.tolist(), tpl.ranks.tolist())
    assert tpl.ranks[0] == 0 and tpl.parents[0] == -1


def test_bad_config_raises():
    for kw in ({"template": "paper81"}, {"template": "cpu0"}, {"reset": "sometimes"}, {"max_depth": 0},
               {"rank_accept": [0.1, 0.2] + [0.01] * 6}):
        with pytest.raises(ConfigError):
            TokenRecycling(**kw)
    for kw in ({"node_budget": 0}, {"min_ngram": 3, "max_ngram": 2}, {"new_weight": 0}, {"branching": []}):
        with pytest.raises(ConfigError):
            STAND(**kw)


def test_fill_follows_rows_and_prunes_unwritten():
    tpl = Template(*build_template(levels=(2, 2)))  # root -> a, b; a -> 2 children (ranks 0, 1)
    adj = TokenRecycling._new_matrix(10)
    adj[4] = torch.tensor([7, 8, 1, 2, 3, 5, 6, 9], dtype=torch.int32)
    tok, par, depth, anc = tpl.fill(adj, 4, 6)
    assert tok.tolist() == [7, 8] and par.tolist() == [-1, -1]  # row 7 unwritten: its children pruned
    adj[7] = torch.tensor([2, 3, 0, 1, 4, 5, 6, 9], dtype=torch.int32)
    tok, par, depth, anc = tpl.fill(adj, 4, 6)
    assert tok.tolist() == [7, 8, 2, 3] and par.tolist() == [-1, -1, 0, 0] and depth.tolist() == [0, 0, 1, 1]
    assert anc.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1]]
    assert tpl.fill(adj, 4, 1)[0].tolist() == [7, 8]  # depth cap (token budget)
    assert tpl.fill(adj, 5, 6)[0].numel() == 0  # empty root row: no tree


def test_reset_policies(tiny_target):
    g = torch.Generator
    fresh = TokenRecycling(template="cpu16")
    ref = [fresh.generate(tiny_target, p, 24, g().manual_seed(0)) for p in PROMPTS[::-1]]
    s = TokenRecycling(template="cpu16")  # per_example: order changes nothing, counters included
    got = [s.generate(tiny_target, p, 24, g().manual_seed(0)) for p in PROMPTS][::-1]
    assert [(t.tokens, t.tree_nodes, t.accepted) for t in got] == [(t.tokens, t.tree_nodes, t.accepted) for t in ref]
    never = TokenRecycling(template="cpu16", reset="never", prefill_update=False)
    never.generate(tiny_target, PROMPTS[0], 24, g().manual_seed(0))
    adj = never._adj
    written = int((adj[:, 0] >= 0).sum())
    assert written > 0
    tr = never.generate(tiny_target, PROMPTS[1], 24, g().manual_seed(0))
    assert never._adj is adj and int((adj[:, 0] >= 0).sum()) >= written  # hot start: rows carried over
    assert tr.tokens == Greedy().generate(tiny_target, PROMPTS[1], 24, g().manual_seed(0)).tokens
    assert never.params()["reset"] == "never" and never.params()["adjacency_bytes"] == tiny_target.vocab_size * 32
    # one step (2 tokens): an empty matrix drafts nothing, the carried one drafts from its rows
    cold = TokenRecycling(template="cpu16", prefill_update=False)
    assert cold.generate(tiny_target, PROMPTS[1], 2, g().manual_seed(0)).tree_nodes == 0
    assert never.generate(tiny_target, PROMPTS[1], 2, g().manual_seed(0)).tree_nodes > 0


def test_point_mass_rule_exact(monkeypatch):
    """Deterministic siblings [2, 0, 3]: the emitted token is distributed as p; forgetting to
    remove a rejected sibling from p_res (a classic mistake) fails the same test."""
    p = torch.tensor([0.3, 0.1, 0.25, 0.2, 0.15])
    n = 10000

    def draw(g):
        path, nxt = verify_point_mass_tree(lambda i: p, [2, 0, 3], [-1, -1, -1], g)
        return [2, 0, 3][path[0]] if path else nxt

    g = torch.Generator().manual_seed(0)
    counts = np.bincount([draw(g) for _ in range(n)], minlength=5)
    assert chisquare(counts, p.numpy() * n).pvalue > 1e-3
    monkeypatch.setattr(TRmod, "remove_token", lambda p, x: p)
    g = torch.Generator().manual_seed(0)
    counts = np.bincount([draw(g) for _ in range(n)], minlength=5)
    assert chisquare(counts, p.numpy() * n).pvalue < 1e-3


@pytest.mark.parametrize("broken", [False, True])
def test_token_recycling_preserves_distribution(small_models, broken, monkeypatch):
    target, _ = small_models
    if broken:  # a rejected sibling stays in p_res (fewer samples: the bias is large)
        monkeypatch.setattr(TRmod, "remove_token", lambda p, x: p)
    s = TokenRecycling(template="cpu8", sampling=SP)
    pv = chi2_pvalue(empirical(s, target, n=BROKEN_N if broken else N), exact_joint(target, SP))
    assert (pv < 1e-3) if broken else (pv > 1e-3)


# ---------------------------------------------------------------------------- STAND
def test_ngram_table_store_merge_lookup():
    tab = NgramTable(1, 2, store_k=3, new_weight=0.5)
    tab.store([9, 5, 6], [1, 2, 3], [0.5, 0.3, 0.2])  # keys (6,) and (5, 6)
    assert set(tab.entries) == {(6,), (5, 6)}
    tab.store([7, 6], [2, 4], [0.6, 0.4])  # merges into (6,); new key (7, 6)
    toks, ps = tab.entries[(6,)]
    # 0.5 * {1: .5, 2: .3, 3: .2} + 0.5 * {2: .6, 4: .4} = {2: .45, 1: .25, 4: .2, 3: .1} -> top 3, renormalised
    assert toks == [2, 1, 4] and ps == pytest.approx([0.45 / 0.9, 0.25 / 0.9, 0.2 / 0.9])
    assert tab.entries[(5, 6)] == ([1, 2, 3], [0.5, 0.3, 0.2])
    assert tab.lookup([0, 5, 6]) == tab.entries[(5, 6)]  # longest match first
    assert tab.lookup([0, 8, 6]) == tab.entries[(6,)]  # backs off to the 1-gram
    assert tab.lookup([6, 8]) is None
    over = NgramTable(1, 1, store_k=3, new_weight=1.0)
    over.store([6], [1], [1.0])
    over.store([6], [2, 3], [0.7, 0.3])
    assert over.entries[(6,)] == ([2, 3], [0.7, 0.3])  # new_weight 1: the latest overwrites


def test_stand_table_holds_target_probabilities(tiny_target):
    prompt = PROMPTS[1]
    s = STAND(store_k=4, new_weight=1.0, max_ngram=2)
    tr = s.generate(tiny_target, prompt, 6, torch.Generator().manual_seed(0))
    seq = prompt + tr.tokens
    tiny_target.reset()
    logits = tiny_target.forward(seq)
    # the last verified position is the root of the last step or an accepted node: both stored
    # under their 1- and 2-gram; with new_weight 1 the latest observation of an n-gram is kept
    last = {}
    for i in range(len(seq) - 1):
        last[tuple(seq[max(0, i - 1): i + 1])] = i
        last[(seq[i],)] = i
    for key, i in last.items():
        if key in s.table.entries:
            toks, ps = s.table.entries[key]
            top = torch.softmax(logits[i], -1).topk(4)
            assert toks == top.indices.tolist()
            assert ps == pytest.approx((top.values / top.values.sum()).tolist(), abs=1e-5)
    assert len(s.table) >= len(set(last)) - 2  # prompt positions (seed_from_prompt) + trajectory


def test_stand_sample_sharing_and_reset(tiny_target):
    g = torch.Generator
    s = STAND()
    a1 = s.generate(tiny_target, PROMPTS[0], 16, g().manual_seed(0))
    table = s.table
    n1 = len(table)
    a2 = s.generate(tiny_target, PROMPTS[0], 16, g().manual_seed(1))  # same prompt: kept
    assert s.table is table and a2.tokens == a1.tokens
    s.generate(tiny_target, PROMPTS[1], 16, g().manual_seed(0))  # another prompt: reset
    assert s.table is not table and all(k not in s.table.entries for k in table.entries if len(k) == 3
                                        and k not in {tuple(PROMPTS[1][i:i + 3]) for i in range(6)})
    fresh = STAND().generate(tiny_target, PROMPTS[1], 16, g().manual_seed(0))
    again = s.generate(tiny_target, PROMPTS[1], 16, g().manual_seed(0))
    assert again.tree_nodes >= fresh.tree_nodes and n1 > 0
    off = STAND(share_across_samples=False)
    off.generate(tiny_target, PROMPTS[0], 16, g().manual_seed(0))
    t1 = off.table
    off.generate(tiny_target, PROMPTS[0], 16, g().manual_seed(0))
    assert off.table is not t1 and off.params()["share_across_samples"] is False


def test_shape_rule_follows_statistics():
    st = ShapeStats(max_depth=8, max_branch=4)
    for d in range(8):  # rank 0 always right: a chain as deep as allowed
        st.looked[d], st.hits[d], st.offered[d][0], st.accepted[d][0] = 1000, 1000, 1000, 990
    b = st.choose(24)
    assert len(b) == 8 and ShapeStats.nodes(b) <= 24  # as deep as allowed; spare nodes widen it
    st = ShapeStats(max_depth=8, max_branch=4)
    for d in range(8):  # the right token spread over ranks, often not found: wide and shallow
        st.looked[d], st.hits[d] = 1000, 900
        st.offered[d] = [1000] * 4
        st.accepted[d] = [300, 250, 200, 150]
    b = st.choose(24)
    assert b[0] >= 3 and len(b) < 8 and ShapeStats.nodes(b) <= 24


@pytest.mark.parametrize("broken", [False, True])
def test_stand_preserves_distribution(small_models, broken, monkeypatch):
    target, _ = small_models
    if broken:  # drafts taken in q's top-k order but verified as if sampled from q
        monkeypatch.setattr(P, "gumbel_top_k", lambda q, k, rng: torch.topk(q, min(k, len(q))).indices.tolist())
    s = STAND(node_budget=6, max_ngram=2, sampling=SP, share_across_samples=False)
    pv = chi2_pvalue(empirical(s, target, n=BROKEN_N if broken else N), exact_joint(target, SP))
    assert (pv < 1e-3) if broken else (pv > 1e-3)


def test_stand_fixed_branching_and_params(tiny_target):
    s = STAND(branching=[2, 1], node_budget=10)
    tr = s.generate(tiny_target, PROMPTS[0], 20, torch.Generator().manual_seed(0))
    assert tr.tokens == Greedy().generate(tiny_target, PROMPTS[0], 20, torch.Generator().manual_seed(0)).tokens
    assert tr.tree_nodes <= 4 * tr.verifications and s.params()["branching"] == [2, 1]
    assert STAND().params()["branching"] == "auto"
