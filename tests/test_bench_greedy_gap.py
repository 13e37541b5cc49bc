"""benchmarks/bench_greedy_gap.py: every way of calling the model it compares produces the same
greedy chain (else its timings would compare different work), in both block and lockstep modes."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_greedy_gap as gap


@pytest.mark.parametrize("lockstep", [False, True])
def test_variants_agree(tmp_path, lockstep):
    out = tmp_path / "gap.json"
    variants = [v for v in gap.VARIANTS if not (lockstep and v == "generate")]
    gap.main(["--model", "tiny_random", "--tokens", "6", "--repeats", "2", "--threads", "1",
              "--variants", ",".join(variants), "--json", str(out)] + (["--lockstep"] if lockstep else []))
    res = json.loads(out.read_text())
    assert set(res["ms_per_forward"]) == set(variants)
    assert all(res["tokens_equal"].values()), res["tokens_equal"]
    assert all(v > 0 for v in res["ms_per_forward"].values())


def test_steppers_same_logits():
    """Step for step, every stepped variant computes the same next-token logits as our engine
    (argmax agreement alone would miss e.g. a shifted position on a tiny random model)."""
    import torch

    from benchmarks.bench_decoding import build_prompts, load_engine, static_twin

    eng = load_engine("tiny_random", "float32")
    st = static_twin(eng, False, 1024)
    _, ids = build_prompts(eng, 1)[0]
    names = [v for v in gap.VARIANTS if v != "generate"]
    steppers = {v: gap.Stepper(v, eng, st, ids) for v in names}
    for _ in range(6):
        for v in names:
            assert torch.allclose(steppers[v].last, steppers["engine"].last, atol=1e-4), v
        for v in names:
            steppers[v].step()


def test_lockstep_refuses_generate():
    with pytest.raises(SystemExit):
        gap.main(["--model", "tiny_random", "--lockstep", "--variants", "engine,generate"])
