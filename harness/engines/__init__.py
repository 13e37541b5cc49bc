"""Engines: the one seam between strategies and weights. `Engine` (base.py) is the protocol;
`HFEngine` (hf.py) the autoregressive transformers engine with a DynamicCache; `StaticEngine`
(static.py, `model.engine=static`) the same protocol over preallocated KV and our own forward."""

from harness.engines.base import Engine
from harness.engines.hf import EARLY_EXIT_ARCHS, Fork, HFEngine, tree_mask_4d, vocabulary_fingerprint

__all__ = ["Engine", "HFEngine", "Fork", "EARLY_EXIT_ARCHS", "tree_mask_4d", "vocabulary_fingerprint"]
