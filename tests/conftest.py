"""Shared fixtures: tiny random models built from a config in milliseconds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HARNESS_DATA_DIR", str(ROOT.parent / "shared" / "data"))
torch.set_num_threads(1)
# One intra-op thread per test process: `make test` runs 2 xdist workers on 2 cores, and a run's
# `run.threads=2` (the runner calls torch.set_num_threads) would oversubscribe the cores and slow
# every later test of that worker several-fold. Rows still record the threads actually used.
_set_threads = torch.set_num_threads
torch.set_num_threads = lambda n: _set_threads(1)

from harness.models import ModelSpec  # noqa: E402

DEVICE = os.environ.get("HARNESS_TEST_DEVICE", "cpu")  # "cuda" to run the tiny-model tests on a GPU
TINY = dict(arch="llama", vocab_size=260, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)


def tiny_spec(name="tiny", seed=0, **over) -> ModelSpec:
    cfg = {**TINY, "seed": seed, **over}
    trunc = cfg.pop("truncate_layers", 0)
    return ModelSpec(name=name, tiny=cfg, truncate_layers=trunc, device=DEVICE)


@pytest.fixture(scope="session")
def tiny_target():
    return tiny_spec("tiny-target", seed=0).load()


@pytest.fixture(scope="session")
def tiny_draft():
    """A different random model with the same vocabulary: drafts are often rejected."""
    return tiny_spec("tiny-draft", seed=1, num_hidden_layers=1).load()


@pytest.fixture(scope="session")
def tiny_selfdraft():
    """The target's own first layer: a draft that is sometimes right."""
    return tiny_spec("tiny-self", seed=0, truncate_layers=1).load()


@pytest.fixture(scope="session")
def peaked_target():
    """A tiny target with confident (peaked) next-token distributions, and below its twin."""
    return tiny_spec("tiny-peaked", seed=0, init_std=1.0).load()


@pytest.fixture(scope="session")
def peaked_twin():
    """The peaked target's own weights as a separate draft engine: a perfect draft, so every
    draft is accepted and deep accepted paths (tree positions, cache keeps) are exercised."""
    return tiny_spec("tiny-peaked-twin", seed=0, init_std=1.0).load()


@pytest.fixture(scope="session")
def small_models():
    """A V=4 target and a different V=4 draft with spread-out distributions (distribution tests)."""
    kw = dict(vocab_size=4, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
              num_key_value_heads=1, init_std=0.2)
    return tiny_spec("v4-target", seed=3, **kw).load(), tiny_spec("v4-draft", seed=4, **kw).load()
