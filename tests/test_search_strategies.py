"""Test-time search strategies (issue #6): the candidate each algorithm MUST return on small
hand-checked cases, with a deterministic fake scorer and fake answer functions.

Two kinds of policies:
- `Scripted`: a StepSampler stand-in (monkeypatched into strategies.core.search) whose next step is a
  fixed function of the parent's text, the sibling index and the call number, so the search
  tree, its scores and the right answer are known by hand;
- the tiny random model (tests/conftest.py, byte tokenizer) through the real StepSampler, with a
  spy recording every batched `extend` call, to check invariants and honest counters.
"""

from __future__ import annotations

import re
import zlib

import pytest
import torch

import strategies.core.search as search
from harness.errors import ConfigError
from scorers.base import Scorer
from strategies.a_star import AStar
from strategies.core.base import SamplingParams
from strategies.best_of_n import BestOfN
from strategies.dvts import DVTS
from strategies.ffs import FirstFinishSearch
from strategies.icn import TEMPLATE, InContextNavigation, navigation_messages
from strategies.infalign_bon import InfAlignBoN, calibrated, win_count
from strategies.particle_filtering import ParticleFiltering, particle_weights
from strategies.prm_beam_search import PRMBeamSearch
from strategies.core.search import Candidate, StepSampler, vote
from strategies.self_consistency import SelfConsistency
from tests.conftest import tiny_spec

EOS = 256
T1 = {"temperature": 1.0}
PROMPT = [72, 105, 58, 32]


# ---------------------------------------------------------------------------------- fakes
def hash_score(text: str) -> float:
    return (zlib.crc32(text.encode()) % 997) / 997


class FakeScorer(Scorer):
    """Deterministic: a step's score is table[prefix text] (prefix = the steps so far, joined),
    else `default(prefix)`. One `calls` per score/score_last call."""

    name = "fake"

    def __init__(self, table=None, default=hash_score):
        super().__init__()
        self.table, self.default = dict(table or {}), default

    def value(self, prefix: str) -> float:
        return self.table[prefix] if prefix in self.table else self.default(prefix)

    def score(self, question, candidates):
        self.calls += 1
        out = []
        for steps in candidates:
            out.append([self.value("".join(steps[: j + 1])) for j in range(len(steps))])
            self.tokens += sum(len(s) for s in steps)
        return out


class Scripted(StepSampler):
    """extend(): each parent's child step is rule(parent_text, sibling_k, row, call, whole); a
    step ending in '$' ends with EOS. Tokens are the step's bytes (+ EOS). Records every call."""

    def __init__(self, rule):
        self.rule, self.calls, self.generated = rule, [], 0

    def extend(self, prompt_ids, parents, rng, max_new_tokens, whole=False, stop_first=False):
        self.calls.append({"prompt": list(prompt_ids), "parents": [p.text for p in parents], "whole": whole,
                           "stop_first": stop_first})
        seen: dict[str, int] = {}
        out = []
        for row, p in enumerate(parents):
            k = seen[p.text] = seen.get(p.text, -1) + 1
            text = self.rule(p.text, k, row, len(self.calls) - 1, whole)
            eos = text.endswith("$")
            toks = list(text.encode()) + ([EOS] if eos else [])
            self.generated += len(toks)
            out.append(p.child(toks, text, eos, eos))
        return out


def use_script(monkeypatch, rule) -> list[Scripted]:
    made: list[Scripted] = []

    def factory(engine, sampling, max_step_tokens=256):
        made.append(Scripted(rule))
        return made[-1]

    monkeypatch.setattr(search, "StepSampler", factory)
    return made


def use_spy(monkeypatch) -> list[list[dict]]:
    """The real StepSampler, recording (parents, kids, whole) of every extend call."""
    log: list[list[dict]] = []

    class Spy(StepSampler):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            log.append([])

        def extend(self, prompt_ids, parents, rng, max_new_tokens, whole=False, stop_first=False):
            kids = super().extend(prompt_ids, parents, rng, max_new_tokens, whole, stop_first)
            log[-1].append({"parents": list(parents), "kids": kids, "whole": whole})
            return kids

    monkeypatch.setattr(search, "StepSampler", Spy)
    return log


def tree(table: dict[str, list[str]]):
    """A rule from {parent text: [child step for sibling 0, 1, ...]} (siblings cycle)."""
    return lambda parent, k, row, call, whole: table[parent][k % len(table[parent])]


def run(strategy, target, max_new_tokens=64, seed=0, messages=None):
    g = torch.Generator().manual_seed(seed)
    return strategy.generate(target, PROMPT, max_new_tokens, g, messages=messages)


def out_text(trace) -> str:
    return bytes(t for t in trace.tokens if t < 256).decode()


def expected_value(k: Candidate, score=hash_score) -> float:
    """What the strategies should see as a kid's value (aggregate "last"): the score of its last
    non-blank step (a blank step, i.e. EOS alone, is not scored); 0 without one."""
    for j in range(len(k.texts) - 1, -1, -1):
        if k.texts[j].strip():
            return score("".join(k.texts[: j + 1]))
    return 0.0


def answer_functions(s, pattern=r"ans=(\d)"):
    s.extract_answer = lambda text: (m.group(1) if (m := re.search(pattern, text)) else None)
    s.same_answer = lambda a, b: a == b


# ---------------------------------------------------------------------------------- PRM beam search
def test_beam_search_keeps_top_beams_and_returns_best_finished(monkeypatch, tiny_target):
    scorer = FakeScorer({"a;": .1, "b;": .9, "c;": .5, "d;": .7,
                         "b;x$": .3, "b;y;": .8, "d;u;": .6, "d;v$": .95})
    made = use_script(monkeypatch, tree({"": ["a;", "b;", "c;", "d;"], "b;": ["x$", "y;"], "d;": ["u;", "v$"]}))
    s = PRMBeamSearch(n=4, beam_width=2, scorer=scorer)
    tr = run(s, tiny_target)
    calls = made[0].calls
    assert [c["parents"] for c in calls] == [[""] * 4, ["b;", "b;", "d;", "d;"]]  # top 2 of round 1, M each
    assert out_text(tr) == "d;v$" and tr.tokens[-1] == EOS  # 2 = N/M finished: stop; best finished
    assert tr.extra["rounds"] == 2 and tr.extra["finished"] == 2 and tr.extra["candidates"] == 8
    assert tr.extra["prm_calls"] == 2 and tr.extra["generated_tokens"] == made[0].generated


def test_beam_search_ties_and_duplicates(monkeypatch, tiny_target):
    # round 1: "a;" twice (counts once), c/d/f tie at .5 -> the earlier rows c, d are kept
    scorer = FakeScorer({"a;": .9, "c;": .5, "d;": .5, "f;": .5, "e;": .1}, default=lambda t: .7)
    made = use_script(monkeypatch, tree({"": ["a;", "a;", "c;", "d;", "f;", "e;"], "a;": ["1$", "2$"],
                                         "c;": ["3$", "4$"], "d;": ["5$", "6$"]}))
    tr = run(PRMBeamSearch(n=6, beam_width=2, scorer=scorer), tiny_target)
    assert made[0].calls[1]["parents"] == ["a;", "a;", "c;", "c;", "d;", "d;"]
    assert out_text(tr) == "a;1$"  # every finished solution scores .7: the earliest finished wins


def test_beam_search_completes_best_beam_when_nothing_finishes(monkeypatch, tiny_target):
    scorer = FakeScorer({"a;": .2, "b;": .6})
    made = use_script(monkeypatch, lambda p, k, row, call, whole: ("rest$" if whole else ["a;", "b;"][k % 2]))
    tr = run(PRMBeamSearch(n=2, beam_width=2, max_rounds=1, scorer=scorer), tiny_target)
    last = made[0].calls[-1]
    assert last["whole"] and last["parents"] == ["b;"] and out_text(tr) == "b;rest$"
    assert tr.extra["completed_after_budget"] == 1 and tr.extra["finished"] == 0


def test_beam_search_on_tiny_model_follows_scores(monkeypatch, tiny_target):
    """Real batched sampling: every round is one extend call whose parents are the previous
    round's top N/M unfinished kids (by the fake scorer), each repeated M times."""
    log = use_spy(monkeypatch)
    s = PRMBeamSearch(n=6, beam_width=3, max_step_tokens=4, scorer=FakeScorer(), sampling=T1)
    tr = run(s, tiny_target, max_new_tokens=16)
    calls = log[0]
    assert len(calls) == tr.extra["rounds"] >= 2 and tr.extra["completed_after_budget"] == 0
    for prev, cur in zip(calls, calls[1:]):
        ranked, seen = [], set()
        for i, k in enumerate(prev["kids"]):
            if not k.finished and tuple(k.tokens) not in seen:
                seen.add(tuple(k.tokens))
                ranked.append((-expected_value(k), i, k))
        top = [k for _, _, k in sorted(ranked, key=lambda e: e[:2])[:2]]
        assert [p.tokens for p in cur["parents"]] == [k.tokens for k in top for _ in range(3)]
    gen = sum(len(k.tokens) - len(p.tokens) for c in calls for p, k in zip(c["parents"], c["kids"]))
    assert tr.extra["generated_tokens"] == gen
    done = [k for c in calls for k in c["kids"] if k.finished]
    best = max(range(len(done)), key=lambda i: (expected_value(done[i]), -i))
    assert tr.tokens == done[best].tokens[: len(tr.tokens)]


def test_beam_search_config_errors():
    with pytest.raises(ConfigError, match="multiple of beam_width"):
        PRMBeamSearch(n=6, beam_width=4, scorer=FakeScorer())
    with pytest.raises(ConfigError, match="needs a scorer"):
        PRMBeamSearch(n=4, beam_width=2)


# ---------------------------------------------------------------------------------- DVTS
DVTS_TREE = {"": ["a;", "b;", "c;", "d;"], "b;": ["x$", "y$"], "c;": ["u;", "v;"], "c;u;": ["p$", "q$"]}
DVTS_SCORES = {"a;": .3, "b;": .4, "c;": .9, "d;": .8, "b;x$": .5, "b;y$": .7, "c;u;": .2, "c;v;": .1,
               "c;u;p$": .6, "c;u;q$": .6}


def test_dvts_subtrees_keep_their_own_best_child(monkeypatch, tiny_target):
    made = use_script(monkeypatch, tree(DVTS_TREE))
    tr = run(DVTS(n=4, beam_width=2, scorer=FakeScorer(DVTS_SCORES)), tiny_target)
    calls = made[0].calls
    # subtree 0 keeps b (.4) although c and d (subtree 1) both score higher: no cross-subtree pruning
    assert [c["parents"] for c in calls] == [[""] * 4, ["b;", "b;", "c;", "c;"], ["c;u;", "c;u;"]]
    assert out_text(tr) == "b;y$"  # finished subtrees: b;y$ (.7) vs c;u;p$ (.6, tie with q$: row 0)
    assert tr.extra["rounds"] == 3 and tr.extra["finished"] == 2 and tr.extra["candidates"] == 10


def test_dvts_differs_from_beam_search_on_the_same_tree(monkeypatch, tiny_target):
    made = use_script(monkeypatch, tree({**DVTS_TREE, "d;": ["w$", "z$"]}))
    run(PRMBeamSearch(n=4, beam_width=2, scorer=FakeScorer(DVTS_SCORES)), tiny_target)
    assert made[0].calls[1]["parents"] == ["c;", "c;", "d;", "d;"]  # global top 2


def test_dvts_weighted_vote(monkeypatch, tiny_target):
    table = {"": ["p7$", "x$", "q5$", "y$", "r5$", "z$"]}
    scores = {"p7$": .9, "q5$": .6, "r5$": .5, "x$": .1, "y$": .1, "z$": .1}
    for final, want in (("best", "p7$"), ("weighted_vote", "q5$")):  # class 5: .6 + .5 > class 7: .9
        use_script(monkeypatch, tree(table))
        s = DVTS(n=6, beam_width=2, final=final, scorer=FakeScorer(scores))
        answer_functions(s, r"(\d)\$")
        tr = run(s, tiny_target)
        assert out_text(tr) == want and tr.extra["finished"] == 3


def test_dvts_weighted_vote_needs_answers():
    class NoVotes:
        name, votes = "plain", False

    with pytest.raises(ConfigError, match="weighted_vote"):
        DVTS(n=4, beam_width=2, final="weighted_vote", scorer=FakeScorer()).bind_task(NoVotes())
    with pytest.raises(ConfigError, match="final must be"):
        DVTS(n=4, beam_width=2, final="vote", scorer=FakeScorer())


# ---------------------------------------------------------------------------------- particle filtering
def test_particle_weights_by_hand():
    assert particle_weights([.5, .75]).tolist() == pytest.approx([.25, .75])  # odds 1 : 3
    assert particle_weights([.5, .75], temperature=.5).tolist() == pytest.approx([.1, .9])  # odds^2
    assert particle_weights([.2, .3], "proportional").tolist() == pytest.approx([.4, .6])
    w = particle_weights([0.0, .5, 0.0, .9])
    assert w[0] == 0 and w[2] == 0 and float(w.sum()) == pytest.approx(1)
    assert particle_weights([0.0, 0.0], "proportional").tolist() == [.5, .5]  # all zero: uniform
    assert particle_weights([1.0, .5]).tolist()[0] > .99  # 1 is clipped, not an error


def test_resampling_follows_weights():
    s = ParticleFiltering(n=4, weighting="proportional", scorer=FakeScorer())
    scores = [.25] * 1000 + [.75] * 1000 + [0.0] * 1000
    idx = s.resample(scores, torch.Generator().manual_seed(0))
    assert len(idx) == 3000 and idx == sorted(idx)
    first = sum(i < 1000 for i in idx)
    assert abs(first - 750) < 5 * (3000 * .25 * .75) ** .5  # expected 3000 x .25
    assert all(i < 2000 for i in idx)  # weight 0: never drawn


def test_particle_filtering_zero_scored_particles_vanish(monkeypatch, tiny_target):
    def rule(parent, k, row, call, whole):
        return ["a;", "b;", "c;", "d;"][k] if parent == "" else f"{k}$"

    made = use_script(monkeypatch, rule)
    scorer = FakeScorer({"a;": 0.0, "b;": .6, "c;": 0.0, "d;": .3},
                        default=lambda t: .8 if t.startswith("b") else .4)
    tr = run(ParticleFiltering(n=4, scorer=scorer), tiny_target)
    parents = made[0].calls[1]["parents"]
    assert len(parents) == 4 and set(parents) <= {"b;", "d;"} and parents == sorted(parents)
    want = "b;0$" if "b;" in parents else "d;0$"  # all b-children score .8 > .4: the first b child
    assert out_text(tr) == want
    assert tr.extra["resamples"] == 1 and tr.extra["finished"] == 4
    assert tr.extra["resample_unique"] == len(set(parents)) and tr.extra["resample_dropped"] == 4 - len(set(parents))


def test_particle_filtering_on_tiny_model(monkeypatch, tiny_target):
    """Real sampling: zero-scored particles never become parents; kids come from one extend per round."""
    log = use_spy(monkeypatch)
    zero = lambda t: 0.0 if zlib.crc32(t.encode()) % 2 else .5 + hash_score(t) / 2  # noqa: E731
    tr = run(ParticleFiltering(n=6, max_step_tokens=3, scorer=FakeScorer(default=zero), sampling=T1),
             tiny_target, max_new_tokens=12)
    calls, checked = log[0], 0
    assert len(calls) == tr.extra["rounds"] >= 2
    for prev, cur in zip(calls, calls[1:]):
        ok = {tuple(k.tokens) for k in prev["kids"] if not k.finished and expected_value(k, zero) > 0}
        assert cur["parents"]
        if ok:  # (all weights 0 would mean uniform resampling)
            assert all(tuple(p.tokens) in ok for p in cur["parents"])
            checked += 1
    assert checked
    gen = sum(len(k.tokens) - len(p.tokens) for c in calls for p, k in zip(c["parents"], c["kids"]))
    assert tr.extra["generated_tokens"] == gen


# ---------------------------------------------------------------------------------- FFS
@pytest.fixture(scope="module")
def eos_model():
    """A tiny model whose EOS logit is large in some states: samples end at different lengths."""
    e = tiny_spec("tiny-eos", seed=0).load()
    with torch.no_grad():
        w = e.model.lm_head.weight
        w[EOS] = w[65] * 10
    return e


def full_rows(engine, n, seed, max_new_tokens, temperature=1.0):
    engine.reset()
    return StepSampler(engine, SamplingParams(temperature=temperature)).extend(
        PROMPT, [Candidate()] * n, torch.Generator().manual_seed(seed), max_new_tokens, whole=True)


def test_ffs_returns_the_first_finisher(eos_model):
    n, budget, checked = 6, 40, 0
    for seed in range(10):
        rows = full_rows(eos_model, n, seed, budget)  # the same draws, every row run to its end
        ends = [len(r.tokens) if r.eos else None for r in rows]
        if not any(ends):
            continue
        L = min(e for e in ends if e)
        first = ends.index(L)
        g = torch.Generator().manual_seed(seed)
        tr = FirstFinishSearch(n=n, sampling=T1).generate(eos_model, PROMPT, budget, g)
        assert tr.tokens == rows[first].tokens and tr.finish == "eos"
        assert tr.extra["generated_tokens"] == n * L and tr.extra["ffs_length"] == L  # n x the shortest
        assert tr.extra["ffs_ties"] == ends.count(L) and tr.extra["ffs_none_finished"] == 0
        checked += first > 0
        if checked and seed >= 2:
            break
    assert checked, "no seed whose first finisher is a later row: the test would not discriminate"


def test_ffs_tie_and_no_finisher(eos_model):
    greedy = full_rows(eos_model, 1, 0, 40, temperature=0.0)[0]
    assert greedy.eos
    L = len(greedy.tokens)
    assert L >= 2
    tr = FirstFinishSearch(n=3).generate(eos_model, PROMPT, 40, torch.Generator().manual_seed(0))
    assert tr.extra["ffs_ties"] == 3 and tr.tokens == greedy.tokens  # identical rows: row 0
    tr = FirstFinishSearch(n=3).generate(eos_model, PROMPT, L - 1, torch.Generator().manual_seed(0))
    assert tr.extra["ffs_none_finished"] == 1 and tr.tokens == greedy.tokens[: L - 1]
    assert tr.extra["generated_tokens"] == 3 * (L - 1)


# ---------------------------------------------------------------------------------- InfAlign
def test_calibrated_reward_and_wins_by_hand():
    calib = [.1, .5, .5, .7]
    assert calibrated([.5, .2, .9, .05], calib) == [.75, .25, 1.0, 0.0]  # ties count as <=
    assert win_count(.5, calib) == 2.0 and win_count(.9, calib) == 4.0 and win_count(.05, calib) == 0.0


@pytest.mark.parametrize("mode,cands,want", [
    ("best", [.5, .2, .9], 2),
    ("best", [.6, .65, .3], 1),     # r_c tie (.75, .75): the higher raw reward
    ("worst", [.5, .2, .9], 1),
    ("worst", [.08, .05, .9], 1),   # r_c tie (0, 0): the lower raw reward
])
def test_infalign_pick(monkeypatch, tiny_target, mode, cands, want):
    calib = [.1, .5, .5, .7]
    texts = [f"r{i}$" for i in range(7)]
    made = use_script(monkeypatch, lambda p, k, row, call, whole: texts[row])
    s = InfAlignBoN(n=3, calibration=4, mode=mode, t=2.0, scorer=FakeScorer(dict(zip(texts, cands + calib))))
    tr = run(s, tiny_target)
    (call,) = made[0].calls
    assert call["whole"] and len(call["parents"]) == 7  # candidates + calibration: one batch
    assert out_text(tr) == texts[want]
    rc = calibrated([cands[want]], calib)[0]
    assert tr.extra["infalign_rc"] == rc and tr.extra["win_trials"] == 4
    assert tr.extra["infalign_wins"] == win_count(cands[want], calib)
    assert tr.extra["infalign_phi"] == pytest.approx((1 if mode == "best" else -1) * 2.718281828 ** (2 * rc))


# ---------------------------------------------------------------------------------- ICN
MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]


@pytest.mark.parametrize("round2,want,votes", [
    (["ans=5$", "ans=4$", "ans=4$", "ans=6$"], "ans=4$", 3),   # 4 wins 3 : 2; first sample of class 4
    (["ans=4$", "ans=3$", "ans=4$", "ans=5$"], "ans=3$", 3),   # 3 and 4 tie 3 : 3: earliest sample (row 0)
])
def test_icn_reprompts_with_explored_answers_and_votes(monkeypatch, tiny_target, round2, want, votes):
    rounds = [["ans=3$", "ans=4$", "ans=3$", "none$"], round2]
    made = use_script(monkeypatch, lambda p, k, row, call, whole: rounds[call][row])
    s = InContextNavigation(n=4, rounds=2)
    answer_functions(s)
    tr = run(s, tiny_target, messages=MSGS)
    c1, c2 = made[0].calls
    assert c1["prompt"] == PROMPT and c1["whole"] and c2["whole"]
    shown = bytes(t for t in c2["prompt"] if t < 256).decode()
    note = TEMPLATE.format(answers="3, 4")
    assert note == "Answers already explored: 3, 4. Give a solution that reaches a different answer."
    assert c2["prompt"] == tiny_target.render(navigation_messages(MSGS, ["3", "4"]))
    assert "What is 2+2?\n\n" + note in shown
    assert out_text(tr) == want and tr.extra["winning_votes"] == votes
    assert tr.extra["icn_distinct_round1"] == 2 and tr.extra["candidates"] == 8
    assert MSGS[1]["content"] == "What is 2+2?"  # the task's messages are not modified


def test_icn_without_answers_reuses_the_prompt(monkeypatch, tiny_target):
    made = use_script(monkeypatch, lambda p, k, row, call, whole: "no answer$")
    s = InContextNavigation(n=2, rounds=3)
    answer_functions(s)
    tr = run(s, tiny_target, messages=MSGS)
    assert [c["prompt"] for c in made[0].calls] == [PROMPT] * 3 and out_text(tr) == "no answer$"
    assert tr.extra["icn_distinct"] == 0


# ---------------------------------------------------------------------------------- the lead's strategies
def test_vote_ties_go_to_the_earliest_sample():
    assert vote([("a", [1, 3]), ("b", [0, 2])]) == 1
    assert vote([("a", [0]), ("b", [1, 2])]) == 1
    assert vote([("a", [0, 3]), ("b", [1, 2])], [.1, .3, .3, .5]) == 0  # weights .6 vs .6: tie -> earliest
    assert vote([("a", [0, 3]), ("b", [1, 2])], [.1, .3, .3, .4]) == 1  # .5 vs .6
    assert vote([]) is None


def test_self_consistency_tie_and_best_of_n_tie(monkeypatch, tiny_target):
    texts = ["none$", "ans=2$", "ans=1$", "ans=1$", "ans=2$"]
    use_script(monkeypatch, lambda p, k, row, call, whole: texts[row])
    s = SelfConsistency(n=5)
    answer_functions(s)
    tr = run(s, tiny_target)
    assert out_text(tr) == "ans=2$" and tr.extra["winning_votes"] == 2  # 2 : 2, class "2" holds sample 1
    use_script(monkeypatch, lambda p, k, row, call, whole: texts[row])
    tr = run(BestOfN(n=5, scorer=FakeScorer(default=lambda t: .5)), tiny_target)
    assert out_text(tr) == "none$"  # all equal: the earliest


def test_a_star_uniform_cost_pops_in_order_and_respects_budgets(monkeypatch, tiny_target):
    """h_weight = 0 (uniform-cost search): f = g never decreases along a path and the frontier's
    minimum is popped, so the popped f values are non-decreasing. (With h_weight > 0 the
    heuristic is not consistent, so that order is not guaranteed.) Budgets: an expansion starts
    only below the token and scorer budgets."""
    log = use_spy(monkeypatch)
    s = AStar(expansions=3, mode="nll", h_weight=0.0, token_budget=60, prm_budget=0, max_iterations=50, max_step_tokens=4,
              scorer=FakeScorer(), sampling=T1)
    tr = run(s, tiny_target, max_new_tokens=16)
    order = s.last_order
    assert len(order) >= 3 and all(a <= b + 1e-12 for a, b in zip(order, order[1:]))
    steps = [c for c in log[0] if not c["whole"]]
    before = 0
    for c in steps:
        assert before < 60  # the budget check happens before each expansion
        before += sum(len(k.tokens) - len(p.tokens) for p, k in zip(c["parents"], c["kids"]))
    assert tr.extra["generated_tokens"] <= 60 - 1 + 3 * 4 + 16
    assert tr.extra["iterations"] == len(steps)
    log.clear()
    s = AStar(expansions=2, mode="nll", h_weight=1.0, token_budget=10_000, prm_budget=3, max_step_tokens=4,
              scorer=FakeScorer(), sampling=T1)
    tr = run(s, tiny_target, max_new_tokens=40)
    assert tr.extra["prm_calls"] <= 3
