"""The masked-diffusion engine and the dLLM strategies (#14), on tiny models of the real layouts.

Engine: attention is bidirectional (a later token changes an earlier position's logits), Dream's
shift, counters, batched canvases == single canvases; LLaDA- and Dream-layout checkpoints load
through the real path and give their source model's logits. Strategies: top-k at k = canvas is
one forward of argmaxes; threshold gamma = 1 is one-per-step, gamma = 0 one step; blocks decode
left to right; FreeDave == one-token-per-step on every prompt with strictly fewer forwards on
some; Learn2PD's filter; the paradigm check refuses mismatches before any model loads; AUP by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.errors import ConfigError
from harness.models import ModelSpec
from strategies.core.diffusion import Canvas, next_fix, position_scores
from strategies.dllm_threshold import DllmThreshold
from strategies.dllm_topk import DllmTopk
from strategies.freedave import FreeDave
from tests.helpers import cfg_for, run_dirs

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, seed=0)
PROMPTS = [[10, 11, 12, 13], [40, 41, 40, 41, 40], [7], [99, 98, 97, 96, 95, 94, 93]]


def tiny_dllm(arch="llama", **kw):
    return ModelSpec(name=f"tiny-dllm-{arch}", kind="diffusion", tiny=dict(arch=arch, **TINY, **kw)).load()


@pytest.fixture(scope="module")
def llama():
    return tiny_dllm("llama", init_std=0.3)


def rng():
    return torch.Generator().manual_seed(0)


# ---------------------------------------------------------------------------- the engine
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_attention_is_bidirectional_and_counted(arch):
    e = tiny_dllm(arch)
    a = e.canvas_logits([[1, 2, 3, 4, 5, 6]], 4)
    b = e.canvas_logits([[1, 2, 3, 4, 5, 7]], 4)  # only the LAST token differs
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-4  # ... and the first answer position sees it
    f0, t0, c0 = e.forwards, e.tokens_fed, e.canvases_fed
    batch = e.canvas_logits([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7], [9, 9, 9, 9, 9, 9]], 4)
    assert (e.forwards - f0, e.tokens_fed - t0, e.canvases_fed - c0) == (1, 18, 3)
    torch.testing.assert_close(batch[0], a[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch[1], b[0], atol=1e-5, rtol=1e-5)


def test_causal_model_would_not_see_later_tokens():
    """The control: the same weights run causally do NOT see the last token (what the test above rules out)."""
    spec = ModelSpec(name="ar", tiny=dict(arch="llama", **TINY))
    ar = spec.load()
    a = ar.model(input_ids=torch.tensor([[1, 2, 3, 4, 5, 6]])).logits[0, 2]
    b = ar.model(input_ids=torch.tensor([[1, 2, 3, 4, 5, 7]])).logits[0, 2]
    torch.testing.assert_close(a, b)


def test_dream_layout_shifts_logits():
    e = tiny_dllm("qwen2")
    assert e.shift
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    raw = e.model(input_ids=ids, attention_mask=torch.zeros(1, 1, 6, 6)).logits[0].float()
    got = e.canvas_logits(ids, 3)[0]
    torch.testing.assert_close(got, raw[2:5], atol=1e-5, rtol=1e-5)  # answer positions 3..5 read at 2..4


def _word_tokenizer():
    from tools.train_dllm import build_tokenizer

    return build_tokenizer(["a", " a", "b", " b", "[", "]", '"', ",", " \""])


def _source_model(arch):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1)
    kw = dict(vocab_size=16, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=4 if arch == "llama" else 2, max_position_embeddings=64, tie_word_embeddings=False)
    return (LlamaForCausalLM(LlamaConfig(**kw)) if arch == "llama" else Qwen2ForCausalLM(Qwen2Config(**kw))).eval()


def test_llada_layout_loads_through_the_real_path(tmp_path):
    """A LLaDA-format folder (OLMo-style config keys and parameter names) -> the Llama modules."""
    from safetensors.torch import save_file

    from harness.engines.diffusion import LLADA_NAMES, make_bidirectional

    src = _source_model("llama")
    inv = {v: k for k, v in LLADA_NAMES.items()}
    sd = {}
    for k, v in src.state_dict().items():
        if k == "model.embed_tokens.weight":
            sd["model.transformer.wte.weight"] = v
        elif k == "model.norm.weight":
            sd["model.transformer.ln_f.weight"] = v
        elif k == "lm_head.weight":
            sd["model.transformer.ff_out.weight"] = v
        else:
            _, _, i, *rest = k.split(".")
            sd[f"model.transformer.blocks.{i}.{inv['.'.join(rest[:-1])]}.{rest[-1]}"] = v
    folder = tmp_path / "llada"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(folder / "model.safetensors"))
    c = src.config
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llada", "d_model": 32, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2, "mlp_hidden_size": 48,
        "vocab_size": 16, "embedding_size": 16, "max_sequence_length": 64, "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_parameters["rope_theta"], "block_type": "llama", "include_bias": False,
        "weight_tying": False}))
    _word_tokenizer().save_pretrained(folder)
    e = ModelSpec(name="llada-tiny", hub_id=str(folder), kind="diffusion", mask_token_id=2).load()
    assert not e.shift and e.mask_id == 2
    make_bidirectional(src)
    ids = torch.tensor([[3, 4, 5, 6, 2, 2]])
    want = src(input_ids=ids, attention_mask=torch.zeros(1, 1, 6, 6)).logits[0, -2:]
    torch.testing.assert_close(e.canvas_logits(ids, 2)[0], want, atol=1e-5, rtol=1e-5)


def test_dream_layout_loads_through_the_real_path(tmp_path):
    from safetensors.torch import save_file

    from harness.engines.diffusion import make_bidirectional

    src = _source_model("qwen2")
    folder = tmp_path / "dream"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(folder / "model.safetensors"))
    cfg = {k: v for k, v in src.config.to_dict().items() if k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings", "rope_parameters")}
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "Dream", "architectures": ["DreamModel"]}))
    _word_tokenizer().save_pretrained(folder)
    e = ModelSpec(name="dream-tiny", hub_id=str(folder), kind="diffusion", mask_token_id=2).load()
    assert e.shift
    make_bidirectional(src)
    ids = torch.tensor([[3, 4, 5, 6, 2, 2]])
    want = src(input_ids=ids, attention_mask=torch.zeros(1, 1, 6, 6)).logits[0, -3:-1]  # shifted
    torch.testing.assert_close(e.canvas_logits(ids, 2)[0], want, atol=1e-5, rtol=1e-5)


def test_unknown_layout_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ConfigError, match="not a masked-diffusion layout"):
        ModelSpec(name="x", hub_id=str(tmp_path), kind="diffusion").load()


# ---------------------------------------------------------------------------- canvas and strategies
def test_topk_whole_canvas_is_one_forward_of_argmaxes(llama):
    t = DllmTopk(k=12).generate(llama, PROMPTS[0], 12, rng())
    assert t.target_forwards == 1
    full = llama.canvas_logits([PROMPTS[0] + [llama.mask_id] * 12], 12)[0].argmax(-1).tolist()
    eos = next((i for i, x in enumerate(full) if x in llama.eos_ids), None)
    assert t.tokens == (full if eos is None else full[: eos + 1])


def test_one_per_step_fixes_the_most_confident_position_each_forward(llama):
    """k = 1 by hand: each forward, the highest p(argmax) masked position gets its argmax."""
    L = 8
    ids = torch.tensor(PROMPTS[1] + [llama.mask_id] * L)
    for _ in range(L):
        lg = llama.canvas_logits(ids[None], L)[0]
        masked = [j for j in range(L) if int(ids[len(PROMPTS[1]) + j]) == llama.mask_id]
        p = torch.softmax(lg, -1).max(-1)
        j = max(masked, key=lambda j: (float(p.values[j]), -j))
        ids[len(PROMPTS[1]) + j] = int(p.indices[j])
    t = DllmTopk(k=1).generate(llama, PROMPTS[1], L, rng())
    want = ids[len(PROMPTS[1]):].tolist()
    assert t.tokens == want[: next((i + 1 for i, x in enumerate(want) if x in llama.eos_ids), L)]
    assert t.target_forwards == L and t.extra["positions_per_forward"] == 1.0


@pytest.mark.parametrize("rule", ["confidence", "margin", "entropy", "random"])
def test_topk_forwards_follow_k(llama, rule):
    for k, f in ((1, 16), (2, 8), (4, 4), (5, 4), (16, 1)):
        t = DllmTopk(k=k, rule=rule).generate(llama, PROMPTS[0], 16, rng())
        assert t.target_forwards == f and t.extra["positions_decoded"] == 16


def test_scores_rank_as_named():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.4, 0.0 + 1e-9], [0.45, 0.1, 0.45]]))
    _, c = position_scores(logits, "confidence")
    _, m = position_scores(logits, "margin")
    _, h = position_scores(logits, "entropy")
    assert c.argmax() == 1 and m.argmin() == 2 and h.argmax() == 1


def test_blocks_decode_left_to_right(llama):
    canvas = Canvas(llama, PROMPTS[0], 12, block_length=4)
    DllmTopk(k=1).decode(canvas, rng())
    steps = canvas.fixed_at
    for b in range(2):  # every position of block b is fixed before any of block b + 1
        assert max(steps[4 * b:4 * b + 4]) < min(steps[4 * b + 4:4 * b + 8])


def test_threshold_extremes(llama):
    one = DllmTopk(k=1).generate(llama, PROMPTS[0], 10, rng())
    strict = DllmThreshold(gamma=1.0).generate(llama, PROMPTS[0], 10, rng())
    assert strict.tokens == one.tokens and strict.target_forwards == 10
    loose = DllmThreshold(gamma=0.0).generate(llama, PROMPTS[0], 10, rng())
    assert loose.target_forwards == 1


def test_eos_stop_fills_after_the_first_eos():
    e = tiny_dllm("llama")
    c = Canvas(e, [1, 2], 6, eos_stop=True)
    c.ids[c.P + 3] = 256  # an EOS fixed at answer position 3
    c.fix([0], [65])
    assert c.answer.tolist()[4:] == [256, 256] and c.filled_by_eos == 2 and not c.done
    c.fix([1, 2], [66, 67])
    assert c.done


# ---------------------------------------------------------------------------- FreeDave is lossless
@pytest.fixture(scope="module")
def peaked():
    return tiny_dllm("llama", init_std=1.0)


@pytest.mark.parametrize("block", [0, 4])
@pytest.mark.parametrize("eos_stop", [False, True])
def test_freedave_equals_one_per_step_with_fewer_forwards(llama, peaked, block, eos_stop):
    fewer = 0
    for e in (llama, peaked):
        for p in PROMPTS:
            for rule in ("confidence", "margin"):
                ref = DllmTopk(k=1, rule=rule, block_length=block, eos_stop=eos_stop).generate(e, p, 16, rng())
                for m in (2, 4, 8):
                    fd = FreeDave(draft_steps=m, rule=rule, block_length=block, eos_stop=eos_stop).generate(e, p, 16, rng())
                    assert fd.tokens == ref.tokens, (p, rule, m)
                    assert fd.target_forwards <= ref.target_forwards
                    fewer += fd.target_forwards < ref.target_forwards
    assert fewer > 0


def test_freedave_on_the_trained_model_accepts_deep_drafts():
    """The task-trained dLLM (committed weights) is confident: FreeDave skips most forwards, same output."""
    cfg = ROOT / "conf" / "model" / "waitline_mdlm.yaml"
    if not cfg.exists():
        pytest.skip("no trained waitline model config")
    from omegaconf import OmegaConf
    from hydra.utils import instantiate

    e = instantiate(OmegaConf.load(cfg), _convert_="all").load()
    msgs = [{"role": "user", "content": 'You are managing a waiting line at a customer service desk.\nYou need to '
             'record the following people in the order they arrived:\n["Billy Ramos", "Alan Wells", "Grace Wright"]'
             '\nPlease copy the list exactly and provide only the final list.\n'}]
    ids = e.render(msgs)
    ref = DllmTopk(k=1).generate(e, ids, 32, rng())
    fd = FreeDave(draft_steps=8).generate(e, ids, 32, rng())
    assert fd.tokens == ref.tokens
    assert fd.target_forwards <= ref.target_forwards / 2
    from tasks.parallelbench import parse_list

    assert len(parse_list(e.decode(ref.tokens), strict=True)) == 3  # a well-formed list of three names


def test_freedave_refuses_a_random_rule():
    with pytest.raises(ConfigError, match="deterministic"):
        FreeDave(rule="random")


# ---------------------------------------------------------------------------- Learn2PD
def test_learn2pd_filter_trains_and_trades_forwards(tmp_path, llama):
    from strategies.learn2pd import Filter, Learn2PD, model_identity, save_filter
    from tools.train_learn2pd import collect

    X, Y, G = collect(llama, PROMPTS, 10, 0)
    assert X.shape[0] == Y.shape[0] == sum(range(1, 11)) * len(PROMPTS)  # one row per masked position per step
    assert float(Y.mean()) > 0  # some predictions are already final
    f = Filter()
    opt = torch.optim.Adam(f.parameters(), lr=1e-2)
    for _ in range(100):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(f(X), Y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = save_filter(tmp_path / "f.pt", f, {"model": model_identity(llama)})
    fw = [Learn2PD(str(path), threshold=t, eos_stop=False).generate(llama, PROMPTS[0], 10, rng()).target_forwards
          for t in (0.05, 0.5, 0.99)]
    assert fw[0] <= fw[1] <= fw[2] <= 10 and fw[0] < fw[2]  # the threshold really trades forwards


def test_learn2pd_refuses_a_foreign_filter(tmp_path, llama):
    from strategies.learn2pd import Filter, Learn2PD, save_filter

    path = save_filter(tmp_path / "f.pt", Filter(), {"model": {"name": "someone-else"}})
    s = Learn2PD(str(path))
    with pytest.raises(ConfigError, match="trained for"):
        s.setup(llama)
    with pytest.raises(ConfigError, match="does not exist"):
        Learn2PD(str(tmp_path / "missing.pt"))


# ---------------------------------------------------------------------------- runner and metrics
@pytest.mark.parametrize("model,strategy", [("tiny_random", "dllm_topk"), ("tiny_random_dllm", "greedy"),
                                            ("tiny_random_dllm", "pld")])
def test_paradigm_mismatch_is_refused_before_loading(tmp_path, model, strategy, monkeypatch):
    from harness.runner import run

    def boom(self, *a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(ModelSpec, "load", boom)
    with pytest.raises(ConfigError, match="decodes (autoregressive|diffusion) models"):
        run(cfg_for(tmp_path, f"model={model}", f"strategy={strategy}", "task.limit=1"))
    assert not [p for p in tmp_path.glob("*") if p.name != "_hydra"]


def test_diffusion_run_writes_ordinary_rows(tmp_path):
    from harness.runner import run
    from harness.store import read_rows

    s = run(cfg_for(tmp_path, "model=tiny_random_dllm", "strategy=dllm_topk", "strategy.k=4", "task.limit=2",
                    "run.max_new_tokens=8"))
    (d,) = run_dirs(tmp_path)
    rows = read_rows(d / "rows.jsonl")
    assert len(rows) == 2 and all(r["error"] is None and r["target_forwards"] == 2 for r in rows)
    assert s["extra_per_example"]["positions_per_forward"] == 4.0


def test_aup_by_hand():
    from harness.metrics import aup

    # rho 1, 2, 4 at 90, 88, 60 %: the 60 point is more than 5 below 90 and is dropped;
    # W(88) = exp(-3 (1 - 88/90)), W(90) = 1; AUP = 1 * 90 * 1 + (2 - 1) (88 W(88) + 90 * 1) / 2
    import math

    w = math.exp(-3 * (1 - 88 / 90))
    assert aup([2, 1, 4], [88, 90, 60]) == pytest.approx(90 + (88 * w + 90) / 2)
    # one point at half the best accuracy: weighted by W(50) = exp(-1.5) (speed alone earns nothing)
    assert aup([1], [50], y_max=100) == pytest.approx(50 * math.exp(-1.5))
    with pytest.raises(ValueError):
        aup([0], [1])
