"""What a decoding method holds in memory beyond the target model.

    held_bytes(strategy)          tensors / arrays / Python containers reachable from the strategy
                                  object (n-gram tables, Token Recycling's matrix, trained heads,
                                  graphs), engines excluded
    engine_bytes(draft_engine)    a draft model's weights + its KV cache

Measured after each example (rows: `method_bytes`, with the parts in `method_memory`): what the
method KEEPS between examples and at the end of one (a draft's cache holds that example's KV).
Per-step transient buffers (a tree being verified) are freed by then and are not counted; the
process's peak (`peak_rss_mb`) covers them.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

BIG = 100_000  # containers larger than this are sized from a sample of their items


def _tensor_bytes(t: torch.Tensor, seen: set) -> int:
    try:
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError):
        return t.numel() * t.element_size()
    if key in seen:
        return 0
    seen.add(key)
    return int(key[1])


def held_bytes(obj, seen: set | None = None, depth: int = 0, ids: set | None = None) -> int:
    """Bytes reachable from obj (depth-limited walk; each tensor storage / object counted once).
    Engines (anything with a `forward` and a `tokenizer`) are skipped: the target is not the
    method's, and a draft is counted by engine_bytes."""
    seen = set() if seen is None else seen
    ids = set() if ids is None else ids
    if id(obj) in ids or depth > 6:
        return 0
    ids.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return _tensor_bytes(obj, seen)
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, torch.nn.Module):
        return sum(_tensor_bytes(p, seen) for p in obj.parameters()) + sum(_tensor_bytes(b, seen) for b in obj.buffers())
    if isinstance(obj, (str, bytes, int, float, bool, type(None))):
        return sys.getsizeof(obj) if depth > 0 else 0
    if hasattr(obj, "tokenizer") and hasattr(obj, "forward"):
        return 0
    if isinstance(obj, dict):
        items = list(obj.items())
        return sys.getsizeof(obj) + _sampled(items, lambda kv: held_bytes(kv[0], seen, depth + 1, ids)
                                             + held_bytes(kv[1], seen, depth + 1, ids))
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sys.getsizeof(obj) + _sampled(list(obj), lambda x: held_bytes(x, seen, depth + 1, ids))
    d = getattr(obj, "__dict__", None)
    if d is None or callable(obj) and not hasattr(obj, "__dict__"):
        return 0
    return sum(held_bytes(v, seen, depth + 1, ids) for k, v in d.items() if not k.startswith("__"))


def _sampled(items: list, size) -> int:
    if len(items) <= BIG:
        return sum(size(x) for x in items)
    step = len(items) // 1000
    part = items[::step][:1000]
    return int(sum(size(x) for x in part) * len(items) / len(part))


def engine_bytes(engine) -> dict:
    """A (draft) engine's weights and KV cache, bytes."""
    if engine is None:
        return {}
    seen: set = set()
    weights = sum(_tensor_bytes(p, seen) for p in engine.model.parameters())
    cache = 0
    c = getattr(engine, "cache", None)
    for layer in getattr(c, "layers", []) or []:
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if isinstance(t, torch.Tensor):
                cache += _tensor_bytes(t, seen)
    return {"draft_weights": weights, "draft_kv": cache}


def method_memory(strategy, draft=None) -> dict:
    """{part: bytes} the method holds beyond the target model (see the module docstring)."""
    out = {"strategy_state": held_bytes(strategy)}
    if draft is not None:
        out.update(engine_bytes(draft))
    return out
