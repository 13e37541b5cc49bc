"""A*-decoding's paper mode on a hand-built search tree: the pop order, the selection step and
the fallback are checked against values computed by hand (f = g + h, h = 1 - r, g = accumulated
1 - r, only the best of the k sampled successors enters the frontier, the parent re-enters with
that successor's f)."""

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

    def __init__(self):
        self.generated = self.prm_calls = 0
        self.times: dict[str, int] = {}

    @staticmethod
    def _child(parent: Candidate, text: str) -> Candidate:
        done = text.endswith(".")
        return parent.child([ord(c) for c in text], text, done, done, 0.0)

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
            c.scores = c.scores[: len(c.steps) - 1] + [R[c.text]]
        return [c.scores[-1] for c in cands]


def test_paper_mode_pops_in_the_order_of_f_computed_by_hand():
    s = AStar(expansions=2, mode="paper", scorer=Scorer(), token_budget=10_000)
    choice = s.search(ScriptedSearch())
    # by hand: root f = 0 + 1. Expand root: A f = 2(1-.8) = .4, B 1.2 -> push A(.4), root(.4).
    # Pop A: AC f = .2 + 2(.7) = 1.6, AD .2 + 2(.5) = 1.2 -> push AD(1.2), A(1.2).
    # Pop root(.4) (the search backs off): E f = 2(.1) = .2, F 1.8 -> push E(.2), root(.2).
    # Pop E: EG f = .1 + 2(.1) = .3 (finished), EH .1 + .8 = .9 -> push EG(.3), E(.3).
    # Pop root(.2): I 1.0, J .6 -> push J(.6), root(.6). Pop EG(.3): finished -> the answer.
    assert [c.text for c in s.last_popped] == ["", "A;", "", "E;", "", "E;G."]
    assert s.last_order == pytest.approx([1.0, .4, .4, .2, .2, .3])
    assert choice.candidate.text == "E;G."
    assert choice.extra["iterations"] == 5 and choice.extra["reexpanded"] == 2
    assert choice.n_candidates == 6  # root + one selected successor per expansion
    assert choice.extra["completed_after_budget"] == 0


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
