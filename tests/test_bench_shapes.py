"""benchmarks/bench_shapes.py (#17 item 6, for a GPU): its code paths on tiny shapes on the CPU,
and its real shapes against the packed models' configs where the packs are installed."""

import json

import pytest

from benchmarks import bench_shapes


def test_smoke_run_on_tiny_shapes(tmp_path):
    out = tmp_path / "shapes.json"
    assert bench_shapes.main(["--device", "cpu", "--dtype", "float32", "--shapes", "tiny_llama,tiny_qwen2",
                              "--prompt", "12", "--tokens", "6", "--sizes", "1,4", "--repeats", "2", "--n", "3",
                              "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["info"]["device"] == "cpu"
    for shape in ("tiny_llama", "tiny_qwen2"):
        r = rep["shapes"][shape]
        assert set(r["curve"]) == {"hf", "static"}
        assert [x["n"] for x in r["curve"]["hf"]["sizes"]] == [1, 4]
        assert len(r["steps"]) == 10 and len(r["batched"]) == 5
        for m, a in {**r["steps"], **r["batched"]}.items():
            n = 3 if m.startswith("N=") else 1
            assert a["tokens"] == 2 * 6 * n, m  # EOS off: every generation runs to the budget
            assert 0 < a["model_ms_per_step"] <= a["ms_per_step"], m  # the timer saw the model, inside <= wall
        assert all(r["greedy_identical"].values()) and len(r["greedy_identical"]) == 4  # fp32: both engines, both placements


def test_unknown_shape_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        bench_shapes.main(["--shapes", "gpt5", "--device", "cpu"])
    assert e.value.code == 2 and "unknown shape(s) gpt5" in capsys.readouterr().err


@pytest.mark.parametrize("shape,model", [("smollm2_135m", "smollm2_135m"), ("qwen25_15b", "qwen25_coder_15b")])
def test_real_shapes_match_the_packed_configs(shape, model):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from tests.conftest import ROOT

    spec = instantiate(OmegaConf.load(ROOT / "conf" / "model" / f"{model}.yaml"), _convert_="all")
    try:
        cfg = spec.static_config()
    except Exception as e:  # the pack is not installed (CI): nothing to compare with
        pytest.skip(f"{model}: {e}")
    if cfg is None:
        pytest.skip(f"{model}: pack not installed")
    arch, kw = bench_shapes.SHAPES[shape]
    assert cfg.model_type == arch
    for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "vocab_size"):
        assert getattr(cfg, k) == kw[k], k
    assert cfg.rope_parameters["rope_theta"] == kw["rope_theta"]


def test_the_gpu_run_on_a_fake_gpu(tmp_path, monkeypatch):
    """The GPU command itself (`--device cuda`) on tests/fake_cuda.py: the models built 'on cuda',
    every op of our engines, samplers and transformers' generate() checked for placement; the
    CUDA calls the script makes (synchronize, device name, memory) stubbed."""
    import torch

    import harness.runner as R
    from tests.fake_cuda import FakeCuda

    for name, fn in {"is_available": lambda: True, "synchronize": lambda *a, **k: None,
                     "get_device_name": lambda *a: "fake", "max_memory_allocated": lambda *a: 0,
                     "empty_cache": lambda: None, "reset_peak_memory_stats": lambda *a: None}.items():
        monkeypatch.setattr(torch.cuda, name, fn)
    mode = FakeCuda(skip_model=False)
    monkeypatch.setattr(R, "make_generator", lambda device, seed: mode.cuda_generator(seed) if device.startswith("cuda")
                        else torch.Generator().manual_seed(seed))
    out = tmp_path / "gpu.json"
    with mode:
        assert bench_shapes.main(["--device", "cuda", "--dtype", "float32", "--shapes", "tiny_llama,tiny_qwen2",
                                  "--prompt", "12", "--tokens", "4", "--sizes", "1,4", "--repeats", "1", "--n", "2",
                                  "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["info"]["device"] == "cuda" and rep["info"]["gpu"] == "fake" and mode.ops > 500
    for r in rep["shapes"].values():
        assert all(r["greedy_identical"].values()) and len(r["steps"]) == 10 and len(r["batched"]) == 5
