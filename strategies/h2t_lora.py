"""H2T-LoRA generative error correction (HyPoradise, Chen et al. 2023): the target model with a
LoRA adapter fine-tuned on N-best -> transcription pairs, then decoded like any other prompt.

The paper's headline setting (its "H2T-ft / LoRA" rows) fine-tunes the LLM on a recogniser's
train-set N-best lists with the reference as the answer, then at test time reads the prompt of
the same layout and writes the corrected transcription. Here the adapter is a single
safetensors file written by `python -m tools.train_h2t_lora` (the LoRA factors A, B of each
adapted linear layer and, in the file's metadata, the base model it was trained on, r, alpha,
the training data's hash and the training run's statistics). `setup()` merges it into the
target's weights once, W <- W + (alpha / r) B A (the LoRA update, exact up to the weights'
dtype), before any example; decoding is then greedy (or the sampling parameters given) on the
adapted model. Its rows therefore describe the ADAPTED model: the adapter's sha256 is part of
the run identity (`adapter_path` is an artifact), and `run.paired_baseline` is refused (the
paired greedy would run on the adapted weights too). Not lossless by definition.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.errors import ConfigError
from strategies.core.base import SamplingParams, Strategy
from strategies.sampling import Sampling

ROOT = Path(__file__).resolve().parent.parent
META_KEY = "h2t_lora"


def resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or p.exists() else ROOT / p


def read_adapter(path: str | Path, tensors: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) of an adapter file (tensors={} with tensors=False: the metadata alone);
    ConfigError (one line) when it is not one."""
    from safetensors import safe_open

    p = resolve(str(path))
    if not p.is_file():
        raise ConfigError(f"h2t_lora: adapter file {p} not found (train one: python -m tools.train_h2t_lora --out {path})")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[META_KEY])
            out = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}
    except Exception as e:  # not safetensors, or no metadata: name the file
        raise ConfigError(f"h2t_lora: {p} is not an adapter written by tools.train_h2t_lora "
                          f"({e.__class__.__name__})") from None
    return out, meta


def merge_lora(model: torch.nn.Module, tensors: dict[str, torch.Tensor], scale: float) -> int:
    """W += scale * B @ A for every `<module>.lora_A` / `<module>.lora_B` pair; returns the count."""
    modules = sorted({k.rsplit(".", 1)[0] for k in tensors})
    for name in modules:
        a, b = tensors.get(f"{name}.lora_A"), tensors.get(f"{name}.lora_B")
        if a is None or b is None:
            raise ConfigError(f"h2t_lora: adapter has an unpaired factor for {name}")
        try:
            lin = model.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"h2t_lora: the model has no module {name} (adapter trained on another architecture)") from None
        w = lin.weight
        if tuple(w.shape) != (b.shape[0], a.shape[1]):
            raise ConfigError(f"h2t_lora: {name}: adapter shape {tuple(b.shape[:1]) + tuple(a.shape[1:])} "
                              f"!= weight {tuple(w.shape)}")
        with torch.no_grad():
            delta = (b.double() @ a.double()) * scale
            w.copy_((w.double() + delta.to(w.device)).to(w.dtype))
    return len(modules)


class H2TLoRA(Sampling):
    name = "h2t_lora"
    lossless = False  # decodes a fine-tuned model: never the base model's distribution
    modifies_model = True  # merges weights at setup: run.paired_baseline is refused
    ARTIFACT_ATTRS = (*Strategy.ARTIFACT_ATTRS, "adapter_path")
    summary_fields = ()

    def __init__(self, adapter_path: str, sampling: SamplingParams | dict | None = None):
        super().__init__(sampling if sampling is not None else SamplingParams(temperature=0.0))
        if not adapter_path:
            raise ConfigError("h2t_lora: adapter_path is required (train one: python -m tools.train_h2t_lora)")
        self.adapter_path = str(adapter_path)
        _, self.meta = read_adapter(self.adapter_path, tensors=False)  # fails here, before any model loads
        self.r, self.alpha = int(self.meta["r"]), float(self.meta["alpha"])
        self.base_model = str(self.meta["base_model"])
        self.merged = {}  # {"modules": n} after setup (not a parameter: params() is read before setup too)

    def params(self) -> dict:
        out = super().params()
        out["adapter"] = {k: self.meta.get(k) for k in ("base_model", "r", "alpha", "target_modules", "train_file",
                                                        "train_sha256", "examples", "steps", "epochs", "lr")}
        return out

    def check_model(self, model_spec) -> None:
        """Before weights load: the adapter was trained on this model config."""
        if model_spec.name != self.base_model:
            raise ConfigError(f"h2t_lora: adapter {self.adapter_path} was trained on model {self.base_model}, "
                              f"not {model_spec.name} (use model={self.meta.get('model_config', self.base_model)} or train "
                              f"an adapter for this model)")

    def setup(self, target, draft=None) -> None:
        want = self.meta.get("vocabulary")
        if want and target.vocabulary_fingerprint() != want:
            raise ConfigError(f"h2t_lora: adapter {self.adapter_path} was trained with another tokenizer than "
                              f"{target.name}'s")
        tensors, _ = read_adapter(self.adapter_path)
        self.merged["modules"] = merge_lora(target.model, tensors, self.alpha / self.r)
