"""The masked-diffusion engine: a bidirectional transformer over a canvas (the `Engine` seam for
diffusion LMs: LLaDA, Dream, and the task-trained models of tools/train_dllm.py).

    engine.mask_id                                   # the mask token
    logits = engine.canvas_logits(canvases, n)       # [B, n, V]: ONE forward over B canvases, the
                                                     # logits of each canvas's last n positions
    engine.forwards, engine.tokens_fed, engine.canvases_fed   # counters

A canvas is prompt ids + the answer region (mask tokens where nothing is decided yet). Every
position attends to every other one (no causal mask): the transformers Llama / Qwen2 modules run
with `is_causal = False` on every attention layer and an all-visible 4D mask, so no remote code
is needed. There is no KV cache: a forward reads the whole canvas (as LLaDA and Dream do without
their cache approximations).

Layouts:
  llada   LLaDA (GSAI-ML/LLaDA-8B-*): a Llama layout under other parameter names
          (model.transformer.blocks.i.{q,k,v}_proj, attn_out, ff_proj = gate, up_proj, ff_out =
          down, attn_norm, ff_norm; wte, ln_f, transformer.ff_out = LM head); mask id 126336.
  dream   Dream (Dream-org/Dream-v0-*): Qwen2 parameter names; its logits are SHIFTED (position i
          predicts token i + 1, inherited from its autoregressive initialisation), so the
          logits of answer position j are read at j - 1; mask id 151666.
  hf      a plain transformers Llama / Qwen2 checkpoint trained as a masked-diffusion LM (ours;
          `dllm_logit_shift: true` in its config when, like Dream, it was initialised from an
          autoregressive model and reads answer position j's logits at j - 1).
DiffusionGemma (transformers 5.24) does not fit this seam: it is a uniform-noise diffusion
(the canvas starts as random tokens and rejected tokens are re-noised, no mask token), with an
encoder over the prompt, a decoder over the canvas and a self-conditioning signal carried
between steps: see docs/strategies.md ("diffusion LLMs").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from harness.engines.text import TokenizerText, eos_set


class DiffusionEngine(TokenizerText):
    """A masked-diffusion LM (bidirectional transformer) and its counters, batch of canvases."""

    paradigm = "diffusion"

    def __init__(self, model, tokenizer, name: str, dtype: str, mask_id: int, shift: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.dtype = dtype
        self.mask_id = int(mask_id)
        self.shift = bool(shift)
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self.num_layers = int(model.config.num_hidden_layers)
        self.hidden_size = int(model.config.hidden_size)
        if not 0 <= self.mask_id < self.vocab_size:
            raise ValueError(f"{name}: mask id {mask_id} outside the vocabulary ({self.vocab_size})")
        make_bidirectional(model)
        self.capabilities = frozenset({"canvas"})
        self.eos_ids = eos_set(getattr(tokenizer, "eos_token_id", None), getattr(model.config, "eos_token_id", None))
        self.hidden: dict[int, torch.Tensor] = {}
        self.forwards = 0
        self.tokens_fed = 0
        self.canvases_fed = 0

    # ------------------------------------------------------------------ state (none: no cache)
    def reset(self) -> None:
        self.hidden = {}

    @property
    def length(self) -> int:
        return 0

    def counters(self) -> tuple[int, int]:
        return self.forwards, self.tokens_fed

    # ------------------------------------------------------------------ compute
    @torch.inference_mode()
    def canvas_logits(self, canvases: torch.Tensor | Sequence[Sequence[int]], n: int) -> torch.Tensor:
        """ONE forward over B equal-length canvases [B, T] with full (bidirectional) attention;
        float32 CPU logits [B, n, V] of the last n positions (the answer region), shift applied."""
        ids = torch.as_tensor(canvases, dtype=torch.long)
        if ids.dim() == 1:
            ids = ids[None]
        B, T = ids.shape
        if not 0 < n <= T - int(self.shift):
            raise ValueError(f"canvas of {T} positions has no answer region of {n}")
        mask = torch.zeros(B, 1, T, T, dtype=self.model.dtype, device=self.device)  # every position visible
        keep = n + int(self.shift)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask, use_cache=False, logits_to_keep=keep)
        self.forwards += 1
        self.tokens_fed += B * T
        self.canvases_fed += B
        logits = out.logits[:, -keep:].float().cpu()
        return logits[:, :n] if self.shift else logits  # Dream: position i - 1 predicts token i

    # ------------------------------------------------------------------ text (TokenizerText + the mask)
    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return super().decode([int(i) for i in ids if int(i) != self.mask_id], skip_special)

    def special_id(self, kind: str) -> int | None:
        return self.mask_id if kind == "mask" else super().special_id(kind)

    # ------------------------------------------------------------------ what an AR strategy would call
    def forward(self, *a, **k):
        raise NotImplementedError(f"{self.name} is a masked-diffusion model: it has no next-token forward "
                                  f"(use a diffusion strategy: dllm_topk, dllm_threshold, freedave, learn2pd)")


def make_bidirectional(model) -> None:
    """Switch every self-attention module of a transformers decoder to non-causal attention."""
    n = 0
    for m in model.modules():
        if hasattr(m, "is_causal") and hasattr(m, "q_proj"):
            m.is_causal = False
            n += 1
    if n == 0:
        raise ValueError(f"{type(model).__name__}: no attention modules with an is_causal flag")


# ---------------------------------------------------------------------------- checkpoint layouts
LLADA_NAMES = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
               "attn_out": "self_attn.o_proj", "ff_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
               "ff_out": "mlp.down_proj", "attn_norm": "input_layernorm", "ff_norm": "post_attention_layernorm"}


def llada_config(c: dict):
    """A transformers LlamaConfig equal to a LLaDA config.json (OLMo-style keys)."""
    from transformers import LlamaConfig

    if c.get("block_type", "llama") != "llama" or c.get("include_bias"):
        raise ValueError(f"LLaDA layout: block_type {c.get('block_type')!r} / include_bias "
                         f"{c.get('include_bias')!r} is not the Llama layout this loader maps")
    heads = int(c["n_heads"])
    return LlamaConfig(vocab_size=int(c.get("embedding_size") or c["vocab_size"]), hidden_size=int(c["d_model"]),
                       intermediate_size=int(c["mlp_hidden_size"]), num_hidden_layers=int(c["n_layers"]),
                       num_attention_heads=heads, num_key_value_heads=int(c.get("n_kv_heads") or heads),
                       max_position_embeddings=int(c.get("max_sequence_length", 4096)),
                       rms_norm_eps=float(c.get("rms_norm_eps", 1e-5)),
                       rope_parameters={"rope_type": "default", "rope_theta": float(c.get("rope_theta", 10000.0))},
                       tie_word_embeddings=bool(c.get("weight_tying", False)),
                       eos_token_id=c.get("eos_token_id"), pad_token_id=c.get("pad_token_id"),
                       bos_token_id=c.get("bos_token_id"), attention_bias=False, mlp_bias=False)


def llada_state_dict(sd: dict) -> dict:
    """LLaDA parameter names -> transformers Llama names (every key must map)."""
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if k in ("model.transformer.wte.weight",):
            out["model.embed_tokens.weight"] = v
        elif k == "model.transformer.ln_f.weight":
            out["model.norm.weight"] = v
        elif k == "model.transformer.ff_out.weight":
            out["lm_head.weight"] = v
        elif len(parts) == 6 and parts[:3] == ["model", "transformer", "blocks"] and parts[4] in LLADA_NAMES:
            out[f"model.layers.{parts[3]}.{LLADA_NAMES[parts[4]]}.{parts[5]}"] = v
        else:
            raise ValueError(f"LLaDA layout: unexpected parameter {k}")
    return out


def dream_config(c: dict):
    """A transformers Qwen2Config equal to a Dream config.json (Qwen2 keys)."""
    from transformers import Qwen2Config

    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
            "eos_token_id", "pad_token_id", "bos_token_id", "hidden_act")
    kw = {k: c[k] for k in keys if k in c}
    kw["rope_parameters"] = c.get("rope_parameters") or {"rope_type": "default",
                                                         "rope_theta": float(c.get("rope_theta", 10000.0))}
    return Qwen2Config(**kw)


LAYOUT_MASK_ID = {"llada": 126336, "dream": 151666}


def detect_layout(config: dict) -> str:
    t = str(config.get("model_type", "")).lower()
    if t == "llada" or "d_model" in config:
        return "llada"
    if t == "dream":
        return "dream"
    if t in ("llama", "qwen2"):
        return "hf"
    raise ValueError(f"model_type {config.get('model_type')!r} is not a masked-diffusion layout this engine "
                     f"loads (llada, dream, or a Llama / Qwen2 checkpoint trained as one)")


def load_state_dict_files(folder) -> dict:
    """Every tensor of a checkpoint folder's safetensors files (sharded or not)."""
    from pathlib import Path

    from safetensors.torch import load_file

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder}: no .safetensors files")
    sd = {}
    for f in files:
        sd.update(load_file(str(f)))
    return sd


def build_from_folder(folder, layout: str, torch_dtype):
    """(model, layout) for a checkpoint folder of one of the three layouts (real weights)."""
    import json
    from pathlib import Path

    from transformers import LlamaForCausalLM, Qwen2ForCausalLM

    config = json.loads((Path(folder) / "config.json").read_text())
    layout = detect_layout(config) if layout in (None, "auto") else layout
    if layout == "hf":
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype), layout
    cfg = llada_config(config) if layout == "llada" else dream_config(config)
    cls = LlamaForCausalLM if layout == "llada" else Qwen2ForCausalLM
    sd = load_state_dict_files(folder)
    if layout == "llada":
        sd = llada_state_dict(sd)
    torch.manual_seed(0)
    model = cls(cfg).to(torch_dtype)
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not (cfg.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"{layout} checkpoint {folder}: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return model, layout
