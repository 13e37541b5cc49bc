"""The analysis tools behind the two analysis notebooks, on the tiny random model."""

import json

import torch

from tools import spec_analysis
from tools.train_acceptance_head import load_engine


def test_nested_draft_read_from_hidden_states_is_the_truncated_model():
    """The scaling tool reads the first-k-layer draft off one forward's hidden states (+ final norm
    + head): that must be exactly what the truncated self-draft (model.truncate_layers=k) predicts."""
    full = load_engine("tiny_random", [], "float32")
    cut = load_engine("tiny_random", ["truncate_layers=1"], "float32")
    x = torch.randint(0, 200, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = full.model(input_ids=x, output_hidden_states=True)
        lens = full.model.lm_head(full.model.model.norm(out.hidden_states[1][0]))
        real = cut.model(input_ids=x).logits[0]
    assert torch.allclose(lens, real, atol=1e-5)


def test_scaling_and_surplus_records(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(spec_analysis.ROOT.parent / "shared" / "data"))
    out = tmp_path / "c.json"
    spec_analysis.main(["scaling", "--model", "tiny_random", "--draft", "tiny_random", "--dtype", "float32",
                        "--prompts", "2", "--tokens", "6", "--layers", "1,2", "--out", str(out)])
    rec = json.loads(out.read_text())
    full = [n for n in rec["nested"] if n["layers"] == rec["target_layers"]][0]
    assert full["alpha"] == 1.0 and rec["separate_draft"]["alpha"] == 1.0  # the target drafting for itself
    assert rec["nested"][0]["nonembedding_params"] < full["nonembedding_params"]
    out = tmp_path / "s.json"
    spec_analysis.main(["surplus", "--model", "tiny_random", "--examples", "10", "--steps", "5", "--top-k", "16",
                        "--distances", "3", "--out", str(out)])
    rec = json.loads(out.read_text())
    assert [d["distance"] for d in rec["by_distance"]] == [1, 2, 3]
    chain = [c["accepted_all"] for c in rec["chain_acceptance"]]
    assert chain == sorted(chain, reverse=True)  # a longer draft is never accepted more often in full
    assert all(abs(d["surplus"] - (d["probe_acc"] - d["current_token_acc"])) < 1e-12 for d in rec["by_distance"])
