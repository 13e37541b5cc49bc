"""Adapters for real process reward models (PRMs), behind the `Scorer` interface of `scorers.base`.

    scorer@strategy.scorer=qwen_math_prm      # Qwen/Qwen2.5-Math-PRM-7B (or -72B)
    scorer@strategy.scorer=math_shepherd      # peiyi9979/math-shepherd-mistral-7b-prm
    scorer@strategy.scorer=skywork_prm        # Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B (or -7B)

Each adapter formats (question, steps) the way the model's public usage describes, runs ONE
padded forward per batch of candidates (`calls` += 1, `tokens` += the real tokens fed), and reads
one score in [0, 1] per step at that step's tag position:

- `QwenMathPRM` (Qwen2.5-Math-PRM): chat template with the system prompt "Please reason step by
  step, and put your final answer within \\boxed{}.", the question as the user turn and the steps
  joined by "<extra_0>" (plus a trailing "<extra_0>") as the assistant turn; step score =
  softmax(head logits at each <extra_0> token)[1]. The hub model ships remote code
  (`Qwen2ForProcessRewardModel`); we do NOT run it: our own module wraps transformers' `Qwen2Model`
  with the same parameter names (`model.*`, head `score.0.*` = Linear(h, h), ReLU, `score.2.*` =
  Linear(h, 2)), so the released safetensors load into it without `trust_remote_code`.
- `MathShepherdPRM` (Math-Shepherd): a plain causal LM (Mistral-7B). Input
  "question + ' ' + 'Step 1: s1 ки\\nStep 2: s2 ки...'" (the model card's format; the "Step i: "
  prefix is the `step_prefix` knob); at each step tag "ки" the score is
  softmax(logits of the two candidate tokens '+', '-')[0] = P(+). The candidate ids come from
  `encode("+ -")` without the leading BOS, as on the card. Only those two rows of the LM head are
  applied (same numbers as the full logits, without the [batch, length, vocab] tensor).
- `SkyworkPRM` (Skywork-o1-Open-PRM): a Qwen2 backbone + a value head `v_head.summary` =
  Linear(h, 1) (the released checkpoint is the trl-style "CausalLM with value head": its
  `lm_head.*` is ignored here); step score = sigmoid(value) at each step end. The input mirrors
  the public inference code (skywork-o1-prm-inference `prepare_input`): ids of
  `bos_token + question + "\\n"`, then each step encoded on its own followed by the id of the step
  separator ("\\n", knob `step_separator`), the reward read at that separator token (knob
  `score_at: separator`; `last_token` reads the step's own last token instead). The reference
  splits the response at every separator; with `split_lines: true` (default) a harness step that
  contains separators is fed as those several reference steps and scored at its final one.

No PRM weights are available offline here: the loading code is real (transformers
`from_pretrained` from a hub id or a local HF-format directory, `revision`, `local_files_only`)
and fails with a ConfigError naming the id when the weights cannot be reached, or when the
checkpoint lacks weights the adapter needs (a plain LM given to a head-based adapter). The tests
(tests/test_prm.py) run every code path on tiny random models of the real architectures and
heads with small real tokenizers, including saving them in the released layouts and loading
them back through this code.

Inputs are not truncated: very long solutions go to the model whole (the PRMs were trained on
up to 4k tokens). A causal PRM has to read every token up to the last step to score it, so
`score_last` costs the same forward as `score` (one per batch) and keeps the base class's
definition.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Sequence

import torch

from harness.errors import ConfigError
from harness.models import DTYPES
from scorers.base import Scorer

DEVICES = ("cpu", "cuda", "auto")


# --------------------------------------------------------------------------- model classes
@functools.cache
def qwen_prm_class():
    """Our implementation of Qwen2.5-Math-PRM's architecture (class and parameter names as in the
    released checkpoint, so `from_pretrained` loads its safetensors as they are)."""
    from torch import nn
    from transformers.models.qwen2.modeling_qwen2 import Qwen2Model, Qwen2PreTrainedModel

    class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.model = Qwen2Model(config)
            self.score = nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.ReLU(),
                                       nn.Linear(config.hidden_size, 2))
            self.post_init()

        def forward(self, input_ids, attention_mask=None):
            """Per-token logits over (bad, good): [batch, length, 2]."""
            h = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
            return self.score(h)

    return Qwen2ForProcessRewardModel


@functools.cache
def skywork_prm_class():
    """Our implementation of Skywork-o1-Open-PRM's architecture: Qwen2 backbone + `v_head.summary`."""
    from torch import nn
    from transformers.models.qwen2.modeling_qwen2 import Qwen2Model, Qwen2PreTrainedModel

    class ValueHead(nn.Module):
        """trl-style value head: (dropout, identity at inference) -> summary Linear(h, 1)."""

        def __init__(self, hidden_size: int):
            super().__init__()
            self.summary = nn.Linear(hidden_size, 1)

        def forward(self, h):
            return self.summary(h.to(self.summary.weight.dtype))

    class Qwen2ForPrmModel(Qwen2PreTrainedModel):
        _keys_to_ignore_on_load_unexpected = [r"^lm_head\."]  # the released checkpoint keeps its LM head

        def __init__(self, config):
            super().__init__(config)
            self.model = Qwen2Model(config)
            self.v_head = ValueHead(config.hidden_size)
            self.post_init()

        def forward(self, input_ids, attention_mask=None):
            """Per-token values (pre-sigmoid): [batch, length]."""
            h = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
            return self.v_head(h).squeeze(-1)

    return Qwen2ForPrmModel


# --------------------------------------------------------------------------- shared adapter
class PRMScorer(Scorer):
    """Shared machinery: config checks, loading, padded batched forwards, gathering step scores.

    Subclasses define `_load_model`, `_setup_tokens` (special ids), `_encode(question, steps) ->
    (ids, step positions)` and `_head(hidden states at those positions) -> scores in [0, 1]`.
    """

    name = "prm"
    default_hub_id = ""

    def __init__(self, hub_id: str | None = None, dtype: str = "bfloat16", device: str = "auto",
                 batch_size: int = 8, revision: str | None = None, local_files_only: bool = False):
        super().__init__()
        hub_id = self.default_hub_id if hub_id is None else hub_id
        if not isinstance(hub_id, str) or not hub_id.strip():
            raise ConfigError(f"{self.name}: hub_id must be a hub id or a local directory, got {hub_id!r}")
        if dtype not in DTYPES:
            raise ConfigError(f"{self.name}: dtype '{dtype}' is not one of {', '.join(DTYPES)}")
        if not (device in DEVICES or re.fullmatch(r"cuda:\d+", str(device))):
            raise ConfigError(f"{self.name}: device '{device}' is not one of cpu, cuda, cuda:N, auto")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"{self.name}: batch_size must be an integer >= 1, got {batch_size!r}")
        self.hub_id, self.dtype, self.device = hub_id, dtype, device
        self.batch_size, self.revision, self.local_files_only = batch_size, revision, bool(local_files_only)
        self.model = self.tokenizer = None
        self.pad_id = 0

    # ------------------------------------------------------------------ describing
    def describe(self) -> dict:
        short = self.hub_id.rstrip("/").split("/")[-1]
        return {"name": f"{self.name}({short})", "hub_id": self.hub_id, "dtype": self.dtype}

    # ------------------------------------------------------------------ loading
    def attach(self, model, tokenizer) -> PRMScorer:
        """Use an already-built model + tokenizer (what `bind` does after loading; tests use it)."""
        self.model, self.tokenizer = model.eval(), tokenizer
        self.pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
        self._setup_tokens()
        return self

    def bind(self, policy=None) -> None:
        """Load the PRM's own weights (once; the policy engine is not used)."""
        if self.model is None:
            self.attach(*self.load())

    def load(self):
        """(model, tokenizer) from the hub id or local directory, on `device`, in `dtype`, eval mode."""
        from transformers import AutoTokenizer

        kw = {"revision": self.revision} if self.revision else {}
        if self.local_files_only:
            kw["local_files_only"] = True
        try:
            tok = AutoTokenizer.from_pretrained(self.hub_id, **kw)
            model, info = self._load_model(self.hub_id, getattr(torch, self.dtype), kw)
        except ConfigError:
            raise
        except (OSError, ValueError) as e:  # not found / offline / not a model directory / bad repo id
            first = (str(e).splitlines() or [""])[0][:300]
            raise ConfigError(f"{self.name}: cannot load '{self.hub_id}' ({e.__class__.__name__}: {first}); "
                              "offline? download it first or set hub_id to a local HF-format directory") from None
        missing = sorted(info.get("missing_keys") or [])
        if missing:  # randomly initialised weights would score garbage: refuse
            raise ConfigError(f"{self.name}: checkpoint '{self.hub_id}' lacks {len(missing)} weights this adapter "
                              f"needs (e.g. {', '.join(missing[:3])}); is it the right model?")
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return model.to(device).eval(), tok

    def _load_model(self, path: str, torch_dtype, kw: dict):
        raise NotImplementedError

    def _setup_tokens(self) -> None:
        """Resolve the special token ids the format needs (ConfigError when the tokenizer lacks them)."""

    # ------------------------------------------------------------------ scoring
    def _encode(self, question: str, steps: list[str]) -> tuple[list[int], list[int]]:
        raise NotImplementedError

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _require_bound(self) -> None:
        if self.model is None:
            raise RuntimeError(f"{self.name}: call bind() before scoring")

    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """The PRM's input ids for one candidate and the position of each step's score."""
        self._require_bound()
        return self._encode(question, list(steps))

    @torch.inference_mode()
    def _forward_hidden(self, batch: list[list[int]]) -> torch.Tensor:
        """Final hidden states [b, L, h] of a right-padded batch (one model forward).

        Right padding keeps every real token at its unpadded position 0..n-1, and a causal model's
        real tokens never attend to the pads after them, so each row's values equal its own
        unpadded forward (tested within 1e-5 in fp32)."""
        dev = next(self.model.parameters()).device
        width = max(len(x) for x in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, x in enumerate(batch):
            ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
        out = self.model.base_model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False)
        self.calls += 1
        self.tokens += sum(len(x) for x in batch)
        return out.last_hidden_state

    def score(self, question: str, candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        self._require_bound()
        out: list[list[float]] = [[] for _ in candidates]
        jobs = []
        for c, steps in enumerate(candidates):
            if steps:
                ids, pos = self._encode(question, list(steps))
                jobs.append((c, ids, pos))
        jobs.sort(key=lambda j: len(j[1]))  # similar lengths share a forward: less padding
        for b in range(0, len(jobs), self.batch_size):
            chunk = jobs[b: b + self.batch_size]
            hidden = self._forward_hidden([j[1] for j in chunk])
            rows = torch.tensor([r for r, j in enumerate(chunk) for _ in j[2]], device=hidden.device)
            cols = torch.tensor([p for j in chunk for p in j[2]], device=hidden.device)
            with torch.inference_mode():
                vals = self._head(hidden[rows, cols]).float().cpu().tolist()
            k = 0
            for c, _, pos in chunk:
                out[c] = vals[k: k + len(pos)]
                k += len(pos)
        return out


def _last_token_covering(offsets: list[tuple[int, int]], end: int) -> int:
    """Index of the last non-empty token starting before character `end` (the token holding
    character end-1, or merged across it). Offsets of special tokens that cover no text are (0, 0)."""
    starts, idx = [], []
    for i, (a, b) in enumerate(offsets):
        if b > a:
            starts.append(a)
            idx.append(i)
    k = bisect.bisect_left(starts, end) - 1
    if k < 0:
        raise RuntimeError(f"no token covers character {end - 1}")
    return idx[k]


# --------------------------------------------------------------------------- Qwen2.5-Math-PRM
class QwenMathPRM(PRMScorer):
    """Qwen2.5-Math-PRM-7B / -72B: P(good) at every <extra_0> step tag (see the module docstring)."""

    name = "qwen_math_prm"
    default_hub_id = "Qwen/Qwen2.5-Math-PRM-7B"
    SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

    def __init__(self, hub_id: str | None = None, dtype: str = "bfloat16", device: str = "auto",
                 batch_size: int = 8, revision: str | None = None, local_files_only: bool = False,
                 step_tag: str = "<extra_0>", system_prompt: str | None = None):
        super().__init__(hub_id, dtype, device, batch_size, revision, local_files_only)
        if not step_tag:
            raise ConfigError(f"{self.name}: step_tag must be a non-empty string")
        self.step_tag = step_tag
        self.system_prompt = self.SYSTEM if system_prompt is None else system_prompt
        self.tag_id = -1

    def _load_model(self, path, torch_dtype, kw):
        return qwen_prm_class().from_pretrained(path, dtype=torch_dtype, output_loading_info=True, **kw)

    def _setup_tokens(self):
        ids = self.tokenizer.encode(self.step_tag, add_special_tokens=False)
        if len(ids) != 1:
            raise ConfigError(f"{self.name}: the tokenizer does not encode the step tag {self.step_tag!r} "
                              f"as one token (got {ids})")
        self.tag_id = ids[0]

    def _encode(self, question, steps):
        tag = self.step_tag

        def clean(s: str) -> str:  # a literal tag inside the text would add a step
            return s.replace(tag, "")

        steps = [clean(s).strip() for s in steps]
        messages = [{"role": "system", "content": self.system_prompt},
                    {"role": "user", "content": clean(question)},
                    {"role": "assistant", "content": tag.join(steps) + tag}]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = list(self.tokenizer.encode(text))
        pos = [i for i, t in enumerate(ids) if t == self.tag_id]
        if len(pos) != len(steps):
            raise RuntimeError(f"{self.name}: found {len(pos)} step tags for {len(steps)} steps "
                               "(the chat template dropped or added some)")
        return ids, pos

    def _head(self, hidden):
        return torch.softmax(self.model.score(hidden).float(), -1)[:, 1]


# --------------------------------------------------------------------------- Math-Shepherd
class MathShepherdPRM(PRMScorer):
    """Math-Shepherd (Mistral-7B PRM): P('+') vs '-' at every 'ки' step tag (see the module docstring)."""

    name = "math_shepherd"
    default_hub_id = "peiyi9979/math-shepherd-mistral-7b-prm"
    _NUMBERED = re.compile(r"^step\s*\d+\s*[:.]", re.IGNORECASE)

    def __init__(self, hub_id: str | None = None, dtype: str = "bfloat16", device: str = "auto",
                 batch_size: int = 8, revision: str | None = None, local_files_only: bool = False,
                 step_tag: str = "ки", good_token: str = "+", bad_token: str = "-",
                 step_prefix: str = "Step {i}: "):
        super().__init__(hub_id, dtype, device, batch_size, revision, local_files_only)
        if not step_tag or not good_token or not bad_token or good_token == bad_token:
            raise ConfigError(f"{self.name}: need a non-empty step_tag and two different good/bad tokens")
        try:
            step_prefix.format(i=1)
        except (KeyError, IndexError, ValueError, AttributeError):
            raise ConfigError(f"{self.name}: step_prefix must be a format string using only {{i}}, "
                              f"got {step_prefix!r}") from None
        self.step_tag, self.good_token, self.bad_token, self.step_prefix = step_tag, good_token, bad_token, step_prefix
        self.candidate_ids: list[int] = []

    def _load_model(self, path, torch_dtype, kw):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, output_loading_info=True, **kw)

    def _setup_tokens(self):
        tok = self.tokenizer
        if not getattr(tok, "is_fast", False):
            raise ConfigError(f"{self.name}: needs a fast tokenizer (offsets locate the step tags)")
        ids = list(tok.encode(f"{self.good_token} {self.bad_token}"))  # as on the model card
        if ids and tok.bos_token_id is not None and ids[0] == tok.bos_token_id:
            ids = ids[1:]
        if len(ids) != 2 or ids[0] == ids[1]:
            raise ConfigError(f"{self.name}: '{self.good_token} {self.bad_token}' does not encode to two "
                              f"distinct tokens (got {ids})")
        self.candidate_ids = ids

    def _encode(self, question, steps):
        text = question.rstrip() + " "
        ends = []
        for i, s in enumerate(steps, 1):
            s = s.strip()
            if self.step_prefix and not self._NUMBERED.match(s):
                s = self.step_prefix.format(i=i) + s
            text += ("\n" if i > 1 else "") + s + " " + self.step_tag
            ends.append(len(text))
        enc = self.tokenizer(text, return_offsets_mapping=True)  # BOS added as on the card
        offsets = [tuple(o) for o in enc["offset_mapping"]]
        return list(enc["input_ids"]), [_last_token_covering(offsets, e) for e in ends]

    def _head(self, hidden):
        head = self.model.get_output_embeddings()
        w = head.weight[self.candidate_ids]
        logits = hidden @ w.T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[self.candidate_ids]
        return torch.softmax(logits.float(), -1)[:, 0]


# --------------------------------------------------------------------------- Skywork-o1-Open-PRM
class SkyworkPRM(PRMScorer):
    """Skywork-o1-Open-PRM (Qwen2.5-1.5B / 7B): sigmoid(value) at every step end (see the module docstring)."""

    name = "skywork_prm"
    default_hub_id = "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B"
    SCORE_AT = ("separator", "last_token")

    def __init__(self, hub_id: str | None = None, dtype: str = "bfloat16", device: str = "auto",
                 batch_size: int = 8, revision: str | None = None, local_files_only: bool = False,
                 step_separator: str = "\n", score_at: str = "separator", split_lines: bool = True):
        super().__init__(hub_id, dtype, device, batch_size, revision, local_files_only)
        if not step_separator:
            raise ConfigError(f"{self.name}: step_separator must be a non-empty string")
        if score_at not in self.SCORE_AT:
            raise ConfigError(f"{self.name}: score_at must be one of {', '.join(self.SCORE_AT)}, got '{score_at}'")
        self.step_separator, self.score_at, self.split_lines = step_separator, score_at, bool(split_lines)
        self.sep_id = -1

    def _load_model(self, path, torch_dtype, kw):
        return skywork_prm_class().from_pretrained(path, dtype=torch_dtype, output_loading_info=True, **kw)

    def _setup_tokens(self):
        ids = list(self.tokenizer.encode(self.step_separator))
        if not ids:
            raise ConfigError(f"{self.name}: the tokenizer encodes the step separator "
                              f"{self.step_separator!r} to nothing")
        self.sep_id = ids[-1]  # as the reference: tokenizer.encode(step_token)[-1]

    def _encode(self, question, steps):
        tok = self.tokenizer
        ids = list(tok.encode((tok.bos_token or "") + question + "\n"))
        pos = []
        for s in steps:
            s = s.strip()
            pieces = [p for p in s.split(self.step_separator) if p.strip()] if self.split_lines else [s]
            for p in pieces or [""]:
                body = list(tok.encode(p)) if p else []
                ids += body + [self.sep_id]
            if self.score_at == "separator" or not body:
                pos.append(len(ids) - 1)
            else:
                pos.append(len(ids) - 2)  # the step's own last token
        return ids, pos

    def _head(self, hidden):
        return torch.sigmoid(self.model.v_head(hidden).squeeze(-1).float())
