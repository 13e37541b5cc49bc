"""Hyperfitting (Carlsson et al., "The Hyperfitting Phenomenon: Sharpening and Stabilizing LLMs for
Open-Ended Text Generation", ICLR 2025, arXiv 2412.04318): fine-tune a model to near-zero training
loss on a small corpus, then decode greedily; the paper finds long greedy generations become far
less repetitive (and the model's top-1 probabilities sharp) although held-out perplexity gets worse.

    python -m tools.hyperfit --model smollm2_135m --samples 16 --tokens 64 --epochs 20 --lr 3e-4 \
        --out ~/.cache/harness/hyperfit/smollm2-135m-gsm8k-train.safetensors \
        --config conf/model/smollm2_135m_hyperfit.yaml --report results/published/hyperfit_smollm2_135m.json

Recipe: the paper's is 2000 samples x 256 tokens, 30 epochs, AdamW, lr 5e-6, batch 8 (7,500
steps of 2,048 tokens). On this CPU that is days; the default here keeps the optimiser, batch
size and the goal (training loss near zero) and scales data and steps: `--samples` x `--tokens`
from GSM8K's TRAIN split (question + solution texts, concatenated and cut into equal samples),
`--epochs` epochs, and a larger learning rate so that so few steps reach near-zero loss. The
scaling is written into the report. Seeded; fp32 training.

Output: the trained weights (safetensors, outside the repository: hundreds of MB), a model config
naming the source model + the weights' path and sha256 + this command (the harness refuses a
weights file with another hash), and a report: loss per epoch, time, recipe, and the comparison
the paper makes — long greedy generations from held-out prefixes (train texts NOT used for
fitting; plain text, no chat template) by the base and the hyperfitted model: repetition rate
(share of repeated word 4-grams within a generation), type-token ratio, self-BLEU across
generations, mean top-1 probability of the emitted tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAPER = {"samples": 2000, "tokens": 256, "epochs": 30, "lr": 5e-6, "batch": 8, "optimizer": "AdamW"}


def train_texts(n_skip: int = 0) -> list[str]:
    data = os.environ.get("HARNESS_DATA_DIR")
    p = Path(data) / "gsm8k" / "train.jsonl" if data else None
    if p is None or not p.exists():
        raise SystemExit("error: hyperfitting reads HARNESS_DATA_DIR/gsm8k/train.jsonl (GSM8K's train split)")
    rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows][n_skip:]


def samples_from(engine, texts: list[str], n: int, tokens: int) -> tuple[torch.Tensor, int]:
    """n samples of `tokens` tokens cut from the concatenated texts; also how many texts were used."""
    ids, used = [], 0
    eos = engine.special_id("eos")
    for t in texts:
        ids += engine.encode(t) + ([eos] if eos is not None else [])
        used += 1
        if len(ids) >= n * tokens:
            break
    if len(ids) < n * tokens:
        raise SystemExit(f"error: the corpus has {len(ids)} tokens, fewer than {n} x {tokens}")
    return torch.tensor(ids[:n * tokens]).reshape(n, tokens), used


def fit(model, data: torch.Tensor, epochs: int, lr: float, batch: int, seed: int) -> list[float]:
    from tqdm import tqdm

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for ep in tqdm(range(epochs), desc="hyperfitting", unit="epoch"):
        order = torch.randperm(len(data), generator=g)
        tot = 0.0
        for i in range(0, len(data), batch):
            x = data[order[i:i + batch]]
            loss = model(input_ids=x, labels=x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(x)
        losses.append(tot / len(data))
        tqdm.write(f"epoch {ep + 1}: training loss {losses[-1]:.4f}")
    model.eval()
    return losses


@torch.inference_mode()
def generate(model, prefix: list[int], n: int) -> tuple[list[int], float]:
    """Greedy continuation of a plain-text prefix; returns (tokens, mean top-1 probability)."""
    out = model.generate(torch.tensor([prefix]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                         output_scores=True, return_dict_in_generate=True, pad_token_id=0)
    probs = [float(torch.softmax(s[0].float(), -1).max()) for s in out.scores]
    return out.sequences[0, len(prefix):].tolist(), sum(probs) / len(probs)


def text_stats(texts: list[str], top1: list[float]) -> dict:
    from harness.metrics import self_bleu

    rep, ttr = [], []
    for t in texts:
        w = t.split()
        grams = [tuple(w[i:i + 4]) for i in range(len(w) - 3)]
        rep.append(1 - len(set(grams)) / len(grams) if grams else 0.0)
        ttr.append(len(set(w)) / len(w) if w else 0.0)
    return {"repetition_4gram": sum(rep) / len(rep), "type_token_ratio": sum(ttr) / len(ttr),
            "self_bleu": self_bleu(texts), "mean_top1_prob": sum(top1) / len(top1)}


def compare(engine_tok, models: dict, prefixes: list[list[int]], n: int) -> dict:
    out = {}
    for name, model in models.items():
        gens, top1 = [], []
        for p in prefixes:
            toks, pr = generate(model, p, n)
            gens.append(engine_tok.decode(toks, skip_special_tokens=True))
            top1.append(pr)
        out[name] = {**text_stats(gens, top1), "generations": gens}
    return out


def main(argv=None):
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from harness.errors import ConfigError
    from harness.provenance import file_sha256
    from tools.train_acceptance_head import load_engine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model config name (conf/model/*.yaml)")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prefixes", type=int, default=6, help="held-out prefixes for the comparison")
    ap.add_argument("--prefix-tokens", type=int, default=32)
    ap.add_argument("--generate", type=int, default=192, help="greedy tokens per comparison generation")
    ap.add_argument("--out", required=True, help="weights file (.safetensors)")
    ap.add_argument("--config", default=None, help="model config to write (conf/model/<name>.yaml)")
    ap.add_argument("--report", default=None, help="JSON report to write")
    a = ap.parse_args(argv)
    cmd = "python -m tools.hyperfit " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        engine = load_engine(a.model, a.set, "float32")
        base = load_engine(a.model, a.set, "float32").model
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    texts = train_texts()
    data, used = samples_from(engine, texts, a.samples, a.tokens)
    held = [engine.encode(t)[:a.prefix_tokens] for t in texts[used + 10:used + 10 + a.prefixes]]
    t0 = time.perf_counter()
    losses = fit(engine.model, data, a.epochs, a.lr, a.batch, a.seed)
    secs = time.perf_counter() - t0
    out = Path(os.path.expanduser(a.out))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in engine.model.state_dict().items() if "lm_head" not in k
               or not engine.model.config.tie_word_embeddings}, str(out))
    digest = file_sha256(out)
    recipe = {"samples": a.samples, "tokens": a.tokens, "epochs": a.epochs, "lr": a.lr, "batch": a.batch,
              "optimizer": "AdamW (weight decay 0)", "seed": a.seed, "corpus": "gsm8k:train (question + solution)",
              "steps": a.epochs * -(-a.samples // a.batch), "paper": PAPER,
              "scaling": f"{a.samples * a.tokens * a.epochs / (PAPER['samples'] * PAPER['tokens'] * PAPER['epochs']):.2e}"
                         f" of the paper's training tokens; lr x{a.lr / PAPER['lr']:.0f}"}
    src = OmegaConf.load(ROOT / "conf" / "model" / f"{a.model}.yaml")
    if a.config:
        cfg = OmegaConf.to_container(src)
        cfg["name"] = f"{cfg['name']}-hyperfit"
        home = str(Path.home())
        portable = "~" + str(out)[len(home):] if str(out).startswith(home + os.sep) else str(out)
        cfg["weights"] = {"path": portable, "sha256": digest, "rebuild": cmd, "recipe": recipe}
        Path(a.config).write_text(f"# {cfg['name']}: {a.model} hyperfitted (tools/hyperfit.py); weights outside the "
                                  f"repository, rebuilt with `make hyperfit`\n" + OmegaConf.to_yaml(cfg))
    report = {"model": a.model, "weights": str(out), "sha256": digest, "recipe": recipe, "losses": losses,
              "train_seconds": secs, "command": cmd}
    if a.prefixes:
        report["comparison"] = {"prefixes": a.prefixes, "prefix_tokens": a.prefix_tokens, "generate": a.generate,
                                "held_out": f"gsm8k train texts {used + 10}..{used + 9 + a.prefixes} (not fitted)",
                                **compare(engine.tokenizer, {"base": base.eval(), "hyperfitted": engine.model},
                                          held, a.generate)}
    if a.report:
        Path(a.report).parent.mkdir(parents=True, exist_ok=True)
        Path(a.report).write_text(json.dumps(report, indent=1) + "\n")
    print(f"final training loss {losses[-1]:.4f} after {a.epochs} epochs ({secs:.0f} s); sha256 {digest[:16]} -> {out}")
    for k in ("base", "hyperfitted"):
        if "comparison" in report:
            c = report["comparison"][k]
            print(f"  {k:12s} repetition {c['repetition_4gram']:.3f}  TTR {c['type_token_ratio']:.3f}  "
                  f"self-BLEU {c['self_bleu']:.3f}  top-1 p {c['mean_top1_prob']:.3f}")
    return report


if __name__ == "__main__":
    main()
