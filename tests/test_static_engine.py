"""engine=static (harness/engines/static.py) equals the default engine on the same weights.

Logits, hidden states, trees (within one forward and grown across forwards), keeps, rollbacks,
early exit and embeds are compared with HFEngine on tiny random Llama and Qwen2 models (GQA,
Qwen2's biases); then every lossless strategy runs on the static engine and must be
token-identical to greedy on it, with deep accepted paths (a perfect draft, repeating prompts).
"""

from __future__ import annotations

import json

import pytest
import torch

from harness.errors import ConfigError
from harness.models import ModelSpec
from strategies.greedy import Greedy
from tests.conftest import TINY, tiny_spec
from tests.test_lossless import (MODEL_FREE_DEEP, NO_DEEP_DRAFTS, PROMPTS, check_against_greedy, load_strategy,
                                 lossless_cases)

TOL = dict(atol=1e-4, rtol=0)


def pair(arch="llama", **over):
    """(HFEngine, StaticEngine) over identical random weights."""
    a = tiny_spec("tiny-hf", seed=0, arch=arch, **over).load()
    b = ModelSpec(name="tiny-static", tiny={**TINY, "seed": 0, "arch": arch, **over}, engine="static",
                  max_len=256).load()
    return a, b


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def engines(request):
    return pair(request.param)


def test_chain_rollback_keep_tree(engines):
    a, b = engines
    for e in (a, b):
        e.reset()
    prompt = list(range(30, 50))
    assert torch.allclose(a.forward(prompt), b.forward(prompt), **TOL)
    for t in (3, 4, 5):
        assert torch.allclose(a.forward([t]), b.forward([t]), **TOL)
    for e in (a, b):
        e.rollback(2)
    assert a.length == b.length == len(prompt) + 1
    assert torch.allclose(a.forward([9, 8, 7]), b.forward([9, 8, 7]), **TOL)
    # a tree: two branches of 3
    anc = torch.eye(6, dtype=torch.bool)
    for i, p in enumerate([-1, 0, 1, -1, 3, 4]):
        if p >= 0:
            anc[i] |= anc[p]
    depth = anc.sum(1) - 1
    assert torch.allclose(a.forward([1, 2, 3, 4, 5, 6], tree=anc, depths=depth),
                          b.forward([1, 2, 3, 4, 5, 6], tree=anc, depths=depth), **TOL)
    # grown across forwards: one node below node 5
    L = a.length
    allowed = torch.zeros(1, L + 1, dtype=torch.bool)
    allowed[0, :L - 6] = True
    allowed[0, [L - 3, L - 2, L - 1, L]] = True
    d = torch.tensor([3 - 6])
    assert torch.allclose(a.forward([7], tree=allowed, depths=d), b.forward([7], tree=allowed, depths=d), **TOL)
    for e in (a, b):
        e.keep([3, 4, 5, 6], 7)
    assert a.length == b.length
    for t in (11, 12):
        assert torch.allclose(a.forward([t]), b.forward([t]), **TOL)
    assert torch.allclose(a.forward([1, 2], last_only=True), b.forward([1, 2], last_only=True), **TOL)
    for e in (a, b):
        e.truncate_to(5)
    assert torch.allclose(a.forward([100, 101]), b.forward([100, 101]), **TOL)


def test_hidden_states_embeds_and_head(engines):
    a, b = engines
    layers = (0, 1, a.num_layers - 1, a.num_layers)
    for e in (a, b):
        e.reset()
    la = a.forward([5, 6, 7, 8], hidden_layers=layers)
    lb = b.forward([5, 6, 7, 8], hidden_layers=layers)
    assert torch.allclose(la, lb, **TOL)
    for i in layers:
        assert torch.allclose(a.hidden[i].float(), b.hidden[i].float(), **TOL), f"hidden {i}"
    assert torch.allclose(a.head(a.hidden[1]), b.head(b.hidden[1]), **TOL)
    v = a.embed([9, 10]) * 0.5 + a.embed([11, 12]) * 0.5
    assert torch.allclose(a.forward(embeds=v), b.forward(embeds=v), **TOL)


def test_early_exit(engines):
    a, b = engines
    for e in (a, b):
        e.reset()
        e.forward(list(range(40, 52)))
    ha, la = a.forward_layers([3, 4], 0, 2)
    hb, lb = b.forward_layers([3, 4], 0, 2)
    assert torch.allclose(ha.float(), hb.float(), **TOL) and torch.allclose(la, lb, **TOL)
    assert b.layer_length(0) == b.layer_length(1) == 14 and b.layer_length(2) == 12
    ha2, _ = a.forward_layers(ha, 2, a.num_layers, logits=False)
    hb2, _ = b.forward_layers(hb, 2, b.num_layers, logits=False)
    assert torch.allclose(ha2.float(), hb2.float(), **TOL)
    for e in (a, b):
        e.crop_to(12)
    assert torch.allclose(a.forward([3]), b.forward([3]), **TOL)


def test_fork_and_batches_on_the_static_engine(engines):
    """StaticFork (own buffers, grown past their first capacity) == HFEngine's Fork through
    step / feed / drop_last / select with repeated rows; score_suffixes and batches too."""
    a, b = engines
    assert type(b.fork([1, 2], [[3]])).__name__ == "StaticFork"
    prompt = list(range(60, 70))
    sfx = [[5], [6, 7, 8], [], [6, 7, 8]]
    fa, fb = a.fork(prompt, sfx), b.fork(prompt, sfx)
    assert torch.allclose(fa.logits, fb.logits, **TOL)
    for t in range(300):  # past the fork's first capacity (P + 256 slots): the buffers grow
        toks = [(t * 7 + r) % 250 for r in range(fa.rows)]
        assert torch.allclose(fa.step(toks), fb.step(toks), **TOL), f"step {t}"
        if t == 5:
            for f in (fa, fb):
                f.drop_last(1, 2)
                f.select([3, 1, 1, 0])
        if t == 9:
            out = [f.feed([[1, 2], [], [3], [4, 5, 6]]) for f in (fa, fb)]
            assert torch.allclose(out[0], out[1], **TOL) and torch.allclose(fa.logits, fb.logits, **TOL)
    assert b.forwards > 0
    sa = a.score_suffixes(prompt, [[1, 2, 3], [4]], extra_ids=[5, 6])
    sb = b.score_suffixes(prompt, [[1, 2, 3], [4]], extra_ids=[5, 6])
    for (x1, y1), (x2, y2) in zip(sa, sb):
        assert torch.allclose(x1, x2, **TOL) and torch.allclose(y1, y2, **TOL)
    assert torch.allclose(a.last_logits_batch([[1, 2], [3]]), b.last_logits_batch([[1, 2], [3]]), **TOL)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_fused_projections_are_the_models_own_weights(arch):
    """q / k / v and gate / up run as one matmul each over the model's OWN storage: its parameters
    become row views of the fused blocks (nothing held twice), a second engine over the same model
    reuses them, and an in-place update of the model's weights (load_state_dict) reaches the static
    engine, whose logits still equal HFEngine's."""
    from harness.engines.static import StaticEngine

    a = tiny_spec("tiny-hf", seed=0, arch=arch).load()
    bytes_before = sum(p.numel() * p.element_size() for p in a.model.parameters())
    b = StaticEngine(a.model, a.tokenizer, "tiny-static", "float32", max_len=64)
    for i, layer in enumerate(a.model.model.layers):
        _, wqkv, bqkv, *_rest = b._w[i]
        wgu = b._w[i][6]
        at, mlp = layer.self_attn, layer.mlp
        assert at.q_proj.weight.data_ptr() == wqkv.data_ptr() and mlp.gate_proj.weight.data_ptr() == wgu.data_ptr()
        for w, big in ((at.k_proj.weight, wqkv), (at.v_proj.weight, wqkv), (mlp.up_proj.weight, wgu)):
            assert w.untyped_storage().data_ptr() == big.untyped_storage().data_ptr()
        assert (bqkv is None) == (arch == "llama")
        if bqkv is not None:
            assert at.v_proj.bias.untyped_storage().data_ptr() == bqkv.untyped_storage().data_ptr()
    assert sum(p.numel() * p.element_size() for p in a.model.parameters()) == bytes_before
    c = StaticEngine(a.model, a.tokenizer, "tiny-static-2", "float32", max_len=64)
    assert c._w[0][1].data_ptr() == b._w[0][1].data_ptr() and c._w[0][1].shape == b._w[0][1].shape
    a.model.load_state_dict(tiny_spec("tiny-other", seed=3, arch=arch).load().model.state_dict())
    prompt = list(range(30, 45))
    for e in (a, b, c):
        e.reset()
    ref = a.forward(prompt)
    assert torch.allclose(ref, b.forward(prompt), **TOL) and torch.allclose(ref, c.forward(prompt), **TOL)
    ref = a.forward([3])
    assert torch.allclose(ref, b.forward([3]), **TOL) and torch.allclose(ref, c.forward([3]), **TOL)


def test_max_len_and_bad_layouts():
    b = ModelSpec(name="tiny-static", tiny={**TINY, "seed": 0}, engine="static", max_len=16).load()
    b.forward(list(range(10)))
    with pytest.raises(ValueError, match="max_len"):
        b.forward(list(range(10)))
    assert b.length == 10  # nothing written by the refused forward
    with pytest.raises(ConfigError, match="engine=static drives"):
        ModelSpec(name="g", tiny={**TINY, "arch": "gemma3_text", "head_dim": 16}, engine="static").check_engine()
    with pytest.raises(ConfigError, match="engine 'fast'"):
        ModelSpec(name="x", tiny=dict(TINY), engine="fast")


@pytest.fixture(scope="module")
def static_models():
    mk = lambda name, seed, **o: ModelSpec(name=name, tiny={**TINY, "seed": seed, **o}, engine="static",  # noqa: E731
                                           max_len=256).load()
    return {"target": mk("s-target", 0), "other": mk("s-draft", 1, num_hidden_layers=1),
            "peaked": mk("s-peaked", 0, init_std=1.0), "perfect": mk("s-twin", 0, init_std=1.0)}


CASES = [(n, k, d) for n, k, d in lossless_cases() if k in (None, 3) and d in (None, "other", "perfect")]


@pytest.mark.parametrize("name,k,draft_kind", CASES)
def test_lossless_strategy_on_static_engine(name, k, draft_kind, static_models):
    """Every lossless strategy, on the static engine, token-identical to greedy on it; the perfect
    draft and the repeating prompts must give accepted paths of 3+ (rollbacks and keeps)."""
    m = static_models
    target = m["peaked"] if draft_kind == "perfect" else m["target"]
    draft = m.get(draft_kind) if draft_kind else None
    s = load_strategy(name, ["strategy.sampling.temperature=0"] if name != "greedy" else [])
    if k is not None:
        s.k = k
    if hasattr(s, "step_model"):
        s.step_model = {"target_a": 1.0, "target_b": 0.0, "draft_token_s": 0.0}
    deepest = check_against_greedy(s, target, draft, where=" on the static engine")
    if (draft_kind == "perfect" or name in MODEL_FREE_DEEP) and name not in NO_DEEP_DRAFTS:
        assert deepest >= 3, f"{name} never accepted 3+ drafts on the static engine"


def test_static_greedy_equals_hf_greedy():
    a, b = pair("qwen2")
    for p in PROMPTS:
        g = Greedy()
        assert g.generate(a, p, 40, torch.Generator()).tokens == g.generate(b, p, 40, torch.Generator()).tokens


def test_runner_on_the_static_engine(tmp_path):
    """`model.engine=static` through the runner: the same outputs as the default engine, a run of
    its own (another config), the engine named in meta.json; the default engine's hash unchanged
    by the new keys."""
    from harness.runner import config_hash, run
    from harness.store import read_rows
    from tests.helpers import cfg_for, run_dirs

    over = ("task.limit=3", "strategy=pld", "run.paired_baseline=true")
    run(cfg_for(tmp_path, *over))
    run(cfg_for(tmp_path, *over, "model.engine=static", "model.max_len=512"))
    dirs = run_dirs(tmp_path)
    assert len(dirs) == 2
    rows = [sorted(read_rows(d / "rows.jsonl"), key=lambda r: r["example_id"]) for d in dirs]
    assert [r["output_tokens"] for r in rows[0]] == [r["output_tokens"] for r in rows[1]]
    metas = [json.loads((d / "meta.json").read_text())["model_spec"] for d in dirs]
    assert sorted(m.get("engine", "hf") for m in metas) == ["hf", "static"]
    cfg = cfg_for(tmp_path, *over)
    bare = cfg.copy()
    from omegaconf import open_dict

    with open_dict(bare):
        for key in ("engine", "max_len", "compile"):
            bare.model.pop(key)
    assert config_hash(cfg) == config_hash(bare)
