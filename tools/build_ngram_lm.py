"""Build a token n-gram model (strategies/core/ngram.py) from a corpus file, for Superposed Decoding.

    python -m tools.build_ngram_lm build --corpus FILE --tokenizer-model smollm2_135m --out lm.npz
        [--fields question,answer] [--max-order 6]

The tokenizer is named by a model config (conf/model/<name>.yaml); only the tokenizer is loaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.engines.hf import vocabulary_fingerprint
from strategies.core.ngram import build_from_corpus

def load_tokenizer(model_config: str):
    """The tokenizer of conf/model/<name>.yaml, without loading the weights (a pack is converted
    to its safetensors cache once if it has not been)."""
    from omegaconf import OmegaConf

    from harness.errors import ConfigError
    from harness.models import ByteTokenizer, ModelSpec, convert_pack_to_cache

    root = Path(__file__).resolve().parents[1]
    f = root / "conf" / "model" / f"{model_config}.yaml"
    if not f.exists():
        names = sorted(p.stem for p in (root / "conf" / "model").glob("*.yaml"))
        raise ConfigError(f"no model config '{model_config}' (choose one of {', '.join(names)})")
    cfg = OmegaConf.to_container(OmegaConf.load(f), resolve=True)
    cfg.pop("_target_", None)
    spec = ModelSpec(**cfg)
    if spec.tiny is not None:
        return ByteTokenizer(int(spec.tiny["vocab_size"])), int(spec.tiny["vocab_size"])
    from transformers import AutoTokenizer

    src = spec.hub_id or convert_pack_to_cache(spec.pack, spec.name)
    return AutoTokenizer.from_pretrained(src), 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.build_ngram_lm", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="count n-grams of a corpus into an .npz file")
    b.add_argument("--corpus", required=True, help=".jsonl(.gz) (one document per row) or text (blank-line separated)")
    b.add_argument("--tokenizer-model", required=True, help="model config name (conf/model/<name>.yaml)")
    b.add_argument("--out", required=True, help="output .npz")
    b.add_argument("--fields", default="", help="comma-separated jsonl fields (default: all string fields)")
    b.add_argument("--max-order", type=int, default=6)
    args = ap.parse_args(argv)
    tok, v = load_tokenizer(args.tokenizer_model)
    fields = [x for x in args.fields.split(",") if x]
    lm = build_from_corpus(args.corpus, lambda text: list(tok.encode(text, add_special_tokens=False)),
                           vocabulary_fingerprint(tok), max(len(tok), v), fields, args.max_order)
    lm.save(args.out)
    print(f"[ngram] {lm.meta['tokens']} tokens in {lm.meta['documents']} documents, orders 1..{lm.max_order}, "
          f"{sum(len(k) for k, _ in lm.tables.values())} distinct n-grams, {lm.nbytes() / 1e6:.1f} MB -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
