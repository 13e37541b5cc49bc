"""The value-head scorer (an outcome reward model) and its training tool, on tiny models."""

import json

import pytest
import torch

from harness.errors import ConfigError
from scorers.value_head import ValueHead, features, read_head, save_head, solution_ids, trunk_features
from tests.conftest import tiny_spec

Q = "Natalia sold 48 clips in April and half as many in May. How many in all?"


@pytest.fixture(scope="module")
def eng():
    return tiny_spec("tiny-vh", seed=0).load()


def head_file(tmp_path, eng, seed=0, trunk=None):
    g = torch.Generator().manual_seed(seed)
    d = 2 * eng.hidden_size
    t = {"w": torch.randn(d, generator=g), "b": torch.tensor([0.1]), "mu": torch.randn(d, generator=g) * 0.1,
         "sd": torch.rand(d, generator=g) + 0.5}
    return save_head(tmp_path / f"h{seed}.safetensors", t, {"trunk": trunk or eng.name,
                                                           "vocabulary": eng.vocabulary_fingerprint()}), t


def test_hidden_batch_rows_equal_each_sequence_alone(eng):
    seqs = [[5, 6, 7, 8, 9], [11, 12], [40, 41, 42]]
    batch = eng.hidden_batch(seqs)
    for s, h in zip(seqs, batch):
        alone = eng.hidden_batch([s])[0]
        assert h.shape == (len(s), eng.hidden_size)
        assert torch.allclose(h, alone, atol=1e-5)
    f0, t0 = eng.counters()
    eng.hidden_batch(seqs)
    assert eng.counters() == (f0, t0)  # count=False leaves the policy's counters alone


def test_one_forward_scores_every_prefix_as_if_cut_there(tmp_path, eng):
    path, t = head_file(tmp_path, eng)
    vh = ValueHead(str(path))
    vh.bind(eng)
    steps = ["First, 48 / 2 = 24.", "Then 48 + 24 = 72.", "#### 72"]
    full = vh.score(Q, [steps])[0]
    assert len(full) == 3
    for i in range(1, 4):  # the value of prefix i from the sequence that ENDS there
        assert vh.score_last(Q, [steps[:i]])[0] == pytest.approx(full[i - 1], abs=1e-5)
    # by hand: the features of the last step and the head's formula
    ids, P, ends = solution_ids(eng, Q, steps, 2048)
    h = eng.hidden_batch([ids])[0]
    x = torch.cat([h[ends[-1]], h[P:ends[-1] + 1].mean(0)])
    want = torch.sigmoid(((x - t["mu"]) / t["sd"]) @ t["w"] + t["b"])
    assert full[-1] == pytest.approx(float(want), abs=1e-5)
    # batched candidates == one at a time, and the calls are counted
    other = ["48 + 48 = 96.", "#### 96"]
    calls = vh.calls
    both = vh.score(Q, [steps, other, []])
    assert both[0] == pytest.approx(full, abs=1e-5) and both[2] == []
    assert both[1] == pytest.approx(vh.score(Q, [other])[0], abs=1e-5)
    assert vh.calls - calls == 2  # one batched forward, then one for `other` alone


def test_truncation_keeps_the_question_and_the_solution_end(eng):
    steps = ["x " * 80, "#### 5"]
    ids, P, ends = solution_ids(eng, Q, steps, P_MAX := 120)
    assert len(ids) == P_MAX and ends[-1] == P_MAX - 1
    assert ids[:P] == eng.render([{"role": "user", "content": Q}])
    assert all(P <= e < P_MAX for e in ends)
    feats = features(eng.hidden_batch([ids])[0], P, ends)
    assert feats.shape == (2, 2 * eng.hidden_size)


def test_a_head_of_another_trunk_or_size_is_refused(tmp_path, eng):
    path, _ = head_file(tmp_path, eng, trunk="qwen25_coder_05b")
    vh = ValueHead(str(path))
    with pytest.raises(ConfigError, match="trained on trunk qwen25_coder_05b"):
        vh.bind(eng)
    with pytest.raises(ConfigError, match="no head file"):
        ValueHead(str(tmp_path / "missing.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="not a value-head file"):
        ValueHead(str(bad))


def test_the_head_file_is_part_of_the_search_run_identity(tmp_path, eng):
    from harness.runner import artifact_hashes
    from strategies.best_of_n import BestOfN

    p0, _ = head_file(tmp_path, eng, seed=0)
    p1, _ = head_file(tmp_path, eng, seed=1)
    a = artifact_hashes(BestOfN(n=2, scorer=ValueHead(str(p0))))
    b = artifact_hashes(BestOfN(n=2, scorer=ValueHead(str(p1))))
    assert set(a) == {"scorer.path"} and a != b


def _fake_run(tmp_path, split="train", n_problems=12):
    from tasks.gsm8k import GSM8K

    exs = GSM8K(split="train").load()[:n_problems]
    rows = []
    for i, ex in enumerate(exs):
        right = f"Let me compute.\n\nThe answer is {ex['gold']}.\n\n#### {ex['gold']}"
        wrong = f"Let me guess.\n\nMaybe {int(ex['gold']) + 7}.\n\n#### {int(ex['gold']) + 7}"
        samples = [right, wrong, wrong, right] if i % 2 else [wrong, right, wrong, wrong]
        rows.append({"example_id": ex["id"], "error": None,
                     "prompt_messages": [{"role": "user", "content": "Solve: " + ex["question"]}],
                     "extra": {"samples": [{"text": t, "eos": True, "tokens": 10} for t in samples]}})
    d = tmp_path / f"run-{split}"
    d.mkdir()
    (d / "meta.json").write_text(json.dumps({"task_options": {"split": split}}))
    (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d / "rows.jsonl"


def test_train_tool_fits_a_head_the_scorer_loads(tmp_path, eng):
    from tools import train_value_head as tv

    rows = _fake_run(tmp_path)
    out = tmp_path / "vh.safetensors"
    assert tv.main(["--rows", str(rows), "--trunk", "tiny_random", "--out", str(out), "--threads", "1",
                    "--l2", "1e-3", "1e-1"]) == 0
    tensors, meta = read_head(out)
    assert meta["samples_task"] == "gsm8k:train" and meta["problems"] == 12 and meta["samples"] == 48
    assert meta["prefixes"] == 48 * 3 and meta["positive_rate_samples"] == pytest.approx(18 / 48)
    assert meta["train_auc_final_fit"] > 0.9  # the outcome is visible in the text: the fit must see it
    # the scorer reproduces the tool's values on a training sample
    from tools.train_acceptance_head import load_engine

    trunk = load_engine("tiny_random", [], None)
    vh = ValueHead(str(out))
    vh.bind(trunk)
    (_, q, labelled), = [p for p in tv.load_samples([str(rows)], "gsm8k")[0][:1]]
    from strategies.core.search import split_steps

    feats, _, _ = trunk_features(trunk, q, [split_steps(labelled[0][0])], 2048, 4)
    assert vh.score(q, [split_steps(labelled[0][0])])[0] == pytest.approx(tv.predict(tensors, feats[0]).tolist(), abs=1e-5)


def test_train_tool_refuses_test_split_rows(tmp_path, capsys):
    from tools import train_value_head as tv

    rows = _fake_run(tmp_path, split="test", n_problems=2)
    assert tv.main(["--rows", str(rows), "--trunk", "tiny_random", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "TRAIN split" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_model_time_counts_every_path_into_the_weights_once(eng):
    """ModelTimer: model_s grows on every path into the weights and never by more than the wall
    time around the call (nested modules would double-count it)."""
    import time

    paths = [lambda: (eng.reset(), eng.forward([5, 6, 7, 8] * 8)),
             lambda: eng.hidden_batch([[5, 6, 7], [8, 9]]),
             lambda: eng.last_logits_batch([[5, 6, 7], [8, 9]], count=False),
             lambda: (eng.reset(), eng.forward_layers([5, 6, 7], 0, 1)),
             lambda: eng.head(torch.zeros(3, eng.hidden_size))]
    for call in paths:
        before = eng.model_s
        t0 = time.perf_counter()
        call()
        wall = time.perf_counter() - t0
        d = eng.model_s - before
        assert 0 < d <= wall + 1e-4
    fork = (eng.reset(), eng.fork([5, 6, 7], [[8], [9]]))[1]
    before = eng.model_s
    fork.step([10, 11])
    assert eng.model_s > before


def test_rows_carry_model_time_and_peak_memory(tmp_path):
    from harness.store import read_rows
    from tests.test_runner import cfg_for, run, run_dirs

    run(cfg_for(tmp_path, "task.limit=2", "run.max_new_tokens=6", "strategy=greedy"))
    (d,) = run_dirs(tmp_path)
    rows = read_rows(d / "rows.jsonl")
    for r in rows:
        assert 0 < r["model_s"] <= r["wall_s"] and r["outside_model_s"] == pytest.approx(r["wall_s"] - r["model_s"])
        assert r["peak_rss_mb"] > 10
    summary = json.loads((d / "summary.json").read_text())
    assert 0 <= summary["outside_model_share"] < 1 and summary["peak_rss_mb"] == max(r["peak_rss_mb"] for r in rows)
