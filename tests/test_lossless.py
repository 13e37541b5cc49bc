"""Lossless strategies at temperature 0 are token-identical to greedy (fp32, tiny random models).

Parametrised over every conf/strategy/*.yaml whose class declares `lossless = True`: a new
lossless strategy is tested by adding its YAML, nothing else. Draft-model methods run with
three drafts: a different random model (drafts mostly rejected), the target's first layer
(sometimes right) and a PERFECT draft (the weights of a peaked target, every draft accepted),
where deep accepted paths must occur (accept length >= 3), so tree positions, cache keeps and
rollbacks past several accepted tokens are exercised. Model-free methods draft from repeating
prompts and must reach the same depth.
"""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from strategies.greedy import Greedy
from tests.conftest import ROOT, tiny_spec

PROMPTS = [[72, 101, 108, 108, 111, 32, 119], [1, 2, 3, 1, 2, 3, 1, 2], list(range(40, 80)) + list(range(40, 60)),
           [200, 13, 200, 13, 7]]
NAMES = sorted(p.stem for p in (ROOT / "conf" / "strategy").glob("*.yaml"))


def load_strategy(name: str, overrides=()):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"strategy={name}", "model=tiny_random", *overrides])
    return instantiate(cfg.strategy, _convert_="all")


def lossless_cases():
    """(strategy, k, draft kind) for every lossless strategy YAML; k only where it has one."""
    cases = []
    for name in NAMES:
        if getattr(get_class(OmegaConf.load(ROOT / "conf" / "strategy" / f"{name}.yaml")._target_),
                   "needs_artifact", False):  # e.g. a head trained for one draft: such strategies test
            continue  # themselves on tiny models (tests/test_specdec_pp_head.py)
        s = load_strategy(name)
        if not s.lossless or getattr(s, "paradigm", "autoregressive") != "autoregressive":  # dLLM: test_diffusion.py
            continue
        ks = [1, 3, 7] if hasattr(s, "k") else [None]
        kinds = ["other", "self", "perfect"] if s.draft is not None else [None]
        cases += [(name, k, d) for k in ks for d in kinds]
    return cases


# Methods whose drafts cannot be made good on a random model, so no deep path is asserted:
# DEL drafts from the target's own early-exit layers, LUD from placeholder positions that only a
# LUD-fine-tuned model predicts (both are still checked token for token).
NO_DEEP_DRAFTS = {"del_exit": "early-exit drafts of a random model", "lud": "needs a LUD-fine-tuned model"}
MODEL_FREE_DEEP = ("pld", "token_recycling", "stand")  # draft from the repeating prompts


def check_against_greedy(s, target, draft, prompts=PROMPTS, n=48, where="") -> int:
    """Run strategy s on each prompt, assert token identity with greedy on `target`; return the
    deepest accepted path (other engines' and models' lossless tests share this loop)."""
    deepest = 0
    for prompt in prompts:
        ref = Greedy().generate(target, prompt, n, torch.Generator().manual_seed(0)).tokens
        tr = s.generate(target, prompt, n, torch.Generator().manual_seed(0), draft=draft)
        assert tr.tokens == ref, f"{s.name} diverged from greedy{where} on prompt {prompt[:4]}..."
        deepest = max([deepest, *tr.accept_hist])
    return deepest


@pytest.fixture(scope="module")
def greedy_outputs(tiny_target):
    g = Greedy()
    return [g.generate(tiny_target, p, 48, torch.Generator().manual_seed(0)).tokens for p in PROMPTS]


@pytest.fixture(scope="module")
def peaked_greedy_outputs(peaked_target):
    g = Greedy()
    return [g.generate(peaked_target, p, 48, torch.Generator().manual_seed(0)).tokens for p in PROMPTS]


@pytest.mark.parametrize("name,k,draft_kind", lossless_cases())
def test_token_identical_to_greedy(name, k, draft_kind, tiny_target, tiny_draft, tiny_selfdraft, greedy_outputs,
                                   peaked_target, peaked_twin, peaked_greedy_outputs):
    s = load_strategy(name, ["strategy.sampling.temperature=0"] if name != "greedy" else [])
    if k is not None:
        s.k = k
    draft = {"other": tiny_draft, "self": tiny_selfdraft, "perfect": peaked_twin, None: None}[draft_kind]
    if draft_kind == "perfect":
        tiny_target, greedy_outputs = peaked_target, peaked_greedy_outputs
    if hasattr(s, "step_model"):  # adaptive K (smartspec): make drafting free so every path is exercised
        s.step_model = {"target_a": 1.0, "target_b": 0.0, "draft_token_s": 0.0}
    drafted = accepted = deepest = 0
    for prompt, ref in zip(PROMPTS, greedy_outputs):
        tr = s.generate(tiny_target, prompt, 48, torch.Generator().manual_seed(0), draft=draft)
        assert tr.tokens == ref, f"{name} diverged from greedy on prompt {prompt[:4]}..."
        assert sum(tr.accept_hist.values()) == tr.verifications
        assert sum(k_ * v for k_, v in tr.accept_hist.items()) == tr.accepted
        assert tr.accepted <= len(tr.tokens)  # accepted drafts are emitted tokens, never more
        drafted, accepted = drafted + tr.drafted + tr.tree_nodes, accepted + tr.accepted
        deepest = max([deepest, *tr.accept_hist])
    if s.draft is not None or name == "pld":
        assert drafted > 0 and 0 <= accepted <= drafted
    if (draft_kind == "perfect" or name in MODEL_FREE_DEEP) and (k is None or k >= 3):
        assert deepest >= 3, f"{name} never accepted a path of 3+ drafts: the test would miss tree/rollback bugs"


def test_speculative_counts_forwards(tiny_target, tiny_selfdraft):
    s = load_strategy("speculative", ["strategy.k=3"])
    tr = s.generate(tiny_target, PROMPTS[0], 30, torch.Generator().manual_seed(0), draft=tiny_selfdraft)
    # one verification forward per step (the first also prefills); each yields accepted + 1 tokens
    assert tr.target_forwards == tr.verifications
    assert tr.draft_forwards == tr.drafted <= 3 * tr.verifications  # the last step may be cut by the budget
    assert len(tr.tokens) <= tr.accepted + tr.verifications


def test_all_strategy_yamls_instantiate():
    for name in NAMES:
        # a per-model artifact (AdaDec's threshold) exists for the packed models, not the tiny one
        over = {"adadec": ["model=qwen25_coder_05b"], "learn2pd": ["model=waitline_mdlm"]}.get(name, [])
        s = load_strategy(name, over)
        assert s.params()["name"]
        assert Path(ROOT / "conf" / "strategy" / f"{name}.yaml").read_text().lstrip().startswith("#")
