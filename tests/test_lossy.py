"""Lossy strategies: Entropy Adaptive Decoding (EAD) and Superposed Decoding, the engine's
embedding input path, and the n-gram model behind superposed decoding."""

import json
import math

import numpy as np
import pytest
import torch

from harness.errors import ConfigError
from harness.metrics import aggregate
from strategies.ead import EntropyAdaptive
from strategies.greedy import Greedy
from strategies.core.ngram import NGramLM, build_from_corpus, read_documents
from tools.build_ngram_lm import main as ngram_main
from strategies.superposed import Superposed
from tests.conftest import ROOT, tiny_spec
from tests.test_lossless import PROMPTS, load_strategy

GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"


def greedy(engine, prompt, n=40):
    return Greedy().generate(engine, prompt, n, torch.Generator().manual_seed(0)).tokens


# --------------------------------------------------------------------------- engine: embeddings in
def test_forward_embeds_equals_forward_ids(tiny_target):
    ids = PROMPTS[0]
    tiny_target.reset()
    ref = tiny_target.forward(ids)
    ref_next = tiny_target.forward([42, 7])
    f0 = tiny_target.forwards
    tiny_target.reset()
    got = tiny_target.forward(embeds=tiny_target.embed(ids))
    assert tiny_target.length == len(ids) and tiny_target.forwards == f0 + 1
    got_next = tiny_target.forward(embeds=tiny_target.embed([42, 7]))  # continues the same cache
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(got_next, ref_next, atol=2e-5, rtol=0)
    # mixing: ids after embeds, and a superposition of one token (weight 1) == that token
    tiny_target.reset()
    tiny_target.forward(ids)
    one = tiny_target.forward(embeds=1.0 * tiny_target.embed([42]).double(), last_only=True)
    torch.testing.assert_close(one, ref_next[0], atol=2e-5, rtol=0)
    assert tiny_target.embed([1, 2, 3]).shape == (3, tiny_target.model.config.hidden_size)


# --------------------------------------------------------------------------- EAD
@pytest.mark.parametrize("source", ["active", "small"])
def test_ead_extremes_are_the_two_greedy_models(source, tiny_target, tiny_draft):
    big = load_strategy("ead", ["strategy.tau=-1", f"strategy.entropy_source={source}"])
    small = load_strategy("ead", ["strategy.tau=1e9", f"strategy.entropy_source={source}"])
    for prompt in PROMPTS[:2]:
        tr = big.generate(tiny_target, prompt, 32, torch.Generator().manual_seed(0), draft=tiny_draft)
        assert tr.tokens == greedy(tiny_target, prompt, 32)  # all-large == the target's greedy
        assert tr.extra == {"large_tokens": 32, "small_tokens": 0, "switches": 1}
        assert tr.target_forwards == 32
        # 'active': the small model only saw the prompt; 'small': it follows from step d_min = 5 on
        assert tr.draft_forwards == (1 if source == "active" else 1 + 32 - 5)
        tr = small.generate(tiny_target, prompt, 32, torch.Generator().manual_seed(0), draft=tiny_draft)
        assert tr.tokens == greedy(tiny_draft, prompt, 32)  # all-small == the draft's greedy
        assert tr.extra == {"large_tokens": 0, "small_tokens": 32, "switches": 0}
        assert tr.target_forwards == 0 and tr.draft_forwards == 32
    assert greedy(tiny_target, PROMPTS[0]) != greedy(tiny_draft, PROMPTS[0])  # the extremes really differ


class Scripted:
    """A fake engine whose next-token distribution after consuming p tokens is uniform over
    2**bits[p - prompt_len] tokens (entropy = that many bits), argmax = its own token `emit`."""

    V = 32

    def __init__(self, emit, bits, prompt_len):
        self.emit, self.bits, self.P = emit, bits, prompt_len
        self.eos_ids = frozenset()
        self.forwards = self.tokens_fed = self.length = 0
        self.fed = []  # tokens per forward

    def reset(self):
        self.length = 0

    def counters(self):
        return self.forwards, self.tokens_fed

    def _row(self, consumed):
        m = 2 ** self.bits[consumed - self.P]
        row = torch.full((self.V,), -1e9)
        row[self.emit:self.emit + m] = 0.0
        row[self.emit] = 1e-6  # argmax
        return row

    def forward(self, ids, last_only=False):
        ids = list(ids)
        rows = torch.stack([self._row(self.length + i + 1) for i in range(len(ids))])
        self.length += len(ids)
        self.forwards += 1
        self.tokens_fed += len(ids)
        self.fed.append(len(ids))
        return rows[-1] if last_only else rows


def _ead_run(source, small_bits, large_bits, n=10, prompt_len=3):
    small, large = Scripted(1, small_bits, prompt_len), Scripted(8, large_bits, prompt_len)
    s = EntropyAdaptive(draft=None, tau=1.5, window=3, min_tokens=2, entropy_source=source)
    tr = s.generate(large, [0] * prompt_len, n, torch.Generator().manual_seed(0), draft=small)
    return "".join("L" if t == 8 else "S" for t in tr.tokens), tr, small, large


def test_ead_rolling_window_rule_active_entropy():
    """tau 1.5, window 3, d_min 2; the small model is sure for 3 steps then unsure (4 bits), the
    large model always sure (0 bits). Hand trace of eq. 4 (H = active model's entropy):
    t0-3 small, windows [0] [0,0] [0,0,0] [0,0,4]=1.33; t4 [0,4,4]=2.67 > 1.5 -> large;
    t5 [4,4,0], c=1 < d_min: stay; t6 [4,0,0]=1.33 -> small (catches up on t4,t5 in one forward);
    t7 [0,0,4], c=1: stay; t8 [0,4,4] -> large (catches up on t6,t7); t9 c=1: stay."""
    src, tr, small, large = _ead_run("active", [0, 0, 0] + [4] * 8, [0] * 11)
    assert src == "SSSSLLSSLL"
    assert tr.extra == {"large_tokens": 4, "small_tokens": 6, "switches": 3}
    assert small.fed == [3, 1, 1, 1, 1, 2, 1, 1]  # prefill, t1-t4, catch-up of 2 tokens, t7, t8
    assert large.fed == [3 + 4, 1, 1, 2, 1]  # prompt + t0-t3 in one forward, t5, t6, catch-up, t9
    assert (tr.draft_forwards, tr.target_forwards) == (8, 5)


def test_ead_rolling_window_rule_small_entropy():
    """Same thresholds; H is always the SMALL model's entropy (the large model's, 4 bits, is
    ignored). t4 -> large; t5 c=1: no small forward at all; t6 the small model catches up on
    t4,t5 (entropies of positions 5, 6 = 4, 4) -> stay large; t7 [4,4,0]; t8 [4,0,0]=1.33 -> small
    (its logits are already there: no extra forward)."""
    src, tr, small, large = _ead_run("small", [0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0], [4] * 11)
    assert src == "SSSSLLLLSS"
    assert tr.extra == {"large_tokens": 4, "small_tokens": 6, "switches": 2}
    assert small.fed == [3, 1, 1, 1, 1, 2, 1, 1, 1]
    assert large.fed == [3 + 4, 1, 1, 1]
    # the 'active' reading on the same models never leaves the large model (its entropy is 4 bits)
    assert _ead_run("active", [0, 0, 0, 4, 4, 4, 4, 0, 0, 0, 0], [4] * 11)[0] == "SSSSLLLLLL"


def test_ead_bad_config():
    for kw in ({"window": 0}, {"min_tokens": -1}, {"entropy_source": "large"}):
        with pytest.raises(ConfigError):
            EntropyAdaptive(draft=None, **kw)


def test_large_share_in_summary():
    rows = [{"example_id": "a", "quality": 1.0, "new_tokens": 10, "wall_s": 1.0, "target_forwards": 3,
             "extra": {"large_tokens": 3, "small_tokens": 7, "switches": 2}},
            {"example_id": "b", "quality": 0.0, "new_tokens": 30, "wall_s": 1.0, "target_forwards": 3,
             "extra": {"large_tokens": 15, "small_tokens": 15, "switches": 1}}]
    assert aggregate(rows)["large_share"] == pytest.approx(18 / 40)
    assert "large_share" not in aggregate([{**rows[0], "extra": {}}])


# --------------------------------------------------------------------------- n-gram model
def _hand_lm():
    # documents [1 2 3 1 2 4] and [1 2 3]; n-grams never cross documents (no "4 1")
    return NGramLM.build([[1, 2, 3, 1, 2, 4], [1, 2, 3]], vocab_size=6, max_order=4)


def test_ngram_interpolation_hand_checked(tmp_path):
    lm = _hand_lm()
    w, u = (0.1, 0.2, 0.3), 0.4  # orders 2, 3, 4; unigram (count + 1) / (9 + 6)
    # context [3 1 2]: p2(.|2) = {3: 2/3, 4: 1/3}; p3(.|1 2) = {3: 2/3, 4: 1/3}; p4(.|3 1 2) = {4: 1}
    p = lm.prob([3, 1, 2], [3, 4, 5], w, u)
    np.testing.assert_allclose(p, [0.1 * 2 / 3 + 0.2 * 2 / 3 + 0.4 * 3 / 15,
                                   0.1 / 3 + 0.2 / 3 + 0.3 + 0.4 * 2 / 15,
                                   0.4 * 1 / 15], rtol=1e-12)
    # unseen contexts drop their order's weight: [5 5 2] sees only the bigram context [2]
    np.testing.assert_allclose(lm.prob([5, 5, 2], [3], w, u), [(0.1 * 2 / 3 + 0.4 * 3 / 15) / 0.5], rtol=1e-12)
    # "4" ends a document: no bigram context; only the unigram remains
    np.testing.assert_allclose(lm.prob([4], [1], w, u), [4 / 15], rtol=1e-12)
    for ctx in ([3, 1, 2], [5, 5, 2], [], [2, 3]):  # a proper distribution for every context
        assert lm.prob(ctx, range(6), w, u).sum() == pytest.approx(1.0, abs=1e-12)
    lm.save(tmp_path / "lm.npz")
    again = NGramLM.load(tmp_path / "lm.npz")
    np.testing.assert_array_equal(again.prob([3, 1, 2], range(6), w, u), lm.prob([3, 1, 2], range(6), w, u))
    assert again.meta["tokens"] == 9 and again.meta["documents"] == 2


def test_ngram_weighted_sum_hand_checked():
    """Superposed Decoding's own n-gram score: the raw weighted sum of the seen orders, no unigram."""
    lm = _hand_lm()
    w = (0.1, 0.2, 0.3)
    np.testing.assert_allclose(lm.weighted_sum([3, 1, 2], [3, 4, 5], w),
                               [0.1 * 2 / 3 + 0.2 * 2 / 3, 0.1 / 3 + 0.2 / 3 + 0.3, 0.0], rtol=1e-12)
    np.testing.assert_allclose(lm.weighted_sum([5, 5, 2], [3], w), [0.1 * 2 / 3], rtol=1e-12)  # not renormalised
    assert lm.weighted_sum([4], [1, 2], w).tolist() == [0.0, 0.0]  # no seen order: no evidence at all


def test_superposed_paper_increments_hand_checked():
    """scoring=paper on a hand-built case: top-m renormalisation, -inf for unseen continuations,
    the penalty when no candidate has n-gram evidence."""
    lm = _hand_lm()
    s = Superposed(corpus=str(GSM8K), top_tokens=3, alpha=0.5, ngram_weights=(0.1, 0.2, 0.3), penalty=7.0,
                   lm_temperature=1.0)
    logp = torch.log(torch.tensor([0.05, 0.04, 0.11, 0.4, 0.3, 0.1], dtype=torch.float64))
    ids, inc = s._increments(logp, lm, [3, 1, 2])
    assert ids == [3, 4, 2]  # the top 3 of p_LM
    lp = torch.log(torch.tensor([0.4, 0.3, 0.11], dtype=torch.float64) / 0.81)
    g = lm.weighted_sum([3, 1, 2], ids, (0.1, 0.2, 0.3))
    assert inc[0] == pytest.approx(0.5 * float(lp[0]) + 0.5 * math.log(g[0]))
    assert inc[1] == pytest.approx(0.5 * float(lp[1]) + 0.5 * math.log(g[1]))
    assert inc[2] == -math.inf  # "1 2" was never followed by token 2 or 5: dropped
    ids, inc = s._increments(logp, lm, [4])  # "4" ends a document: no order has its context
    np.testing.assert_allclose(inc.numpy(), 0.5 * lp.numpy() - 7.0, rtol=1e-12)
    interp = Superposed(corpus=str(GSM8K), top_tokens=3, alpha=0.5, ngram_weights=(0.1, 0.2, 0.3), scoring="interpolated")
    _, inc_i = interp._increments(logp, lm, [3, 1, 2])
    assert bool(torch.isfinite(inc_i).all())  # the earlier variant backs off to the unigram instead


def test_ngram_cli_builds_from_jsonl(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps({"q": t, "n": 1}) for t in ["abcab", "abd"]) + "\n")
    assert read_documents(corpus, ["q"]) == ["abcab", "abd"]
    assert ngram_main(["build", "--corpus", str(corpus), "--tokenizer-model", "tiny_random",
                       "--out", str(tmp_path / "lm.npz"), "--fields", "q"]) == 0
    lm = NGramLM.load(tmp_path / "lm.npz")
    assert lm.vocab_size == 260 and lm.meta["tokens"] == 8
    p2, seen = lm.order_probs(list(b"xa"), list(b"bcd"))  # after "a": b twice, never c or d
    assert seen[0] and not seen[1] and p2[0].tolist() == [1.0, 0.0, 0.0]


# --------------------------------------------------------------------------- superposed decoding
@pytest.fixture(scope="module")
def gsm8k_lm(tiny_target):
    """An n-gram model of GSM8K test text (questions + solutions) in the tiny model's byte tokenizer."""
    return build_from_corpus(GSM8K, tiny_target.encode, tiny_target.vocabulary_fingerprint(),
                             max(tiny_target.vocab_entries, tiny_target.vocab_size), ["question", "answer"], 6)


def _superposed(lm, **kw):
    s = Superposed(corpus=str(GSM8K), **kw)
    s._lm = (lm.meta["vocabulary"], lm) if lm is not None else None
    return s


def test_superposed_one_draft_without_ngram_is_greedy(tiny_target):
    s = load_strategy("superposed", ["strategy.k=1", "strategy.alpha=0"])
    for prompt in PROMPTS:
        tr = s.generate(tiny_target, prompt, 40, torch.Generator().manual_seed(0))
        assert tr.tokens == greedy(tiny_target, prompt)
        assert tr.candidates == [tr.tokens] and tr.target_forwards == 40


def test_superposed_one_forward_per_step_k_distinct_drafts(tiny_target, gsm8k_lm):
    s = _superposed(gsm8k_lm, k=3)
    for prompt in PROMPTS[:2]:
        tr = s.generate(tiny_target, prompt, 30, torch.Generator().manual_seed(0))
        assert tr.target_forwards == tr.extra["superposed_steps"] + 1 == 30  # prefill + one per step
        assert tr.target_tokens_fed == len(prompt) + 29
        assert len(tr.candidates) == 3 and len({tuple(c) for c in tr.candidates}) == 3
        assert tr.tokens == tr.candidates[0] and all(len(c) == 30 for c in tr.candidates)


def _step_scores(scoring, logits, ctx, lm, s, a):
    """What each scoring gives the LM's top 9 tokens, written out independently of the strategy."""
    if scoring == "interpolated":
        logp = torch.log_softmax(logits.double(), -1)
        lp, ids = torch.topk(logp, 9)
        return ids, (1 - a) * lp.numpy() + a * np.log(lm.prob(ctx, ids.tolist(), s.ngram_weights, s.unigram_weight))
    lp, ids = torch.topk(torch.softmax(logits.double() / 0.06, -1), 9)
    lp = np.log((lp / lp.sum()).numpy())
    g = lm.weighted_sum(ctx, ids.tolist(), s.ngram_weights)
    if not (g > 0).any():
        return ids, (1 - a) * lp - 200.0
    with np.errstate(divide="ignore"):
        return ids, (1 - a) * lp + a * np.log(g)


@pytest.mark.parametrize("scoring", ["paper", "interpolated"])
def test_superposed_scores_mix_lm_and_own_ngram(tiny_target, gsm8k_lm, scoring):
    """k = 1: the superposition is the draft itself, so each step's LM distribution is the plain
    forward's; every kept token (the first included under "paper") must maximise the scoring's
    combination of p_LM and p_ngram over the LM's top 9; and the two scorings differ on this path."""
    a = 0.54
    s = _superposed(gsm8k_lm, k=1, alpha=a, scoring=scoring)
    other = "interpolated" if scoring == "paper" else "paper"
    prompt = list(b"Natalia sold clips to 48 of her friends in April, and then she sold half as many")
    tr = s.generate(tiny_target, prompt, 16, torch.Generator().manual_seed(0))
    differs, disagree = 0, 0
    for i in range(0 if scoring == "paper" else 1, 16):
        tiny_target.reset()
        logits = tiny_target.forward(prompt + tr.tokens[:i], last_only=True)
        ctx = (prompt + tr.tokens[:i])[-5:]
        ids, score = _step_scores(scoring, logits, ctx, gsm8k_lm, s, a)
        assert tr.tokens[i] == ids[int(np.argmax(score))]
        differs += tr.tokens[i] != ids[0]
        ids_o, score_o = _step_scores(other, logits, ctx, gsm8k_lm, s, a)
        disagree += int(ids_o[int(np.argmax(score_o))]) != tr.tokens[i]
    assert differs > 0  # the n-gram changed some choices away from the LM's argmax
    assert disagree > 0  # the scorings are not interchangeable on this path


def test_superposed_finished_drafts_stop_extending(tiny_target, gsm8k_lm):
    eng = tiny_spec("tiny-eos", seed=0).load()
    plain = _superposed(gsm8k_lm, k=3).generate(eng, PROMPTS[0], 30, torch.Generator().manual_seed(0))
    eos = plain.candidates[0][5]  # a token the drafts do emit: make it the EOS
    eng.eos_ids = frozenset({eos})
    tr = _superposed(gsm8k_lm, k=3).generate(eng, PROMPTS[0], 30, torch.Generator().manual_seed(0))
    for c in tr.candidates:
        assert eos not in c[:-1] and (c[-1] == eos or len(c) == 30)
    assert any(c[-1] == eos for c in tr.candidates)
    assert tr.finish == ("eos" if tr.tokens[-1] == eos else "length")


def test_superposed_sampling_is_seeded(tiny_target, gsm8k_lm):
    s = _superposed(gsm8k_lm, k=3, sampling={"temperature": 1.0, "top_p": 0.9})
    a = s.generate(tiny_target, PROMPTS[1], 20, torch.Generator().manual_seed(1))
    b = s.generate(tiny_target, PROMPTS[1], 20, torch.Generator().manual_seed(1))
    c = s.generate(tiny_target, PROMPTS[1], 20, torch.Generator().manual_seed(2))
    assert a.candidates == b.candidates and a.candidates != c.candidates


def test_superposed_bad_config(tmp_path):
    for kw in ({"k": 0}, {"alpha": 1.5}, {"top_tokens": 0}, {"ngram_weights": [0.1, -0.1]},
               {"unigram_weight": 0.0}, {"scoring": "nope"}, {"lm_temperature": 0.0}, {"penalty": -1.0}):
        with pytest.raises(ConfigError):
            Superposed(corpus=str(GSM8K), **kw)
    with pytest.raises(ConfigError, match="exactly one"):
        Superposed()
    with pytest.raises(ConfigError, match="not found"):
        Superposed(ngram_path=str(tmp_path / "missing.npz"))
    assert math.isclose(sum(Superposed(corpus=str(GSM8K)).ngram_weights), 0.5)


def test_superposed_rows_carry_every_draft(tmp_path, monkeypatch):
    from tests.test_runner import cfg_for, run_dirs
    from harness.runner import run
    from harness.store import read_rows

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    run(cfg_for(tmp_path, "task.limit=2", "strategy=superposed", "run.max_new_tokens=8"))
    (d,) = run_dirs(tmp_path)
    rows = read_rows(d / "rows.jsonl")
    assert all(r["error"] is None and len(r["candidates"]) == 3 and r["candidates"][0] == r["output_text"]
               for r in rows)
    assert list((tmp_path / "cache" / "ngram").glob("*.npz"))  # counted once, cached
