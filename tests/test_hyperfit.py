"""Hyperfitting as a model transform (tools/hyperfit.py, ModelSpec.weights) on a tiny model: the
fit drives the training loss down, the written config loads the trained weights (with the
recorded hash), a changed or missing weights file is refused with one clear line, and the
report holds the comparison metrics for base and hyperfitted generations."""

import json

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from harness.errors import ConfigError
from tests.conftest import ROOT
from tools.hyperfit import main, text_stats


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    d = tmp_path_factory.mktemp("hyperfit")
    rep = main(["--model", "tiny_random", "--samples", "8", "--tokens", "24", "--epochs", "25", "--lr", "3e-3",
                "--prefixes", "2", "--prefix-tokens", "8", "--generate", "12", "--out", str(d / "w.safetensors"),
                "--config", str(d / "m.yaml"), "--report", str(d / "r.json")])
    return d, rep


def test_fit_reaches_low_loss_and_reports(fitted):
    d, rep = fitted
    assert rep["losses"][-1] < 0.5 * rep["losses"][0]
    saved = json.loads((d / "r.json").read_text())
    for k in ("base", "hyperfitted"):
        c = saved["comparison"][k]
        assert {"repetition_4gram", "type_token_ratio", "self_bleu", "mean_top1_prob"} <= set(c)
        assert len(c["generations"]) == 2
    assert saved["comparison"]["hyperfitted"]["mean_top1_prob"] > saved["comparison"]["base"]["mean_top1_prob"]


def test_config_loads_the_trained_weights(fitted):
    d, rep = fitted
    spec = instantiate(OmegaConf.load(d / "m.yaml"), _convert_="all")
    base = instantiate(OmegaConf.load(ROOT / "conf" / "model" / "tiny_random.yaml"), _convert_="all")
    assert spec.identity() != base.identity() and "+weights:" in spec.identity()
    a, b = spec.load(), base.load()
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert not torch.allclose(a.model(x).logits, b.model(x).logits)


def test_changed_or_missing_weights_are_refused(fitted, tmp_path):
    d, _ = fitted
    cfg = OmegaConf.load(d / "m.yaml")
    bad = tmp_path / "w.safetensors"
    bad.write_bytes((d / "w.safetensors").read_bytes()[:-8] + b"\0" * 8)
    cfg.weights.path = str(bad)
    with pytest.raises(ConfigError, match="sha256"):
        instantiate(cfg, _convert_="all").load()
    cfg.weights.path = str(tmp_path / "none.safetensors")
    with pytest.raises(ConfigError, match="missing"):
        instantiate(cfg, _convert_="all").load()


def test_text_stats_by_hand():
    s = text_stats(["a b c d a b c d", "x y z w v"], [0.5, 0.7])
    assert s["repetition_4gram"] == pytest.approx((1 - 4 / 5) / 2)  # 5 4-grams, 4 distinct; 2nd: none repeat
    assert s["type_token_ratio"] == pytest.approx((4 / 8 + 5 / 5) / 2)
    assert s["mean_top1_prob"] == pytest.approx(0.6)
