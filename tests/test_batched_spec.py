"""Batched speculative decoding over the engine fork (#18 item 6, SmartSpec under load)."""

from __future__ import annotations

import pytest
import torch

from strategies.core.batched_spec import FixedK, GoodputRule, batched_speculative, common_prefix
from strategies.greedy import Greedy
from tests.conftest import tiny_spec

PROMPTS = [list(b"Q: 12 + 7 = ? A:"), list(b"Q: the cat sat on the"), list(b"Q: count 1 2 3 4"),
           list(b"Q: abcabcabc"), list(b"Q: x")]


def greedy(engine, prompt, n):
    return Greedy().generate(engine, prompt, n, torch.Generator().manual_seed(0)).tokens


@pytest.fixture(scope="module")
def models():
    return tiny_spec("bt-target", seed=0).load(), tiny_spec("bt-draft", seed=3).load()


def test_fork_feed_and_drop_match_single_sequences(models):
    """Variable-length feeds and dropped tails: each row's logits equal its sequence fed alone."""
    target, _ = models
    prompt = list(b"Q: shared ")
    tails = [list(b"a"), list(b"bcd"), list(b"ef")]
    f = target.fork(prompt, tails)
    adds = [list(b"xyz"), list(b"q"), list(b"rs")]
    out = f.feed(adds)
    f.drop_last(0, 2)  # row 0 forgets "yz"
    f.drop_last(2, 1)  # row 2 forgets "s"
    nxt = f.step([ord("k"), ord("l"), ord("m")])
    seqs = [prompt + tails[0] + list(b"x") + [ord("k")], prompt + tails[1] + adds[1] + [ord("l")],
            prompt + tails[2] + list(b"r") + [ord("m")]]
    for r, s in enumerate(seqs):
        target.reset()
        want = target.forward(s, last_only=True)
        torch.testing.assert_close(nxt[r], want, atol=1e-4, rtol=1e-4)
    target.reset()  # the block's right-aligned logits: row 1 after "q"
    torch.testing.assert_close(out[1, -1], target.forward(prompt + tails[1] + adds[1], last_only=True),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("draft_kind", ["perfect", "other"])
@pytest.mark.parametrize("k", [0, 1, 4])
def test_batched_speculative_is_greedy_per_row(models, draft_kind, k):
    target, other = models
    draft = tiny_spec("bt-target", seed=0).load() if draft_kind == "perfect" else other
    res = batched_speculative(target, draft, PROMPTS, 24, FixedK(k))
    for p, toks in zip(PROMPTS, res.tokens):
        assert toks == greedy(target, p, 24)
    acc = sum(s["accepted"] for s in res.steps)
    if k and draft_kind == "perfect":  # every draft accepted: deep accepted paths exercised
        assert acc == sum(s["K"] * s["B"] for s in res.steps) > 0
        assert res.target_forwards < 24  # fewer batched verifications than tokens
    if k == 0:  # prefix prefill + the rows' prompt remainders, then one batched forward per token
        assert res.target_forwards == 2 + 23 and res.draft_forwards == 2


def test_rows_leave_the_batch_at_eos(models):
    target, other = models
    plain = [greedy(target, p, 20) for p in PROMPTS]
    eng = tiny_spec("bt-target", seed=0).load()
    eos = plain[1][6]  # a token row 1 emits: make it the EOS
    eng.eos_ids = frozenset({eos})
    res = batched_speculative(eng, other, PROMPTS, 20, FixedK(3))
    for p, toks in zip(PROMPTS, res.tokens):
        assert toks == greedy(eng, p, 20)
    assert any(t[-1] == eos and len(t) < 20 for t in res.tokens)
    assert res.steps[0]["B"] == 5 and res.steps[-1]["B"] < 5  # the batch shrank


def test_goodput_rule_shortens_k_under_load(models):
    """A step-time table where verification cost grows with rows x tokens: the rule picks long K
    for one request and K = 0 for many; decoding stays greedy either way."""
    t_target = {1: {1: 0.010, 2: 0.010, 5: 0.010, 9: 0.011}, 5: {1: 0.012, 2: 0.020, 5: 0.045, 9: 0.080}}
    rule = GoodputRule(t_target, {1: 0.002, 5: 0.003}, k_max=8)
    # unmeasured lengths are read between their measured neighbours (L = 4 between 2 and 5)
    assert rule.step_time(5, 3) == pytest.approx(3 * 0.003 + 0.020 + (0.045 - 0.020) * 2 / 3)
    assert rule.step_time(3, 0) == pytest.approx((0.010 + 0.012) / 2)  # and loads between theirs
    assert rule(1, [0.8]) >= 4
    assert rule(5, [0.5] * 5) == 0
    assert rule(5, [0.999] * 5) > 0  # perfect acceptance still pays
    target, other = models
    res = batched_speculative(target, other, PROMPTS, 16, rule)
    for p, toks in zip(PROMPTS, res.tokens):
        assert toks == greedy(target, p, 16)
    assert 0 in res.k_histogram


def test_common_prefix():
    assert common_prefix([[1, 2, 3], [1, 2, 4, 5]]) == 2
    assert common_prefix([[1, 2], [1, 2, 3]]) == 1  # every prompt keeps one token of its own
    assert common_prefix([[1], [2]]) == 0


def test_pooled_estimate_is_one_number_and_stays_greedy(models):
    target, other = models
    seen = []

    def rule(B, alphas):
        seen.append(list(alphas))
        return 2

    res = batched_speculative(target, other, PROMPTS, 12, rule, prior_accept=0.7, prior_weight=8, pooled=True)
    for p, toks in zip(PROMPTS, res.tokens):
        assert toks == greedy(target, p, 12)
    assert seen[0] == [0.7] * 5 and all(len(set(a)) == 1 for a in seen)
    acc, dr = sum(s["accepted"] for s in res.steps[:-1]), sum(s["K"] * s["B"] for s in res.steps[:-1])
    assert seen[-1][0] == pytest.approx((acc + 0.7 * 8) / (dr + 8))
