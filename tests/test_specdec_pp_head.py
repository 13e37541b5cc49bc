"""SpecDec++ with a trained acceptance-prediction head (strategies/specdec_pp.py).

Training on a tiny model pair writes a head file that loads; the strategy is token-identical to
greedy and preserves the target distribution at T>0 (chi-square, V=4) with a trained head; the
head really decides K; a missing, foreign or mismatched head is a ConfigError. The YAML-wide
tests (test_lossless, test_runner) skip this strategy (`needs_artifact`: its YAML names a head
trained for the Qwen draft), so their checks are repeated here with tiny heads.
"""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from hydra.utils import instantiate

from harness.errors import ConfigError
from harness.runner import run
from harness.store import read_rows
from tools import train_acceptance_head as T
from strategies.core.base import SamplingParams
from strategies.greedy import Greedy
from strategies.specdec_pp import AcceptanceHead, SpecDecPPHead, draft_identity, load_head, save_head
from tests.conftest import ROOT
from tests.test_distribution import _check_distribution

PROMPTS = [[72, 101, 108, 108, 111, 32, 119], [1, 2, 3, 1, 2, 3, 1, 2], list(range(40, 80)) + list(range(40, 60)),
           [200, 13, 200, 13, 7]]  # as tests/test_lossless.py


def train_tiny_head(target, draft, path, prompts=PROMPTS, steps=60, sampling=SamplingParams(), features="hidden"):
    data = T.collect(target, draft, prompts, 24, sampling, 0.15, seed=0)
    head, report = T.fit(data, holdout=0.25, steps=steps, width=16, blocks=1, features=features)
    save_head(path, head, {"draft": draft_identity(draft), **report})
    return report


def constant_head(draft, path, bias):
    """A head that predicts sigmoid(bias) everywhere (to pin the stopping rule)."""
    head = AcceptanceHead(draft.model.config.hidden_size, width=4, blocks=1)
    for p in head.parameters():
        torch.nn.init.zeros_(p)
    head.out.bias.data.fill_(bias)
    save_head(path, head, {"draft": draft_identity(draft)})


@pytest.fixture(scope="module")
def heads(tmp_path_factory, tiny_target, tiny_draft, tiny_selfdraft):
    d = tmp_path_factory.mktemp("heads")
    train_tiny_head(tiny_target, tiny_draft, d / "other.pt")
    train_tiny_head(tiny_target, tiny_selfdraft, d / "self.pt")
    train_tiny_head(tiny_target, tiny_selfdraft, d / "self_q.pt", features="hidden+q")
    return {"other": (d / "other.pt", tiny_draft), "self": (d / "self.pt", tiny_selfdraft),
            "self+q": (d / "self_q.pt", tiny_selfdraft), "dir": d}


def test_cli_trains_a_head_that_loads(tmp_path):
    out = tmp_path / "h.pt"
    meta = T.main(["--draft", "tiny_random", "--draft-set", "truncate_layers=1", "--target", "tiny_random",
                   "--task", "demo_arith", "--examples", "4", "--max-new-tokens", "16", "--steps", "30",
                   "--width", "8", "--threads", "1", "--out", str(out)])
    head, saved, sha = load_head(out)
    assert saved == json.loads(json.dumps(meta)) and len(sha) == 64
    assert saved["draft"] == {**saved["draft"], "name": "tiny-random", "num_layers": 1, "hidden_size": 64}
    assert saved["data"]["positions"] > 0 and len(saved["data"]["example_ids"]) == 4
    assert saved["loss"]["reject_weight"] == 6.0 and saved["heldout"]["n"] > 0
    assert 0.0 <= saved["heldout"]["accuracy"] <= 1.0 and saved["head"]["extra"] == 2  # default features hidden+q
    assert head(torch.zeros(3, 64 + 2)).shape == (3,)  # hidden state + log q + entropy


def test_fit_learns_a_separable_signal():
    """Held-out AUC ~ 1 on a feature that determines acceptance; ~ 0.5 would mean no learning."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 8, generator=g)
    a = (x[:, 2] > 0.3).float()
    data = {"feats": x, "extra": torch.zeros(600, 2), "labels": a, "conf": torch.rand(600, generator=g),
            "group": torch.arange(600) // 30}
    _, report = T.fit(data, holdout=0.25, steps=150, width=16, blocks=1)
    assert report["heldout"]["auc"] > 0.97 and 0.4 < report["heldout"]["confidence_auc"] < 0.6


@pytest.mark.parametrize("kind", ["other", "self", "self+q"])
def test_token_identical_to_greedy(kind, heads, tiny_target):
    path, draft = heads[kind]
    s = SpecDecPPHead(draft=None, head_path=str(path))
    s.setup(tiny_target, draft)
    for prompt in PROMPTS:
        ref = Greedy().generate(tiny_target, prompt, 32, torch.Generator()).tokens
        tr = s.generate(tiny_target, prompt, 32, torch.Generator().manual_seed(0), draft=draft)
        assert tr.tokens == ref
        assert sum(tr.accept_hist.values()) == tr.verifications and 0 <= tr.accepted <= tr.drafted
        assert tr.extra["head_calls"] > 0


def test_head_decides_the_draft_length(tmp_path, tiny_target, tiny_selfdraft):
    ref = Greedy().generate(tiny_target, [9, 8, 7], 40, torch.Generator()).tokens
    constant_head(tiny_selfdraft, tmp_path / "sure.pt", 20.0)  # predicts acceptance 1: draft k_max
    constant_head(tiny_selfdraft, tmp_path / "doubt.pt", -20.0)  # predicts rejection: stop at k_min
    bold = SpecDecPPHead(draft=None, head_path=str(tmp_path / "sure.pt"), k_min=2, k_max=6).generate(
        tiny_target, [9, 8, 7], 40, torch.Generator(), draft=tiny_selfdraft)
    cautious = SpecDecPPHead(draft=None, head_path=str(tmp_path / "doubt.pt"), k_min=2, k_max=6).generate(
        tiny_target, [9, 8, 7], 40, torch.Generator(), draft=tiny_selfdraft)
    assert bold.tokens == ref == cautious.tokens
    assert bold.drafted > 5 * bold.verifications  # k_max = 6 each round, except where the budget cuts it
    assert cautious.drafted <= 2 * cautious.verifications and cautious.drafted >= cautious.verifications


def test_trained_head_preserves_distribution(tmp_path, small_models):
    from tests.test_distribution import PROMPT

    target, draft = small_models
    sp = SamplingParams(temperature=1.0, top_k=3)  # soft labels min(1, p/q): the T>0 training path
    train_tiny_head(target, draft, tmp_path / "v4.pt", prompts=[PROMPT, PROMPT[::-1], [0, 1, 2, 3] * 3], sampling=sp)
    _check_distribution(lambda sp: SpecDecPPHead(draft=None, head_path=str(tmp_path / "v4.pt"), threshold=0.5,
                                                 k_min=1, k_max=2, sampling=sp), small_models)


def test_bad_heads_are_config_errors(tmp_path, heads, tiny_target, tiny_selfdraft, small_models):
    with pytest.raises(ConfigError, match="head_path is required"):
        SpecDecPPHead(draft=None, head_path=None)
    with pytest.raises(ConfigError, match="does not exist"):
        SpecDecPPHead(draft=None, head_path=str(tmp_path / "nope.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a head")
    with pytest.raises(ConfigError, match="not an acceptance head"):
        SpecDecPPHead(draft=None, head_path=str(tmp_path / "junk.pt"))
    s = SpecDecPPHead(draft=None, head_path=str(heads["other"][0]))  # trained for tiny-draft (hidden 64)
    with pytest.raises(ConfigError, match="hidden states of size 64"):
        s.setup(tiny_target, small_models[1])  # hidden 16
    with pytest.raises(ConfigError, match="trained on draft tiny-draft"):
        s.generate(tiny_target, [1, 2, 3], 5, torch.Generator(), draft=tiny_selfdraft)  # same size, other model


def test_yaml_builds_and_names_its_head():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["strategy=specdec_pp", "model=tiny_random"])
    if not (ROOT / cfg.strategy.head_path).exists():
        pytest.skip(f"shipped head {cfg.strategy.head_path} not present")
    s = instantiate(cfg.strategy, _convert_="all")
    p = s.params()
    assert p["name"] == "specdec_pp" and p["head_sha256"] and p["head"]["draft"]["name"] == s.draft.name
    assert (s.threshold, s.k_min, s.k_max) == (0.3, 2, 20)


def test_runner_rows_do_not_depend_on_example_order(tmp_path):
    """test_runner's order-independence check, with a head trained for the tiny draft it uses."""
    spec = lambda trunc: instantiate(OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "model" / "tiny_random.yaml"),  # noqa: E731
                                                     {"truncate_layers": trunc}), _convert_="all")
    target, draft = spec(0).load(), spec(1).load()
    train_tiny_head(target, draft, tmp_path / "h.pt", prompts=PROMPTS[:2], steps=20)
    over = ["model=tiny_random", "task=demo_arith", "run.max_new_tokens=10", "run.progress=false", "task.limit=3",
            "strategy=specdec_pp", "model@strategy.draft=tiny_random", "strategy.draft.truncate_layers=1",
            f"strategy.head_path={tmp_path / 'h.pt'}", "strategy.sampling.temperature=1.0"]
    rows = []
    for sub, extra in (("a", []), ("b", ["task._target_=tests.helpers.ReversedDemo"])):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[*over, f"run.results_dir={tmp_path / sub}", *extra])
        run(cfg)
        (d,) = [p for p in (tmp_path / sub).iterdir() if (p / "rows.jsonl").exists()]
        skip = {"wall_s", "ttft_s", "timestamp", "peak_rss_mb", "model_s", "outside_model_s", "run", "config_hash"}
        rows.append(sorted(({k: v for k, v in r.items() if k not in skip} for r in read_rows(d / "rows.jsonl")),
                           key=lambda r: r["example_id"]))
    assert len(rows[0]) == 3 and all(r["error"] is None for r in rows[0]) and rows[0] == rows[1]
