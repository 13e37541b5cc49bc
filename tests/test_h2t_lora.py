"""H2T-LoRA (#18 item 3): the training tool, the adapter file, the merge, the strategy, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from harness.errors import ConfigError
from harness.runner import prepare, run
from harness.store import read_rows
from strategies.h2t_lora import H2TLoRA, merge_lora, read_adapter
from tests.conftest import ROOT, tiny_spec
from tools import train_h2t_lora as T

DATA = Path(__import__("os").environ["HARNESS_DATA_DIR"])
needs_data = pytest.mark.skipif(not (DATA / "hyporadise" / "train_atis.json").is_file(),
                                reason="HARNESS_DATA_DIR has no hyporadise/train_atis.json")


def _peft_with_random_b(seed=0):
    """A tiny Llama with LoRA on q/v whose B factors are random (peft starts them at zero)."""
    from peft import LoraConfig, get_peft_model

    eng = tiny_spec("tiny-lora", seed=seed).load()
    model = get_peft_model(eng.model, LoraConfig(r=4, lora_alpha=12, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".lora_B." in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def test_merge_equals_peft_forward():
    """W + (alpha/r) B A merged in place gives the logits of peft's unmerged LoRA forward."""
    peft_model = _peft_with_random_b()
    ids = torch.tensor([[5, 17, 99, 3, 42, 7, 250, 11]])
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits
    tensors = T.lora_tensors(peft_model)
    assert len(tensors) == 2 * 2 * 4  # (A, B) x (q, v) x 4 layers
    fresh = tiny_spec("tiny-lora", seed=0).load().model
    with torch.no_grad():
        base = fresh(input_ids=ids).logits
    assert merge_lora(fresh, tensors, 12 / 4) == 8
    with torch.no_grad():
        got = fresh(input_ids=ids).logits
    assert (want - base).abs().max() > 1e-2  # the adapter changes the model ...
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)  # ... and the merge is exact


def test_merge_refuses_other_shapes():
    tensors = T.lora_tensors(_peft_with_random_b())
    other = tiny_spec("tiny-wide", seed=0, hidden_size=96, num_attention_heads=4).load().model
    with pytest.raises(ConfigError, match="shape"):
        merge_lora(other, tensors, 3.0)


@needs_data
def test_tool_trains_and_strategy_loads(tmp_path):
    """The tool fits ATIS train pairs on a tiny model (the loss falls when it overfits 4 examples),
    writes one file with its provenance, and the strategy decodes the merged model through the runner."""
    out = tmp_path / "a.safetensors"
    meta = T.main(["--model", "tiny_random", "--examples", "4", "--batch-size", "4", "--epochs", "10",
                   "--lr", "0.03", "--r", "8", "--targets", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                   "up_proj", "down_proj", "--no-progress", "--threads", "1", "--out", str(out)])
    assert meta["examples"] == 4 and meta["steps"] == 10 and len(meta["losses"]) == 10
    # a random 64-wide model only learns the answers' byte frequencies (ln 260 = 5.56 -> ~5.2)
    assert meta["losses"][-1] < meta["losses"][0] - 0.2
    assert all(i.startswith("train-atis-") for i in meta["example_ids"])  # train rows, never test rows
    tensors, stored = read_adapter(out)
    assert stored["train_sha256"] == meta["train_sha256"] and stored["base_model"] == "tiny-random"
    assert set(tensors) and all(t.dtype == torch.float32 for t in tensors.values())

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        over = ["model=tiny_random", "task=hyporadise", "task.sets=[atis]", "task.limit=2", "run.max_new_tokens=8",
                f"run.results_dir={tmp_path / 'runs'}", "run.progress=false"]
        s_lora = run(compose("config", overrides=over + ["strategy=h2t_lora", f"strategy.adapter_path={out}"]))
        s_base = run(compose("config", overrides=over + ["strategy=greedy"]))
        cfg = compose("config", overrides=over + ["strategy=greedy"])
    assert s_lora["errors"] == 0 and s_base["errors"] == 0
    (d_lora,) = [p for p in (tmp_path / "runs").iterdir() if "h2t_lora" in p.name]
    info = json.loads((d_lora / "meta.json").read_text())
    assert info["artifacts"]["adapter_path"] == meta["sha256"]
    assert info["strategy_params"]["adapter"]["train_sha256"] == meta["train_sha256"]

    from hydra.utils import instantiate

    from tasks.hyporadise import HyPoradise

    # The merged model's own greedy decode of the first prompt, computed here independently.
    target = instantiate(cfg.model, _convert_="all").load()
    merge_lora(target.model, tensors, stored["alpha"] / stored["r"])
    ex = HyPoradise(sets=["atis"], limit=2).load()[0]
    ids, _ = HyPoradise(sets=["atis"]).prompt_ids(target, ex)
    from strategies.greedy import Greedy

    want = Greedy().generate(target, ids, 8, torch.Generator().manual_seed(0))
    row = [r for r in read_rows(d_lora / "rows.jsonl") if r["example_id"] == ex["id"]][0]
    assert row["output_text"] == target.decode(want.tokens)
    base_row = [r for r in read_rows([p for p in (tmp_path / "runs").iterdir() if "greedy" in p.name][0] / "rows.jsonl")
                if r["example_id"] == ex["id"]][0]
    assert base_row["output_text"] != row["output_text"]  # the adapter changed the decode


@needs_data
def test_refusals_before_loading(tmp_path):
    out = tmp_path / "a.safetensors"
    T.main(["--model", "tiny_random", "--examples", "2", "--batch-size", "2", "--no-progress", "--threads", "1",
            "--out", str(out)])
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        base = ["task=hyporadise", "task.sets=[atis]", "task.limit=1", f"run.results_dir={tmp_path}",
                "strategy=h2t_lora", f"strategy.adapter_path={out}"]
        with pytest.raises(ConfigError, match="trained on model tiny-random"):
            prepare(compose("config", overrides=base + ["model=smollm2_135m"]))
        with pytest.raises(ConfigError, match="paired_baseline"):
            prepare(compose("config", overrides=base + ["model=tiny_random", "run.paired_baseline=true"]))
    with pytest.raises(ConfigError, match="not found"):
        H2TLoRA(adapter_path=str(tmp_path / "missing.safetensors"))
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="not an adapter"):
        H2TLoRA(adapter_path=str(tmp_path / "bad.safetensors"))


@needs_data
def test_train_split_and_fewshot_pool():
    from tasks.hyporadise import HyPoradise

    task = HyPoradise(sets=["atis"], prompting={"num_fewshot": 2})
    train = task.train_examples("atis")
    assert len(train) == 3964 and len({e["id"] for e in train}) == 3964
    test_ids = {e["id"] for e in HyPoradise(sets=["atis"]).load()}
    assert not test_ids & {e["id"] for e in train}
    msgs = task.messages(task.load()[0])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"] == train[0]["reference"]
    with pytest.raises(ConfigError, match="no train split"):
        task.train_file("wsj_score")
