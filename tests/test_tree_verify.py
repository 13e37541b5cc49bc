"""The shared tree-verification core (RSD-style recursive rejection sampling; greedy longest path).

Rule level: the first emitted tokens are distributed exactly as the target p (chi-square, a
rule with a deliberate mistake fails). Engine level: a tree verified in one forward with the
tree mask reproduces greedy decoding token for token, and preserves the distribution at T>0.
"""

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from strategies.core import probs as P
from strategies.core.base import SamplingParams, Strategy
from strategies.greedy import Greedy
from tests.test_distribution import PROMPT, STEPS, chi2_pvalue, exact_joint


def _rand_dist(g, v, peak=2.0):
    return torch.softmax(torch.randn(v, generator=g) * peak, -1)


def test_gumbel_top_k_draws_without_replacement_with_right_first_marginal():
    g = torch.Generator().manual_seed(0)
    q = torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0])
    firsts = np.zeros(5)
    for _ in range(20000):
        draw = P.gumbel_top_k(q, 3, g)
        assert len(set(draw)) == 3 and 4 not in draw
        firsts[draw[0]] += 1
    assert chisquare(firsts[:4], q[:4].numpy() * 20000).pvalue > 1e-3


def test_greedy_tree_follows_the_longest_matching_path():
    V = 6
    onehot = lambda t: torch.nn.functional.one_hot(torch.tensor(t), V).float()  # noqa: E731
    tokens, parents = [1, 2, 3, 4], [-1, -1, 1, 2]  # root -> {1, 2}; 2 -> 3 -> 4
    p = torch.stack([onehot(2), onehot(0), onehot(3), onehot(4), onehot(5)])
    path, nxt = P.verify_tree(p, tokens, parents, None, torch.Generator(), greedy=True)
    assert path == [1, 2, 3] and nxt == 5
    p[0] = onehot(5)  # nothing matches at the root
    assert P.verify_tree(p, tokens, parents, None, torch.Generator(), greedy=True) == ([], 5)


def _two_level_trial(g, V, P_of, Q_of, k, broken=False):
    """Draft a 2-level tree (k siblings per node, without replacement from q), verify, return 2 tokens."""
    tokens, parents, qmap = [], [], {-1: Q_of(())}
    for a in P.gumbel_top_k(Q_of(()), k, g):
        tokens.append(a)
        parents.append(-1)
        i = len(tokens) - 1
        qmap[i] = Q_of((a,))
        for b in P.gumbel_top_k(Q_of((a,)), k, g):
            tokens.append(b)
            parents.append(i)
    rows = [P_of(())]
    for i in range(len(tokens)):
        path, j = [], i
        while j != -1:
            path.append(tokens[j])
            j = parents[j]
        rows.append(P_of(tuple(path[::-1])))
    path, nxt = P.verify_tree(torch.stack(rows), tokens, parents, qmap, g, greedy=False)
    out = [tokens[i] for i in path] + [nxt]
    if len(out) < 2:
        out.append(P.sample(P_of(tuple(out)), g))  # the next step would be plain decoding
    return tuple(out[:2])


@pytest.mark.parametrize("broken", [False, True])
def test_stochastic_tree_rule_preserves_the_distribution(broken, monkeypatch):
    V, N, k = 4, 12000, 2
    g = torch.Generator().manual_seed(1)
    ctx_p = {c: _rand_dist(g, V) for c in itertools.chain([()], itertools.product(range(V), repeat=1),
                                                          itertools.product(range(V), repeat=2))}
    ctx_q = {c: _rand_dist(g, V) for c in ctx_p}
    if broken:  # forget the residual update between siblings: a classic multi-draft mistake
        monkeypatch.setattr(P, "residual", lambda p, q: p)
    assert_first_two_tokens_follow_p(lambda: _two_level_trial(g, V, ctx_p.__getitem__, ctx_q.__getitem__, k),
                                     ctx_p, V, N, broken)


def assert_first_two_tokens_follow_p(trial, ctx_p, V: int, N: int, broken: bool) -> None:
    """Run `trial` (-> the first two emitted tokens) N times; chi-square vs p(a) p(b | a): a broken
    rule must be rejected (p < 1e-3), a correct one accepted."""
    counts = {}
    for _ in range(N):
        key = trial()
        counts[key] = counts.get(key, 0) + 1
    exact = {(a, b): float(ctx_p[()][a] * ctx_p[(a,)][b]) for a, b in itertools.product(range(V), repeat=2)}
    obs = np.array([counts.get(key, 0) for key in exact])
    expected = np.array(list(exact.values()))
    pval = chisquare(obs, expected / expected.sum() * N).pvalue
    assert (pval < 1e-3) if broken else (pval > 1e-3)


class TopKTree(Strategy):
    """Test drafter: a 2-level tree, `width` children per node from the draft (top-k if greedy,
    else without replacement from q), verified by the shared core in one target forward."""

    name = "topk_tree"

    def __init__(self, width=2, sampling=None):
        super().__init__(sampling)
        self.width = width

    def decode(self, state):
        s, draft, seq, rng = self.sampling, state.draft, state.seq, state.rng
        while not state.done:
            draft.reset()
            base = draft.forward(seq, last_only=True)
            tokens, parents, qmap = [], [], {}

            def children(logits):
                q = s.probs(logits)
                kids = torch.topk(logits, self.width).indices.tolist() if s.greedy else P.gumbel_top_k(q, self.width, rng)
                return q, kids

            qmap[-1], first = children(base)
            for a in first:
                tokens.append(a)
                parents.append(-1)
                i = len(tokens) - 1
                qmap[i], second = children(draft.forward([a], last_only=True))
                draft.rollback(1)
                for b in second:
                    tokens.append(b)
                    parents.append(i)
            state.emit(self.verify_tree_step(state, tokens, parents, qmap))


def test_tree_step_equals_greedy(tiny_target, tiny_selfdraft):
    from tests.test_lossless import PROMPTS

    for prompt in PROMPTS:
        ref = Greedy().generate(tiny_target, prompt, 40, torch.Generator()).tokens
        tr = TopKTree(width=2).generate(tiny_target, prompt, 40, torch.Generator(), draft=tiny_selfdraft)
        assert tr.tokens == ref
        assert 6 * (tr.verifications - 1) < tr.tree_nodes <= 6 * tr.verifications and tr.target_forwards == tr.verifications


def test_tree_step_preserves_distribution(small_models):
    target, draft = small_models
    sp = SamplingParams(temperature=1.0, top_k=3)
    s = TopKTree(width=2, sampling=sp)
    counts = {}
    for i in range(3000):
        toks = tuple(s.generate(target, PROMPT, STEPS, torch.Generator().manual_seed(i), draft=draft).tokens)
        counts[toks] = counts.get(toks, 0) + 1
    assert chi2_pvalue(counts, exact_joint(target, sp)) > 1e-3


def test_dyspec_and_rsd_tree_shapes(tiny_target, tiny_selfdraft):
    from strategies.dyspec import DySpec
    from strategies.rsd import RSD

    d = DySpec(draft=None, node_budget=7, max_children=3).generate(
        tiny_target, [5, 6, 7, 8], 24, torch.Generator(), draft=tiny_selfdraft)
    assert 7 * (d.verifications - 1) < d.tree_nodes <= 7 * d.verifications  # the budget is spent (the
    # last step counts only nodes that fit in the token budget)
    # one draft forward for the root + one per expanded node (the last popped nodes are not expanded)
    assert d.draft_forwards <= d.verifications * 7
    r = RSD(draft=None, branching=[3, 2], max_nodes=0).generate(
        tiny_target, [5, 6, 7, 8], 24, torch.Generator(), draft=tiny_selfdraft)
    assert 9 * (r.verifications - 1) < r.tree_nodes <= 9 * r.verifications and r.draft_forwards == 2 * r.verifications
    capped = RSD(draft=None, branching=[3, 2], max_nodes=5).generate(
        tiny_target, [5, 6, 7, 8], 24, torch.Generator(), draft=tiny_selfdraft)
    assert 5 * (capped.verifications - 1) < capped.tree_nodes <= 5 * capped.verifications
