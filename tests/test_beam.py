"""Beam search (strategies/beam.py) and Diverse Beam Search (strategies/diverse_beam.py).

- `beam` equals transformers' `generate(num_beams=B)` on a fp32 tiny model: the output and EVERY
  returned beam with its score, across beam widths, length penalties, early-stopping modes and an
  EOS that beams actually reach (so finishing, the top-w rule and the stopping heuristic run);
- `diverse_beam` with G = 1 is `beam`; with lambda = 0 its groups are independent copies;
- a 3-group hand-checkable case where the Hamming penalty provably changes each group's choice;
- the self-BLEU / distinct-n helpers on hand-computed cases.
"""

import json
import math

import pytest
import torch

from harness import metrics
from harness.errors import ConfigError
from strategies.beam import Beam
from strategies.diverse_beam import DiverseBeam


def _peer(model, prompt, B, n, lp, eos, early):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, num_beams=B,
                             num_return_sequences=B, length_penalty=lp, early_stopping=early, eos_token_id=eos,
                             pad_token_id=eos, return_dict_in_generate=True, output_scores=True)
    beams = []
    for row in out.sequences[:, len(prompt):].tolist():
        beams.append(row[:row.index(eos) + 1] if eos in row else row)
    return beams, out.sequences_scores.tolist()


def _greedy_token(model, prompt, at):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=at + 1, do_sample=False, pad_token_id=0)
    return int(out[0, len(prompt) + at])


CASES = [(B, n, lp, early) for B, n, lp, early in
         [(2, 8, 1.0, False), (3, 12, 0.0, False), (4, 16, 2.0, False), (3, 12, -0.5, False),
          (4, 12, 1.0, True), (3, 16, 1.0, "never"), (5, 10, 1.0, False)]]


@pytest.mark.parametrize("B,n,lp,early", CASES)
def test_beam_equals_transformers_beam_search(tiny_target, B, n, lp, early):
    model, eos_before = tiny_target.model, tiny_target.eos_ids
    checked_eos = 0
    try:
        for trial in range(4):
            g = torch.Generator().manual_seed(100 * B + trial)
            prompt = torch.randint(5, 250, (5 + trial,), generator=g).tolist()
            # an EOS the model actually emits early (the greedy 3rd token) on even trials, so beams
            # finish at different lengths; a token it never reaches on odd trials (budget ends it)
            eos = _greedy_token(model, prompt, 2) if trial % 2 == 0 else 259
            tiny_target.eos_ids = frozenset({eos})
            beams, scores = _peer(model, prompt, B, n, lp, eos, early)
            tr = Beam(beams=B, length_penalty=lp, early_stopping=early).generate(tiny_target, prompt, n,
                                                                                torch.Generator())
            # the same hypotheses with the same scores (order may differ only between float ties)
            ours = {tuple(c): s for c, s in zip(tr.candidates, tr.candidate_scores)}
            theirs = {tuple(c): s for c, s in zip(beams, scores)}
            assert ours.keys() == theirs.keys(), f"trial {trial}: the kept beams differ"
            assert all(abs(ours[c] - theirs[c]) < 1e-5 for c in ours), f"trial {trial}: beam scores differ"
            assert tr.tokens == beams[0] or abs(scores[0] - ours[tuple(tr.tokens)]) < 1e-5, \
                f"trial {trial}: output differs from transformers' best beam"
            checked_eos += tr.extra["eos_finishes"]
            assert tr.extra["beams"] == B and tr.target_forwards == tr.extra["beam_steps"] + 1
    finally:
        tiny_target.eos_ids = eos_before
    if B > 1:
        assert checked_eos > 0  # some beams ended in EOS: the finishing rules were exercised


def test_one_beam_is_greedy(tiny_target):
    from strategies.sampling import Sampling

    for seed in range(3):
        prompt = torch.randint(5, 250, (6,), generator=torch.Generator().manual_seed(seed)).tolist()
        greedy = Sampling({"temperature": 0}).generate(tiny_target, prompt, 15, torch.Generator()).tokens
        assert Beam(beams=1).generate(tiny_target, prompt, 15, torch.Generator()).tokens == greedy


def test_scores_match_transformers(tiny_target):
    """The finished hypotheses' normalised scores are transformers' sequences_scores."""
    prompt = [11, 42, 7, 99, 3]
    eos = _greedy_token(tiny_target.model, prompt, 2)
    before = tiny_target.eos_ids
    tiny_target.eos_ids = frozenset({eos})
    try:
        beams, scores = _peer(tiny_target.model, prompt, 4, 12, 1.0, eos, False)
        ours = Beam(beams=4).generate(tiny_target, prompt, 12, torch.Generator()).candidate_scores
    finally:
        tiny_target.eos_ids = before
    assert ours == pytest.approx(scores, abs=1e-4)


def test_diverse_beam_with_one_group_is_beam(tiny_target):
    for seed in range(4):
        prompt = torch.randint(5, 250, (6,), generator=torch.Generator().manual_seed(seed)).tolist()
        a = Beam(beams=4).generate(tiny_target, prompt, 14, torch.Generator())
        b = DiverseBeam(beams=4, groups=1, diversity=0.9).generate(tiny_target, prompt, 14, torch.Generator())
        assert a.tokens == b.tokens and a.candidates == b.candidates


def test_diverse_beam_without_penalty_repeats_groups(tiny_target):
    """lambda = 0: every group is the same w-beam search, so the groups' hypotheses repeat."""
    prompt = [17, 4, 200, 31, 9]
    one = Beam(beams=2).generate(tiny_target, prompt, 10, torch.Generator())
    three = DiverseBeam(beams=6, groups=3, diversity=0.0).generate(tiny_target, prompt, 10, torch.Generator())
    assert three.tokens == one.tokens
    assert three.candidates == [c for c in one.candidates for _ in range(3)]


def test_diverse_beam_penalty_separates_groups(tiny_target):
    """With lambda > 0 later groups leave the first group's tokens: more distinct first tokens."""
    prompt = [17, 4, 200, 31, 9]
    plain = DiverseBeam(beams=6, groups=3, diversity=0.0).generate(tiny_target, prompt, 10, torch.Generator())
    div = DiverseBeam(beams=6, groups=3, diversity=5.0).generate(tiny_target, prompt, 10, torch.Generator())
    assert len({c[0] for c in div.candidates}) > len({c[0] for c in plain.candidates})


# ------------------------------------------------------------------ a hand-checkable 3-group case
class _Table:
    """A fake engine whose next-token distribution is a fixed table of the last token: enough for
    the strategy (fork, select, step, counters, eos)."""

    def __init__(self, table, eos):
        self.table, self.eos_ids, self.forwards, self.tokens_fed = table, frozenset({eos}), 0, 0

    def reset(self):
        pass

    def counters(self):
        return self.forwards, self.tokens_fed

    def fork(self, prompt, suffixes):
        return _TableFork(self, [list(prompt) + list(s) for s in suffixes])


class _TableFork:
    def __init__(self, eng, seqs):
        self.eng, self.seqs = eng, seqs
        self.eng.forwards += 1
        self.logits = self._logits()

    def _logits(self):
        return torch.stack([torch.log(torch.tensor(self.eng.table[s[-1]], dtype=torch.float32)) for s in self.seqs])

    def select(self, rows):
        self.seqs = [list(self.seqs[r]) for r in rows]
        self.logits = self.logits[torch.as_tensor(rows)]

    def step(self, tokens):
        self.seqs = [s + [t] for s, t in zip(self.seqs, tokens)]
        self.eng.forwards += 1
        self.logits = self._logits()
        return self.logits


def test_hamming_penalty_changes_the_choice_by_hand():
    """V = 4 (token 3 = EOS). After the prompt p = (.5, .3, .15, .05); after any other token the
    model says EOS with certainty. Three groups of one beam, lambda = 1:
      group 1: log .5 = -0.69 -> token 0;
      group 2: token 0 scores -0.69 - 1 = -1.69 < log .3 = -1.20 -> token 1;
      group 3: tokens 0 and 1 are penalised once each: -1.69, -2.20 < log .15 = -1.90?  No:
               -1.69 > -1.90, so token 0 again (the penalty moved group 2 but not group 3).
    With lambda = 2: group 3 scores token 0 at -2.69, token 1 at -3.20, token 2 at -1.90 -> token 2.
    With lambda = 0 every group takes token 0."""
    eos = 3
    certain_eos = [1e-9, 1e-9, 1e-9, 1.0]
    table = {9: [0.5, 0.3, 0.15, 0.05], 0: certain_eos, 1: certain_eos, 2: certain_eos}

    def firsts(lam):
        eng = _Table(table, eos)
        tr = DiverseBeam(beams=3, groups=3, diversity=lam).generate(eng, [9], 5, torch.Generator())
        return sorted(c[0] for c in tr.candidates), tr

    assert firsts(0.0)[0] == [0, 0, 0]
    assert firsts(1.0)[0] == [0, 0, 1]
    got, tr = firsts(2.0)
    assert got == [0, 1, 2]
    assert tr.tokens == [0, eos]  # the output is still the most probable finished hypothesis
    # the stored scores are log-probabilities, not penalised: group 3's hypothesis keeps log .15
    assert sorted(tr.candidate_scores) == pytest.approx(sorted([math.log(x) / 2 for x in (0.5, 0.3, 0.15)]), abs=1e-5)


def test_bad_config():
    with pytest.raises(ConfigError):
        Beam(beams=4, groups=3)
    with pytest.raises(ConfigError):
        Beam(beams=4, sampling={"temperature": 1.0})
    with pytest.raises(ConfigError):
        DiverseBeam(diversity=-1)
    with pytest.raises(ConfigError):
        Beam(early_stopping="sometimes")


def test_diversity_metrics_by_hand():
    assert metrics.self_bleu(["a b c d e", "a b c d e"]) == pytest.approx(1.0)
    assert metrics.self_bleu(["a b c d", "w x y z"]) == 0.0
    assert math.isnan(metrics.self_bleu(["only one"]))
    assert metrics.distinct_n(["a b a", "a c"], 1) == pytest.approx(3 / 5)  # {a, b, c} of 5 words
    assert metrics.distinct_n(["a b a", "a b"], 2) == pytest.approx(2 / 3)  # {ab, ba} of 3 bigrams
    # one shared half: clipped unigram precision 2/4, bigram (1 + 1) / (3 + 1) ...
    b = metrics.sentence_bleu("a b c d", ["a b x y"])
    assert b == pytest.approx(math.exp((math.log(2 / 4) + math.log(2 / 4) + math.log(1 / 3) + math.log(1 / 2)) / 4))


def test_runner_rows_keep_every_beam_with_oracle_and_diversity(tmp_path):
    from harness.runner import run
    from harness.store import read_rows
    from tests.test_runner import cfg_for, run_dirs

    run(cfg_for(tmp_path, "strategy=diverse_beam", "task.limit=2", "run.max_new_tokens=8"))
    (d,) = run_dirs(tmp_path)
    rows = read_rows(d / "rows.jsonl")
    for r in rows:
        assert r["error"] is None and len(r["candidates"]) == 6 == len(r["candidate_quality"])
        assert r["output_text"] == r["candidates"][0] and r["candidate_scores"] == sorted(r["candidate_scores"],
                                                                                           reverse=True)
        assert r["oracle_quality"] == max(r["candidate_quality"]) >= r["quality"]
        assert set(r["diversity"]) == {"distinct_1", "distinct_2", "self_bleu"}
    summary = json.loads((d / "summary.json").read_text())
    assert "oracle_quality" in summary and "self_bleu" in summary
