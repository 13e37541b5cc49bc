"""PRM adapters (scorers/prm.py) on tiny random models of the real architectures and heads.

Each model is built in-process with a small real tokenizer (BPE trained on a few sentences, with
the special tokens the format needs), saved in the released checkpoint layout, and loaded back
through the adapter's real loading path. The expected scores come from independent
re-implementations of each model's published recipe (model card / reference inference code)
on the in-memory modules, so a formatting or position bug in the adapter fails here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from torch import nn
from transformers import AutoTokenizer

from scorers import prm
from harness.errors import ConfigError
from scorers.lm_judge import LMJudge
from tests.conftest import DEVICE, ROOT

CORPUS = [
    "Janet has 16 eggs. She eats 3 for breakfast and bakes 4 into muffins. How many are left?",
    "Step 1: She has 16 - 3 = 13 eggs left. ки\nStep 2: Then 13 - 4 = 9 eggs remain. ки",
    "Step 3: The answer is 9 ки\nStep 1: 2 + 2 = 4 ки\nStep 2: 4 * 3 = 12 ки",
    "A train travels 60 miles per hour for 2 hours. How far does it go?",
    "The distance is 60 * 2 = 120 miles.\nSo the answer is \\boxed{120}.",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "First add the numbers. Then multiply by two. Finally subtract one + - = * /",
    "ки ки ки + - + - Step Step answer answer numbers eggs left \n\n 0 1 2 3 4 5 6 7 8 9",
]
QWEN_TEMPLATE = ("{%- for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
                 "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}")
QUESTION = "Janet has 16 eggs. She eats 3 and bakes 4. How many are left?"
STEPS = ["She has 16 - 3 = 13 eggs left.", "Then 13 - 4 = 9 eggs remain.", "The answer is \\boxed{9}."]
CANDIDATES = [STEPS, ["First add the numbers.", "2 + 2 = 4"], [], ["The answer is 12.", "Step 2: 4 * 3 = 12",
                                                                  "So 12 eggs\nare left.", "Finally 9."]]
TOL = 1e-5


def make_tokenizer(special: list[str], *, metaspace: bool = False, bos: str | None = None, eos: str | None = None,
                   pad: str | None = None, chat_template: str | None = None):
    """A real fast tokenizer (BPE, trained here in milliseconds) wrapped as a transformers tokenizer."""
    from transformers import PreTrainedTokenizerFast

    if metaspace:  # sentencepiece style (Mistral / Llama): "▁" marks word starts, a space is prepended
        tk = Tokenizer(models.BPE(unk_token="<unk>"))
        tk.pre_tokenizer = pre_tokenizers.Sequence([  # like sentencepiece's byte pieces, "\n" never merges
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")])
        tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=special, show_progress=False)
    else:  # byte-level BPE (Qwen2 style)
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(CORPUS, trainer)
    if bos:  # the tokenizer adds BOS itself (Llama / Mistral)
        tk.post_processor = processors.TemplateProcessing(single=f"{bos} $A",
                                                          special_tokens=[(bos, tk.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos, pad_token=pad,
                                   unk_token="<unk>" if metaspace else None, chat_template=chat_template)


def tiny_qwen2_config(vocab_size: int, **over):
    from transformers import Qwen2Config

    kw = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.3, tie_word_embeddings=False)
    return Qwen2Config(**{**kw, **over})


def write_checkpoint(path: Path, config, state: dict, tokenizer, **config_extra) -> Path:
    """A local HF-format directory: config.json + model.safetensors + tokenizer files."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = config.to_dict()
    cfg.update(config_extra)
    (path / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path / "model.safetensors"),
              metadata={"format": "pt"})
    tokenizer.save_pretrained(path)
    return path


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """Qwen2.5-Math-PRM's layout written by hand from plain modules (not our class): `model.*`,
    `score.0.*`, `score.2.*`, config with the hub's remote-code architecture + auto_map."""
    from transformers.models.qwen2.modeling_qwen2 import Qwen2Model

    tok = make_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"], eos="<|im_end|>",
                         pad="<|endoftext|>", chat_template=QWEN_TEMPLATE)
    config = tiny_qwen2_config(len(tok))
    torch.manual_seed(0)
    backbone = Qwen2Model(config).eval()
    head = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2)).eval()
    nn.init.normal_(head[2].weight, std=1.0)
    state = {**{f"model.{k}": v for k, v in backbone.state_dict().items()},
             **{f"score.{k}": v for k, v in head.state_dict().items()}}
    path = write_checkpoint(tmp_path_factory.mktemp("qwen_prm"), config, state, tok,
                            architectures=["Qwen2ForProcessRewardModel"],
                            auto_map={"AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"})
    scorer = prm.QwenMathPRM(hub_id=str(path), dtype="float32", device=DEVICE, batch_size=8)
    scorer.bind(None)
    tok = AutoTokenizer.from_pretrained(path)  # as the card loads it (transformers may rebuild parts of it)

    def reference(question, steps):  # the model card's recipe
        messages = [{"role": "system", "content": prm.QwenMathPRM.SYSTEM}, {"role": "user", "content": question},
                    {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"}]
        conv = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = torch.tensor([tok.encode(conv)])
        with torch.no_grad():
            probs = torch.softmax(head(backbone(input_ids=ids).last_hidden_state), -1)
        return probs[0][ids[0] == tok.encode("<extra_0>")[0]][:, 1].tolist()

    return scorer, reference, path


@pytest.fixture(scope="module")
def shepherd(tmp_path_factory):
    """Math-Shepherd: a plain MistralForCausalLM saved with save_pretrained + a sentencepiece-style tokenizer."""
    from transformers import MistralConfig, MistralForCausalLM

    tok = make_tokenizer(["<unk>", "<s>", "</s>"], metaspace=True, bos="<s>", eos="</s>")
    config = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                           initializer_range=0.3, tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                           eos_token_id=tok.eos_token_id)
    torch.manual_seed(1)
    lm = MistralForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("shepherd")
    lm.save_pretrained(path)
    tok.save_pretrained(path)
    scorer = prm.MathShepherdPRM(hub_id=str(path), dtype="float32", device=DEVICE, batch_size=8)
    scorer.bind(None)
    tok = AutoTokenizer.from_pretrained(path)

    def reference(question, steps):  # the model card's recipe
        candidate_tokens = tok.encode("+ -")[1:]
        step_tag_id = tok.encode("ки")[-1]
        output = "\n".join(f"Step {i}: {s} ки" for i, s in enumerate(steps, 1))
        ids = torch.tensor([tok.encode(f"{question} {output}")])
        with torch.no_grad():
            scores = lm(ids).logits[:, :, candidate_tokens].softmax(dim=-1)[:, :, 0]
        return scores[ids == step_tag_id].tolist()

    return scorer, reference, (lm, tok)


@pytest.fixture(scope="module")
def skywork(tmp_path_factory):
    """Skywork-o1-Open-PRM's layout: a Qwen2ForCausalLM's keys (lm_head included) + `v_head.summary.*`,
    as the trl-style value-head wrapper saves them."""
    from transformers import Qwen2ForCausalLM

    tok = make_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos="<|endoftext|>",
                         eos="<|endoftext|>", pad="<|endoftext|>")
    tok._tokenizer.post_processor = None  # Qwen2 tokenizers add no BOS by themselves
    config = tiny_qwen2_config(len(tok))
    torch.manual_seed(2)
    lm = Qwen2ForCausalLM(config).eval()
    v_head = nn.Linear(32, 1).eval()
    nn.init.normal_(v_head.weight, std=1.0)
    state = {**lm.state_dict(), "v_head.summary.weight": v_head.weight, "v_head.summary.bias": v_head.bias}
    path = write_checkpoint(tmp_path_factory.mktemp("skywork"), config, state, tok, architectures=["Qwen2ForPrmModel"])
    scorer = prm.SkyworkPRM(hub_id=str(path), dtype="float32", device=DEVICE, batch_size=8)
    scorer.bind(None)
    tok = AutoTokenizer.from_pretrained(path)

    def reference(question, steps):  # skywork-o1-prm-inference prepare_input + sigmoid at reward flags
        ids = tok.encode(tok.bos_token + question + "\n")
        flags = [0] * len(ids)
        step_token_id = tok.encode("\n")[-1]
        for step in "\n".join(steps).split("\n"):
            step_ids = (tok.encode(step) if step != "" else []) + [step_token_id]
            ids += step_ids
            flags += [0] * (len(step_ids) - 1) + [1]
        x = torch.tensor([ids])
        with torch.no_grad():
            values = v_head(lm(x, output_hidden_states=True).hidden_states[-1]).squeeze(-1)
        return torch.sigmoid(values[0][torch.tensor(flags) == 1]).tolist()

    return scorer, reference, path


ADAPTERS = ["qwen", "shepherd", "skywork"]


@pytest.fixture(params=ADAPTERS)
def adapter(request):
    return request.getfixturevalue(request.param)


# --------------------------------------------------------------------------- scoring
def test_scores_match_published_recipe(adapter):
    """Released-layout weights loaded through the adapter give the recipe's numbers, one per step."""
    scorer, reference, _ = adapter
    for steps in (STEPS, STEPS[:1], ["First add the numbers.", "2 + 2 = 4"]):
        got = scorer.score(QUESTION, [steps])[0]
        want = reference(QUESTION, steps)
        assert len(got) == len(steps) == len(want)
        assert all(0.0 <= s <= 1.0 for s in got)
        assert max(abs(a - b) for a, b in zip(got, want)) < TOL, (got, want)
    # a degenerate head (all 0.5) would make every other test vacuous
    assert max(scorer.score(QUESTION, [STEPS])[0]) - min(scorer.score(QUESTION, [STEPS])[0]) > 1e-3


def test_one_score_per_step_and_empty_candidates(adapter):
    scorer = adapter[0]
    out = scorer.score(QUESTION, CANDIDATES)
    assert [len(s) for s in out] == [len(c) for c in CANDIDATES]
    assert all(0.0 <= v <= 1.0 for s in out for v in s)
    assert scorer.score(QUESTION, []) == []
    assert scorer.score_last(QUESTION, CANDIDATES) == [s[-1] if s else 0.0 for s in out]


def test_causal_step_scores(adapter):
    """Step i's score depends only on tokens up to its tag: editing step i+1 leaves steps <= i alone,
    while editing step i does move it (so the check can fail)."""
    scorer = adapter[0]
    base = scorer.score(QUESTION, [STEPS])[0]
    edited_next = scorer.score(QUESTION, [[STEPS[0], "First add the numbers.", STEPS[2]]])[0]
    assert abs(edited_next[0] - base[0]) < TOL
    assert abs(edited_next[1] - base[1]) > 1e-4
    dropped = scorer.score(QUESTION, [STEPS[:2]])[0]
    assert max(abs(a - b) for a, b in zip(dropped, base[:2])) < TOL
    edited_first = scorer.score(QUESTION, [["Finally 9."] + STEPS[1:]])[0]
    assert abs(edited_first[0] - base[0]) > 1e-4


def test_batching_equals_one_by_one_and_counts_forwards(adapter):
    scorer = adapter[0]
    calls, tokens = scorer.calls, scorer.tokens
    batched = scorer.score(QUESTION, CANDIDATES)
    assert scorer.calls - calls == 1  # 3 non-empty candidates, batch_size 8: one padded forward
    lens = [len(scorer.encode(QUESTION, c)[0]) for c in CANDIDATES if c]
    assert scorer.tokens - tokens == sum(lens) and len(set(lens)) > 1  # padding really happened
    single = [scorer.score(QUESTION, [c])[0] for c in CANDIDATES]
    for a, b in zip(batched, single):
        assert len(a) == len(b) and all(abs(x - y) < TOL for x, y in zip(a, b))
    scorer.batch_size = 2
    try:
        calls = scorer.calls
        again = scorer.score(QUESTION, CANDIDATES)
        assert scorer.calls - calls == 2
        assert all(abs(x - y) < TOL for a, b in zip(again, batched) for x, y in zip(a, b))
    finally:
        scorer.batch_size = 8


@pytest.mark.parametrize("name", ADAPTERS)
def test_positions_hit_step_tags(name, request):
    """Score positions fall on the format's tag tokens (checked on the formatted ids)."""
    scorer = request.getfixturevalue(name)[0]
    ids, pos = scorer.encode(QUESTION, STEPS)
    assert len(pos) == len(STEPS) and pos == sorted(pos) and pos[-1] < len(ids)
    tok = scorer.tokenizer
    tag = {"qwen": scorer.tag_id if name == "qwen" else None,
           "shepherd": tok.encode("ки")[-1], "skywork": tok.encode("\n")[-1]}[name]
    assert all(ids[p] == tag for p in pos)
    if name == "qwen":  # the tag appears nowhere else, and a literal tag in the text adds no step
        assert ids.count(tag) == len(STEPS)
        assert len(scorer.score(QUESTION + "<extra_0>", [["a <extra_0> b", "c"]])[0]) == 2


def test_shepherd_numbered_steps_and_full_logits(shepherd):
    """Steps already numbered "Step k:" are not prefixed twice; the two-row head equals the full LM
    logits restricted to the candidate tokens."""
    scorer, reference, (lm, tok) = shepherd
    numbered = [f"Step {i}: {s}" for i, s in enumerate(STEPS, 1)]
    assert scorer.encode(QUESTION, numbered) == scorer.encode(QUESTION, STEPS)
    plain = prm.MathShepherdPRM(hub_id="x", dtype="float32", step_prefix="").attach(lm, tok)
    ids, _ = plain.encode(QUESTION, STEPS)
    assert "Step" not in tok.decode(ids)
    # attaching the in-memory module gives the loaded adapter's numbers
    mem = prm.MathShepherdPRM(hub_id="x", dtype="float32").attach(lm, tok)
    assert all(abs(a - b) < TOL for a, b in zip(mem.score(QUESTION, [STEPS])[0], scorer.score(QUESTION, [STEPS])[0]))


def test_skywork_knobs(skywork):
    """score_at=last_token reads the step's own last token (one before the separator);
    split_lines feeds a multi-line step as reference steps (one separator per line)."""
    scorer, reference, path = skywork
    last = prm.SkyworkPRM(hub_id=str(path), dtype="float32", device=DEVICE, score_at="last_token")
    last.bind(None)
    ids_sep, pos_sep = scorer.encode(QUESTION, STEPS)
    ids_last, pos_last = last.encode(QUESTION, STEPS)
    assert ids_sep == ids_last and pos_last == [p - 1 for p in pos_sep]
    multi = ["She has 16 - 3 = 13 eggs left.\nThen 13 - 4 = 9 eggs remain.", "The answer is \\boxed{9}."]
    got = scorer.score(QUESTION, [multi])[0]
    want = reference(QUESTION, multi)  # the reference sees three steps
    assert len(want) == 3 and abs(got[0] - want[1]) < TOL and abs(got[1] - want[2]) < TOL
    joined = prm.SkyworkPRM(hub_id=str(path), dtype="float32", device=DEVICE, split_lines=False)
    joined.bind(None)
    tok, sep = joined.tokenizer, joined.sep_id
    prompt = tok.encode(tok.bos_token + QUESTION + "\n")
    assert joined.encode(QUESTION, multi)[0] == prompt + tok.encode(multi[0]) + [sep] + tok.encode(multi[1]) + [sep]
    assert scorer.encode(QUESTION, multi)[0] == (prompt + tok.encode(multi[0].split("\n")[0]) + [sep]
                                                 + tok.encode(multi[0].split("\n")[1]) + [sep]
                                                 + tok.encode(multi[1]) + [sep])


# --------------------------------------------------------------------------- loading
def test_qwen_checkpoint_layout_is_the_released_one(qwen):
    """The saved file has exactly the released key names and our module consumed all of them."""
    scorer, _, path = qwen
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    head = {k for k in keys if not k.startswith("model.")}
    assert head == {"score.0.weight", "score.0.bias", "score.2.weight", "score.2.bias"}
    assert set(scorer.model.state_dict()) == keys


def test_roundtrip_save_pretrained(qwen, tmp_path):
    """Our module saved with save_pretrained loads back to the same scores (architectures name kept)."""
    scorer = qwen[0]
    scorer.model.save_pretrained(tmp_path)
    scorer.tokenizer.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["Qwen2ForProcessRewardModel"]
    again = prm.QwenMathPRM(hub_id=str(tmp_path), dtype="float32", device=DEVICE)
    again.bind(None)
    a, b = again.score(QUESTION, [STEPS])[0], scorer.score(QUESTION, [STEPS])[0]
    assert max(abs(x - y) for x, y in zip(a, b)) < TOL


@pytest.mark.parametrize("cls", [prm.QwenMathPRM, prm.MathShepherdPRM, prm.SkyworkPRM])
def test_missing_hub_id_is_a_config_error(cls):
    bad = "no-such-org/no-such-prm-model"
    with pytest.raises(ConfigError, match="no-such-org/no-such-prm-model"):
        cls(hub_id=bad, local_files_only=True).bind(None)


def test_missing_head_weights_is_a_config_error(tmp_path):
    """A plain Qwen2 causal LM is not a PRM: the head would be random, so loading refuses."""
    from transformers import Qwen2ForCausalLM

    tok = make_tokenizer(["<|endoftext|>", "<extra_0>"], pad="<|endoftext|>", chat_template=QWEN_TEMPLATE)
    Qwen2ForCausalLM(tiny_qwen2_config(len(tok))).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="score"):
        prm.QwenMathPRM(hub_id=str(tmp_path), dtype="float32", device="cpu").bind(None)
    with pytest.raises(ConfigError, match="v_head"):
        prm.SkyworkPRM(hub_id=str(tmp_path), dtype="float32", device="cpu").bind(None)


@pytest.mark.parametrize("kw", [dict(dtype="fp8"), dict(device="tpu"), dict(batch_size=0), dict(hub_id="")])
def test_bad_config_values(kw):
    for cls in (prm.QwenMathPRM, prm.MathShepherdPRM, prm.SkyworkPRM):
        with pytest.raises(ConfigError):
            cls(**kw)
    with pytest.raises(ConfigError):
        prm.SkyworkPRM(score_at="middle")
    with pytest.raises(ConfigError):
        prm.MathShepherdPRM(step_prefix="Step {n}: ")
    with pytest.raises(ConfigError):
        prm.MathShepherdPRM(good_token="+", bad_token="+")


def test_describe_and_unbound():
    s = prm.QwenMathPRM(hub_id="Qwen/Qwen2.5-Math-PRM-72B", dtype="bfloat16")
    assert s.describe() == {"name": "qwen_math_prm(Qwen2.5-Math-PRM-72B)", "hub_id": "Qwen/Qwen2.5-Math-PRM-72B",
                            "dtype": "bfloat16"}
    with pytest.raises(RuntimeError, match="bind"):
        s.score(QUESTION, [STEPS])


# --------------------------------------------------------------------------- configs
SCORER_YAMLS = {"lm_judge": LMJudge, "qwen_math_prm": prm.QwenMathPRM, "math_shepherd": prm.MathShepherdPRM,
                "skywork_prm": prm.SkyworkPRM}


@pytest.mark.parametrize("name", sorted(SCORER_YAMLS))
def test_scorer_yaml_instantiates(name):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "scorer" / f"{name}.yaml")
    obj = instantiate(cfg)
    assert type(obj) is SCORER_YAMLS[name] and obj.calls == 0
    if name != "lm_judge":
        assert obj.hub_id == obj.default_hub_id and obj.model is None  # nothing loads before bind()


def test_scorer_group_overrides_a_strategy_default():
    """`scorer@strategy.scorer=<name>` swaps the scorer node of a strategy that defaults to lm_judge."""
    from hydra import compose, initialize_config_dir

    strategy = next((p.stem for p in sorted((ROOT / "conf" / "strategy").glob("*.yaml"))
                     if "/scorer@scorer" in p.read_text()), None)
    if strategy is None:
        pytest.skip("no strategy YAML uses the scorer group yet")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=[f"strategy={strategy}", "model=tiny_random"])
        assert cfg.strategy.scorer._target_ == "scorers.lm_judge.LMJudge"
        cfg = compose(config_name="config", overrides=[f"strategy={strategy}", "model=tiny_random",
                                                       "scorer@strategy.scorer=skywork_prm"])
        assert cfg.strategy.scorer._target_ == "scorers.prm.SkyworkPRM"
        assert "model" not in cfg.strategy.scorer  # lm_judge's keys do not leak into the PRM node


@pytest.mark.parametrize("name", ADAPTERS)
def test_bfloat16_load(name, request):
    """The default dtype of the YAMLs: weights cast on load, scores still in [0, 1] near fp32."""
    scorer, _, _ = request.getfixturevalue(name)
    path = scorer.hub_id
    bf = type(scorer)(hub_id=path, dtype="bfloat16", device=DEVICE)
    bf.bind(None)
    assert next(bf.model.parameters()).dtype == torch.bfloat16
    a, b = bf.score(QUESTION, [STEPS])[0], scorer.score(QUESTION, [STEPS])[0]
    assert len(a) == len(b) and all(0.0 <= x <= 1.0 for x in a)
    assert max(abs(x - y) for x, y in zip(a, b)) < 0.1
