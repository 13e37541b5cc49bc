"""Stop strings (`task.prompting.stop`, lm-eval's `until`): decoding ends at the token that
completes the first stop string, the text is cut before it, lossless methods stop where greedy
stops, batched search rows end there, bad values are refused before models load, and a config
without stop strings keeps its identity."""

import random

import pytest
import torch
from omegaconf import OmegaConf

from harness.decoding import Prompt, cut_text, stop_index
from harness.errors import ConfigError
from harness.models import ByteTokenizer
from harness.runner import config_hash, run
from harness.store import read_rows
from strategies.greedy import Greedy
from tests.helpers import cfg_for, run_dirs
from tests.test_lossless import PROMPTS, load_strategy, lossless_cases

PROMPT = PROMPTS[1]


def _stop_in(tokens, decode, lo=6):
    """A stop string taken from the text of two (else one) tokens from tokens[lo:] on (printable,
    so it decodes alone) and the index of the token that first completes it in `tokens`."""
    for n in (2, 1):
        for i in range(lo, len(tokens) - n + 1):
            s = decode(tokens[i:i + n])
            if len(s) == n and s.isprintable() and "\ufffd" not in s:
                return s, stop_index(decode, tokens, (s,))
    raise AssertionError("no printable pair of tokens in the reference output")


def test_cut_text_and_stop_index():
    assert cut_text("abc Question: x Q", ("Question:", " x")) == "abc "  # the earliest of the stop strings
    assert cut_text("abc x Question:", ("Question:", " x")) == "abc"
    assert cut_text("abc", ("z",)) == "abc" and cut_text("abc", ()) == "abc"
    dec = lambda ids: "".join(chr(97 + i) for i in ids)  # noqa: E731
    rnd = random.Random(0)
    for _ in range(200):  # bisection == the first prefix that holds a stop string
        toks = [rnd.randrange(4) for _ in range(rnd.randrange(1, 30))]
        stops = ["".join(rnd.choice("abcd") for _ in range(rnd.randrange(1, 4))) for _ in range(2)]
        linear = next((i for i in range(len(toks)) if any(s in dec(toks[:i + 1]) for s in stops)), None)
        assert stop_index(dec, toks, stops) == linear


def test_greedy_stops_at_the_token_that_completes_the_stop(peaked_target):
    t = peaked_target
    ref = Greedy().generate(t, PROMPT, 48, torch.Generator().manual_seed(0))
    stop, j = _stop_in(ref.tokens, t.decode)
    tr = Greedy().generate(t, Prompt(PROMPT, stop=(stop,)), 48, torch.Generator().manual_seed(0))
    assert tr.tokens == ref.tokens[: j + 1] and tr.finish == "stop"
    assert tr.target_forwards == j + 1  # it stopped there, not cut after running to the budget
    text = t.decode(tr.tokens)
    assert stop in text and stop not in t.decode(tr.tokens[:-1])
    assert cut_text(text, (stop,)) == text[: text.index(stop)]
    none = Greedy().generate(t, Prompt(PROMPT, stop=("\x00never\x00",)), 48, torch.Generator().manual_seed(0))
    assert none.tokens == ref.tokens and none.finish == ref.finish


LOSSLESS = sorted({name for name, _, _ in lossless_cases()})


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_methods_stop_where_greedy_stops(name, peaked_target, peaked_twin):
    """With the perfect draft (deep accepted paths), the stop falls inside an accepted run: the
    method must stop at greedy's token, keep its counters consistent, and stop early."""
    t = peaked_target
    s = load_strategy(name, ["strategy.sampling.temperature=0"] if name != "greedy" else [])
    if hasattr(s, "k"):
        s.k = 4
    if hasattr(s, "step_model"):
        s.step_model = {"target_a": 1.0, "target_b": 0.0, "draft_token_s": 0.0}
    draft = peaked_twin if s.draft is not None else None
    for prompt in PROMPTS:
        ref = Greedy().generate(t, prompt, 48, torch.Generator().manual_seed(0))
        stop, j = _stop_in(ref.tokens, t.decode, lo=len(ref.tokens) // 3)
        full = s.generate(t, prompt, 48, torch.Generator().manual_seed(0), draft=draft)
        tr = s.generate(t, Prompt(prompt, stop=(stop,)), 48, torch.Generator().manual_seed(0), draft=draft)
        assert tr.tokens == ref.tokens[: j + 1], f"{name} did not stop at greedy's token"
        assert tr.finish == "stop"
        assert sum(tr.accept_hist.values()) == tr.verifications
        assert sum(k * v for k, v in tr.accept_hist.items()) == tr.accepted <= len(tr.tokens)
        assert tr.target_forwards <= full.target_forwards
        if j + 1 < len(ref.tokens) // 2:
            assert tr.target_forwards < full.target_forwards, f"{name} ran past the stop string"


def test_batched_search_rows_end_at_a_stop(tiny_target):
    """StepSampler (best-of-N, self-consistency, PRM search): a row whose text reaches a stop
    string ends there, as at EOS; the others run on to the budget."""
    from strategies.core.base import SamplingParams
    from strategies.core.search import Candidate, StepSampler

    t = tiny_target
    stops = tuple("abcdefghijklmnopqrstuvwxyz")
    sampler = StepSampler(t, SamplingParams(temperature=1.0))
    sampler.stops = stops
    out = sampler.extend(PROMPT, [Candidate()] * 8, torch.Generator().manual_seed(0), 40, whole=True)
    ended = 0
    for c in out:
        toks = c.tokens
        j = stop_index(t.decode, toks, stops)
        if j is None:
            assert len(toks) == 40 or c.eos
        else:
            ended += 1
            assert j == len(toks) - 1 and c.eos and c.finished  # ended at the token completing it
            assert not any(s in c.text for s in stops)  # its text is cut before the stop
    assert ended >= 4  # the test reaches the rule


def test_runner_rows_cut_at_the_stop_and_identity_unchanged_without(tmp_path):
    base = cfg_for(tmp_path / "a", "task.limit=3", "run.max_new_tokens=24")
    bare = OmegaConf.create(OmegaConf.to_container(base))
    del bare.task.prompting["stop"]
    assert config_hash(base) == config_hash(bare)  # runs from before stop strings keep their identity
    run(base)
    rows = read_rows(run_dirs(tmp_path / "a")[0] / "rows.jsonl")
    toks = rows[0]["output_tokens"]
    dec = ByteTokenizer(260).decode  # the tiny model's tokenizer
    stop, j = _stop_in(toks, dec, lo=4)
    cfg = cfg_for(tmp_path / "b", "task.limit=3", "run.max_new_tokens=24")
    cfg.task.prompting.stop = [stop]
    assert config_hash(cfg) != config_hash(base)
    run(cfg)
    rows2 = read_rows(run_dirs(tmp_path / "b")[0] / "rows.jsonl")
    r = rows2[0]
    assert r["finish"] == "stop" and r["output_tokens"] == toks[: j + 1]
    assert r["output_text"] == rows[0]["output_text"][: rows[0]["output_text"].index(stop)]
    for a, b in zip(rows[1:], rows2[1:]):  # other examples: cut where (and only where) the stop occurs
        if stop in a["output_text"]:
            assert b["finish"] == "stop" and b["output_text"] == a["output_text"][: a["output_text"].index(stop)]
        else:
            assert b["output_tokens"] == a["output_tokens"] and b["finish"] == a["finish"]


@pytest.mark.parametrize("bad", ["[\"\"]", "[1]", "[[a]]"])
def test_bad_stop_strings_refused_before_models_load(tmp_path, bad):
    with pytest.raises(ConfigError, match="prompting.stop must be a list of non-empty strings"):
        run(cfg_for(tmp_path, "task.limit=1", f"task.prompting.stop={bad}"))
    assert not run_dirs(tmp_path)


def test_diffusion_canvas_cut_at_the_stop_in_the_runner(tmp_path):
    """A dLLM strategy fills a fixed canvas outside DecodingState: the runner cuts its row."""
    over = ["model=tiny_random_dllm", "strategy=dllm_topk", "strategy.k=4", "task.limit=2", "run.max_new_tokens=16"]
    run(cfg_for(tmp_path / "a", *over))
    rows = read_rows(run_dirs(tmp_path / "a")[0] / "rows.jsonl")
    toks = [t for t in rows[0]["output_tokens"] if t < 256]
    stop, j = _stop_in(toks, ByteTokenizer(260).decode, lo=2)
    cfg = cfg_for(tmp_path / "b", *over)
    cfg.task.prompting.stop = [stop]
    run(cfg)
    r = read_rows(run_dirs(tmp_path / "b")[0] / "rows.jsonl")[0]
    assert r["finish"] == "stop" and stop not in r["output_text"]
    assert r["output_text"] == rows[0]["output_text"][: rows[0]["output_text"].index(stop)]
    assert ByteTokenizer(260).decode(r["output_tokens"]).endswith(stop)  # cut after the completing token
