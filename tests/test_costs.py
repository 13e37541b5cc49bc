"""Costs that scale: what a method holds beyond the target model (harness/memory.py)."""

import numpy as np
import torch

from harness.memory import engine_bytes, held_bytes, method_memory
from tests.conftest import tiny_spec


def test_held_bytes_counts_tensors_arrays_and_containers_once():
    t = torch.zeros(1000, dtype=torch.float32)

    class S:
        def __init__(self):
            self.a, self.b = t, t  # one storage, counted once
            self.view = t[:10]  # a view of the same storage: not counted again
            self.arr = np.zeros(500, dtype=np.int64)
            self.table = {i: torch.ones(10, dtype=torch.int64) for i in range(3)}

    n = held_bytes(S())
    tensors = 4000 + 4000 + 3 * 80  # t, arr, the three table entries
    assert tensors <= n <= tensors + 2000  # + the containers' own (small) sizes


def test_a_draft_engine_counts_its_weights_and_kv():
    eng = tiny_spec("tiny-mem", seed=0).load()
    params = sum(p.numel() * p.element_size() for p in eng.model.parameters())
    eng.reset()
    empty = engine_bytes(eng)
    assert empty["draft_weights"] == params and empty["draft_kv"] == 0
    eng.forward(list(range(5, 25)))
    kv = engine_bytes(eng)["draft_kv"]
    cfg = eng.model.config
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4
    assert kv == 20 * per_token


def test_token_recycling_holds_its_matrix():
    from strategies.token_recycling import TokenRecycling

    eng = tiny_spec("tiny-mem2", seed=0).load()
    s = TokenRecycling()
    s.setup(eng)
    m = method_memory(s)
    mat = s._adj.numel() * s._adj.element_size()
    assert mat <= m["strategy_state"] <= mat + 20_000
