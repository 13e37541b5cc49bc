"""exact_extract and copy_constrained (strategies/exact_extract.py, strategies/copy_constrained.py)
on tiny models: exact_extract returns what a brute-force scorer returns (every span scored by its
own full forward); copy_constrained never emits text absent from the sources."""

import math

import pytest
import torch

from harness.decoding import Prompt
from harness.errors import ConfigError
from strategies.exact_extract import ExactExtract, word_spans

SOURCES = ["The Eiffel Tower, in Paris.", "It opened in 1889 for the fair", "Gustave Eiffel"]


def brute_force(engine, prompt, sources, max_words, normalize, end=True):
    """Every candidate span scored by one plain forward over prompt + span (no sharing)."""
    model, eos = engine.model, sorted(engine.eos_ids)
    best = {}
    for src in sources:
        for ends in word_spans(src, max_words):
            for s, e in ends:
                t = src[s:e]
                ids = engine.encode(t)
                with torch.no_grad():
                    lp = torch.log_softmax(model(torch.tensor([prompt + ids])).logits[0].float(), -1)
                P = len(prompt)
                score = sum(float(lp[P - 1 + j, ids[j]]) for j in range(len(ids)))
                if end:
                    score += float(torch.logsumexp(lp[P - 1 + len(ids), eos], -1))
                best[t] = score / (len(ids) + end) if normalize else score
    return best


def test_word_spans_by_hand():
    text = "St. Louis, MO"
    spans = [[text[s:e] for s, e in ends] for ends in word_spans(text, 3)]
    assert spans == [["St", "St. Louis"], ["Louis", "Louis, MO"], ["MO"]]


@pytest.mark.parametrize("normalize", [False, True])
def test_exact_extract_equals_brute_force(tiny_target, normalize):
    prompt = [5, 17, 42, 99, 3, 250]
    ref = brute_force(tiny_target, prompt, SOURCES, 4, normalize)
    strat = ExactExtract(max_words=4, length_normalize=normalize, keep=len(ref), batch=7)
    tr = strat.generate(tiny_target, Prompt(prompt, context=SOURCES), 64, torch.Generator())
    want = max(ref, key=ref.get)
    assert tiny_target.decode(tr.tokens) == want
    assert tr.extra["spans"] == len(ref)
    got = {tiny_target.decode(c): s for c, s in zip(tr.candidates, tr.candidate_scores)}
    assert got.keys() == ref.keys()
    assert all(abs(got[t] - ref[t]) < 1e-4 for t in ref)
    # shared rows: far fewer rows than spans (spans with one start share a row)
    assert tr.extra["rows_scored"] < tr.extra["spans"]
    assert tr.target_forwards == 1 + math.ceil(tr.extra["rows_scored"] / 7)


def test_exact_extract_needs_a_context(tiny_target):
    with pytest.raises(ConfigError):
        ExactExtract().generate(tiny_target, [1, 2, 3], 8, torch.Generator())
    with pytest.raises(ConfigError):
        ExactExtract(sampling={"temperature": 1.0})


# ------------------------------------------------------------------ copy_constrained
from strategies.copy_constrained import CopyConstrained  # noqa: E402


def _pieces(text: str, sources: list[str], k: int) -> bool:
    """Whether `text` is the concatenation of at most k substrings of the ' '-prefixed sources."""
    srcs = [" " + s for s in sources]
    best = {0: 0}  # chars covered -> fewest pieces
    for i in range(len(text)):
        if i not in best:
            continue
        for j in range(i + 1, len(text) + 1):
            if any(text[i:j] in s for s in srcs):
                best[j] = min(best.get(j, 1 << 30), best[i] + 1)
    return best.get(len(text), 1 << 30) <= k


@pytest.mark.parametrize("max_spans", [1, 2, 3])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_copy_constrained_never_leaves_the_sources(tiny_target, max_spans, temperature):
    changed = 0
    for seed in range(6):
        g = torch.Generator().manual_seed(seed)
        prompt = torch.randint(5, 250, (6,), generator=g).tolist()
        strat = CopyConstrained(max_spans=max_spans, sampling={"temperature": temperature})
        tr = strat.generate(tiny_target, Prompt(prompt, context=SOURCES), 24, torch.Generator().manual_seed(seed))
        text = tiny_target.decode(tr.tokens)
        assert text and _pieces(text, SOURCES, max_spans), f"seed {seed}: {text!r} is not {max_spans} copied span(s)"
        assert tr.extra["spans"] <= max_spans
        changed += tr.extra["changed"]
    assert changed > 0  # the random model's own choices leave the sources: the constraint acted


def test_copy_constrained_uses_the_nbest_when_no_context(tiny_target):
    nbest = ["show flights to boston", "show flight to austin"]
    tr = CopyConstrained(max_spans=4).generate(tiny_target, Prompt([3, 4, 5], nbest=nbest), 30, torch.Generator())
    assert _pieces(tiny_target.decode(tr.tokens), nbest, 4)


def test_pieces_checker_can_fail():
    assert _pieces(" Paris.", SOURCES, 1) and not _pieces(" Paris opened", SOURCES, 1)
    assert _pieces(" Paris opened", SOURCES, 2) and not _pieces("zebra", SOURCES, 5)


def test_copy_constrained_bad_input(tiny_target):
    with pytest.raises(ConfigError):
        CopyConstrained(max_spans=0)
    with pytest.raises(ConfigError):
        CopyConstrained().generate(tiny_target, [1, 2], 8, torch.Generator())
