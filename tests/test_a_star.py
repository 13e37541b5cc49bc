"""A*-decoding's paper mode on a hand-built search tree: the pop order, the selection step and
the fallback are checked against values computed by hand (f = g + h, h = 1 - r, g from the
doubts 1 - r along the path (mean by default, or sum), only the best of the k sampled successors
enters the frontier, the parent re-enters with that successor's f)."""

import pytest
import torch

from scorers.base import Scorer
from strategies.a_star import AStar
from strategies.core.base import SamplingParams
from strategies.core.search import Candidate
from tests.conftest import tiny_spec

# parent text -> the k continuations of its 1st, 2nd, ... expansion; a step ending in "." finishes
TREE = {
    "": [["A;", "B;"], ["E;", "F;"], ["I;", "J;"]],
    "A;": [["C;", "D;"]],
    "E;": [["G.", "H;"]],
}
WHOLE = {"": "Z."}  # what a fallback completion of a state samples
R = {"A;": .8, "B;": .4, "A;C;": .3, "A;D;": .5, "E;": .9, "F;": .1, "E;G.": .9, "E;H;": .6,
     "I;": .5, "J;": .7}


class ScriptedSearch:
    """Stands in for strategies.core.search.Search: scripted samples and scores."""

    def __init__(self, r=None):
        self.generated = self.prm_calls = 0
        self.times: dict[str, int] = {}
        self.r = R if r is None else r

    @staticmethod
    def _child(parent: Candidate, text: str) -> Candidate:
        done = text.endswith(".")
        return parent.child([ord(c) for c in text], text, done, done)

    def extend(self, parents, whole=False, stop_first=False):
        key = parents[0].text
        if whole:
            texts = [WHOLE[key]] * len(parents)
        else:
            n = self.times.get(key, 0)
            self.times[key] = n + 1
            texts = TREE[key][n]
            assert len(texts) == len(parents)
        out = [self._child(p, t) for p, t in zip(parents, texts)]
        self.generated += sum(len(t) for t in texts)
        return out

    def score(self, cands, last_only=False):
        assert last_only
        self.prm_calls += 1
        for c in cands:
            c.scores = c.scores[: len(c.steps) - 1] + [self.r[c.text]]
        return [c.scores[-1] for c in cands]


def test_paper_mode_pops_in_the_order_of_f_computed_by_hand():
    """g: mean (default): g = the mean doubt 1 - r over the path's prefixes, f = g + (1 - r)."""
    s = AStar(expansions=2, mode="paper", scorer=Scorer(), token_budget=10_000)
    choice = s.search(ScriptedSearch({**R, "E;G.": .95}))
    # by hand: root f = 0 + 1. Expand root: A g .2 f .4, B g .6 f 1.2 -> push A(.4), root(.4).
    # Pop A: AC g (.2+.7)/2 = .45 f 1.15, AD g .35 f .85 -> push AD(.85), A(.85).
    # Pop root(.4) (the search backs off): E g .1 f .2, F 1.8 -> push E(.2), root(.2).
    # Pop E: EG g (.1+.05)/2 = .075 f .125 (finished), EH g .25 f .65 -> push EG(.125), E(.125).
    # Pop EG(.125): finished -> the answer.
    assert [c.text for c in s.last_popped] == ["", "A;", "", "E;", "E;G."]
    assert s.last_order == pytest.approx([1.0, .4, .4, .2, .125])
    assert choice.candidate.text == "E;G."
    assert choice.extra["iterations"] == 4 and choice.extra["reexpanded"] == 1
    assert choice.n_candidates == 5  # root + one selected successor per expansion
    assert choice.extra["completed_after_budget"] == 0


def test_paper_mode_with_summed_g_pops_in_the_order_computed_by_hand():
    s = AStar(expansions=2, mode="paper", g="sum", scorer=Scorer(), token_budget=10_000)
    choice = s.search(ScriptedSearch(R))
    # by hand (g = accumulated doubt): root 1. A f .2 + .2 = .4, B 1.2 -> A(.4), root(.4).
    # Pop A: AC .9 + .7 = 1.6, AD .7 + .5 = 1.2 -> AD(1.2), A(1.2). Pop root(.4): E .2, F 1.8 ->
    # E(.2), root(.2). Pop E: EG .2 + .1 = .3 (finished), EH .5 + .4 = .9 -> EG(.3), E(.3).
    # Pop root(.2): I 1.0, J .6 -> J(.6), root(.6). Pop EG(.3): the answer.
    assert [c.text for c in s.last_popped] == ["", "A;", "", "E;", "", "E;G."]
    assert s.last_order == pytest.approx([1.0, .4, .4, .2, .2, .3])
    assert choice.candidate.text == "E;G." and choice.extra["reexpanded"] == 2


def test_a_summed_g_spends_the_budget_on_first_steps_and_the_mean_goes_deep():
    """Why g: mean is the default: with every step judged r = .8 and solutions finishing at depth
    3, f = g + h grows with depth under g: sum, so the search keeps re-sampling shallow states."""

    class Endless(ScriptedSearch):
        def extend(self, parents, whole=False, stop_first=False):
            self.generated += 2 * len(parents)
            out = []
            for j, p in enumerate(parents):
                n = self.times.get(p.text, 0)
                self.times[p.text] = n + 1
                text = f"{len(p.steps)}.{n}.{j}" + ("." if len(p.steps) == 2 or whole else ";")
                out.append(self._child(p, text))
            return out

        def score(self, cands, last_only=False):
            self.prm_calls += 1
            for c in cands:
                c.scores = c.scores[: len(c.steps) - 1] + [.8]
            return [.8] * len(cands)

    mean = AStar(expansions=2, mode="paper", scorer=Scorer(), max_iterations=30)
    done = mean.search(Endless())
    assert done.extra["iterations"] == 3 and done.extra["reexpanded"] == 0 and done.candidate.finished
    total = AStar(expansions=2, mode="paper", g="sum", scorer=Scorer(), max_iterations=30)
    stuck = total.search(Endless())
    assert stuck.extra["iterations"] == 30 and stuck.extra["reexpanded"] >= 10
    assert max(len(c.steps) for c in total.last_popped) <= 2  # never popped a finished (depth-3) state


def test_paper_mode_budget_fallback_completes_the_lowest_f_state():
    s = AStar(expansions=2, mode="paper", scorer=Scorer(), token_budget=10_000, max_iterations=2)
    search = ScriptedSearch()
    choice = s.search(search)
    # two expansions (root, A); the third pop (root, f .4) is over budget and goes back; nothing
    # finished, so the lowest-f frontier state (root .4 < AD 1.2) is completed: "Z."
    assert [c.text for c in s.last_popped] == ["", "A;", ""]
    assert choice.candidate.text == "Z." and choice.extra["completed_after_budget"] == 1
    assert search.prm_calls == 2


def test_paper_mode_drops_duplicate_samples():
    tree = {"": [["A;", "A;"], ["A;", "A;"]], "A;": [["X.", "X."]]}
    r = {"A;": .5, "A;X.": .9}

    class Dups(ScriptedSearch):
        def extend(self, parents, whole=False, stop_first=False):
            key = parents[0].text
            n = self.times.get(key, 0)
            self.times[key] = n + 1
            return [self._child(p, t) for p, t in zip(parents, tree[key][n])]

        def score(self, cands, last_only=False):
            self.prm_calls += 1
            for c in cands:
                c.scores = [r[c.text]]
            return [r[c.text] for c in cands]

    s = AStar(expansions=2, mode="paper", scorer=Scorer())
    choice = s.search(Dups())
    # root -> A (f 1.0; its duplicate dropped); tie at 1.0: A was pushed first -> pop A -> X. (f .5 + .2 = .7)
    assert [c.text for c in s.last_popped] == ["", "A;", "A;X."]
    assert choice.candidate.text == "A;X." and choice.n_candidates == 3


def test_paper_mode_on_a_real_model_stays_within_its_budgets():
    eng = tiny_spec("tiny-a-star", seed=0).load()

    class Rule(Scorer):
        def score(self, question, candidates):
            self.calls += 1
            return [[0.05 + 0.9 * ((sum(x.encode()) * 7) % 13) / 13 for x in steps] for steps in candidates]

    s = AStar(expansions=3, mode="paper", token_budget=60, sampling=SamplingParams(temperature=1.0),
              scorer=Rule(), max_step_tokens=4)
    tr = s.generate(eng, [72, 101, 108, 108, 111, 58, 32], 40, torch.Generator().manual_seed(5), messages="q")
    assert tr.extra["generated_tokens"] <= 60 + 3 * 4 + 40  # budget + one overshooting round + completion
    assert tr.extra["prm_calls"] <= tr.extra["iterations"] <= 60 // 3 + 1
    assert s.last_order[0] == 1.0


def test_mode_is_checked():
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="mode must be one of"):
        AStar(mode="astar", scorer=Scorer())
