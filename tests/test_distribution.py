"""Samplers and lossless strategies at T>0 reproduce the target distribution (tiny vocabulary).

The exact distribution of the first three generated tokens is enumerated from the target's
(processed) probabilities; the strategy's empirical distribution over many seeded runs is
compared by a chi-square test. A deliberately wrong acceptance rule must fail the same test,
so the test has the power to catch one.
"""

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from strategies.core import probs as P
from strategies.core.base import SamplingParams
from strategies.pld import PromptLookup
from strategies.sampling import Sampling
from strategies.dyspec import DySpec
from strategies.rsd import RSD
from strategies.smartspec import SmartSpec
from strategies.specdec_pp_confidence import SpecDecPP
from strategies.spectr import SpecTr
from strategies.speculative import Speculative

V, STEPS, N = 4, 3, 3000
PROMPT = [1, 2, 3, 0, 1, 2, 3, 1]


@pytest.fixture(scope="module")
def small(small_models):
    return small_models



def exact_joint(engine, sp: SamplingParams) -> dict:
    out = {}
    for seq in itertools.product(range(V), repeat=STEPS):
        engine.reset()
        logits = engine.forward(PROMPT + list(seq[:-1]))[len(PROMPT) - 1:]  # [STEPS, V]
        probs = sp.probs(logits)
        out[seq] = float(np.prod([probs[i, t] for i, t in enumerate(seq)]))
    return out


def empirical(strategy, target, draft=None, n=N) -> dict:
    counts = {}
    for i in range(n):
        toks = tuple(strategy.generate(target, PROMPT, STEPS, torch.Generator().manual_seed(i), draft=draft).tokens)
        counts[toks] = counts.get(toks, 0) + 1
    return counts


def chi2_pvalue(counts: dict, exact: dict) -> float:
    if any(exact.get(k, 0.0) == 0.0 for k in counts):
        return 0.0  # sampled a sequence the target can never produce
    keys = sorted(exact, key=exact.get, reverse=True)
    obs, exp, o_acc, e_acc = [], [], 0, 0.0
    for k in keys:  # merge the rare tail so every expected count is >= 5
        o_acc += counts.get(k, 0)
        e_acc += exact[k] * N
        if e_acc >= 5:
            obs.append(o_acc)
            exp.append(e_acc)
            o_acc, e_acc = 0, 0.0
    if e_acc:
        obs[-1] += o_acc
        exp[-1] += e_acc
    assert len(obs) >= 8, "too few outcomes for a powerful test: use a flatter model"
    exp = np.array(exp) * sum(obs) / sum(exp)
    return float(chisquare(obs, exp).pvalue)


SAMPLERS = [SamplingParams(temperature=1.0), SamplingParams(temperature=0.7, top_k=3),
            SamplingParams(temperature=1.3, top_p=0.8), SamplingParams(temperature=1.0, min_p=0.2)]


@pytest.mark.parametrize("sp", SAMPLERS, ids=lambda s: f"T{s.temperature}-k{s.top_k}-p{s.top_p}-m{s.min_p}")
def test_sampling_matches_processed_target(sp, small):
    target, _ = small
    assert chi2_pvalue(empirical(Sampling(sp), target), exact_joint(target, sp)) > 1e-3


@pytest.mark.parametrize("make", [lambda sp: Speculative(draft=None, k=2, sampling=sp),
                                  lambda sp: PromptLookup(k=2, sampling=sp),
                                  lambda sp: RSD(draft=None, branching=[2, 2], sampling=sp),
                                  lambda sp: DySpec(draft=None, node_budget=4, max_children=2, expand_batch=2, sampling=sp),
                                  lambda sp: SpecTr(draft=None, num_drafts=3, draft_len=2, sampling=sp),
                                  lambda sp: SmartSpec(draft=None, k_max=3, sampling=sp, step_model={
                                      "target_a": 1.0, "target_b": 0.05, "draft_token_s": 0.1})],
                         ids=["speculative", "pld", "rsd", "dyspec", "spectr", "smartspec"])
def test_lossless_strategy_preserves_distribution(make, small):
    _check_distribution(make, small)


def test_specdec_pp_confidence_preserves_distribution(small):
    _check_distribution(lambda sp: SpecDecPP(draft=None, threshold=0.5, k_min=1, k_max=2, sampling=sp), small)


def _check_distribution(make, small):
    target, draft = small
    sp = SamplingParams(temperature=1.0, top_k=3)
    s = make(sp)
    counts = empirical(s, target, draft if not isinstance(s, PromptLookup) else None)
    assert chi2_pvalue(counts, exact_joint(target, sp)) > 1e-3


def test_wrong_rule_is_detected(small, monkeypatch):
    """Accepting every draft (q instead of p) must fail the same test: the test has power."""
    target, draft = small
    sp = SamplingParams(temperature=1.0, top_k=3)
    monkeypatch.setattr(P, "accept_draft", lambda p, q, x, rng: True)
    counts = empirical(Speculative(draft=None, k=2, sampling=sp), target, draft)
    assert chi2_pvalue(counts, exact_joint(target, sp)) < 1e-3


@pytest.mark.parametrize("k", [2, 4])
def test_kseq_selection_rule_exact(k):
    """SpecTr's k-sequential selection alone: the emitted token is distributed as p, for rho*."""
    g = torch.Generator().manual_seed(k)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.1, 0.6, 0.1, 0.2])
    rho = P.kseq_rho(p, q, k)
    assert 1.0 <= rho <= k
    counts, n = np.zeros(4), 20000
    for _ in range(n):
        cands = torch.multinomial(q, k, replacement=True, generator=g).tolist()
        i, left = P.kseq_select(p, q, cands, rho, g)
        counts[cands[i] if i is not None else P.sample(left, g)] += 1
    assert chisquare(counts, p.numpy() * n).pvalue > 1e-3


def test_verify_chain_rule_exact():
    """The accept/resample rule alone: the first emitted token is distributed as p."""
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.1, 0.6, 0.1, 0.2])
    counts = np.zeros(4)
    n = 20000
    for _ in range(n):
        x = int(torch.multinomial(q, 1, generator=g))
        k, nxt = P.verify_chain(torch.stack([p, p]), q[None], [x], g, greedy=False)
        counts[x if k == 1 else nxt] += 1
    assert chisquare(counts, p.numpy() * n).pvalue > 1e-3
