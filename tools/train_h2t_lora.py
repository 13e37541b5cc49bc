"""Train HyPoradise's H2T-LoRA correction adapter on the ATIS train set (CPU-scaled, peft).

    python -m tools.train_h2t_lora --model qwen25_coder_05b --dtype bfloat16 --examples 800 \
        --out results/adapters/h2t_lora_atis_qwen05b.safetensors

What it trains (the paper's fine-tuning setting, scaled to a 2-core CPU and stated):
- data: `--examples` rows of HyPoradise's train_atis.json (3964 rows; a seeded shuffle, `--seed`),
  never a test row. Each example is the task's OWN prompt (tasks/hyporadise.py: the H2T
  instruction and the 5-best block, rendered with the model's chat template exactly as a run
  renders it, so train and test prompts are the same layout) followed by the reference
  transcription and the template's end-of-turn token as the assistant's answer.
- loss: token cross-entropy on the answer tokens only (the prompt is context, as in the paper's
  instruction tuning), mean over the batch's answer tokens. The LM head is applied only at the
  answer positions (the full-vocabulary logits of every prompt position are never formed).
- model: peft LoRA (r, alpha, dropout, `--targets`; default the attention q/v projections, the
  alpaca-lora default the paper's H2T-LoRA code starts from) on the frozen base model in
  `--dtype`; the LoRA factors train in float32. AdamW, linear warm-up then linear decay.
- output: ONE safetensors file (A, B per adapted layer, float32) whose metadata records the base
  model config name and its tokenizer fingerprint, r, alpha, the targets, the train file's
  sha256, the examples / steps / epochs / lr / seed, the loss curve, the wall time and the
  commit. strategies/h2t_lora.py merges it into the target at setup (strategy=h2t_lora).
Same arguments -> the same adapter up to the floating-point nondeterminism of CPU kernels.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

from harness.errors import ConfigError
from strategies.h2t_lora import META_KEY

ROOT = Path(__file__).resolve().parent.parent


def answer_ids(engine, messages: list[dict], prompt: list[int], reference: str) -> list[int]:
    """Token ids of the assistant's answer `reference`, closed the way the chat template closes a
    turn (its end-of-turn token, which is one of the engine's EOS ids), or reference + EOS."""
    tok = engine.tokenizer
    if getattr(tok, "chat_template", None):
        enc = tok.apply_chat_template(messages + [{"role": "assistant", "content": reference}],
                                      add_generation_prompt=False, tokenize=True)
        full = [int(i) for i in (enc["input_ids"] if hasattr(enc, "keys") else enc)]
        if full[:len(prompt)] == prompt:
            tail = full[len(prompt):]
            for i, t in enumerate(tail):
                if t in engine.eos_ids:
                    return tail[: i + 1]
    eos = engine.special_id("eos")
    if eos is None:
        eos = min(engine.eos_ids)
    return engine.encode(reference) + [int(eos)]


def build_examples(task, engine, rows: list[dict]) -> list[tuple[list[int], list[int]]]:
    out = []
    for ex in rows:
        prompt, msgs = task.prompt_ids(engine, ex)
        out.append((prompt, answer_ids(engine, msgs, prompt, ex["reference"].strip())))
    return out


def batch_loss(lm, batch: list[tuple[list[int], list[int]]], pad: int, device) -> tuple[torch.Tensor, int]:
    """Mean answer-token cross-entropy of a right-padded batch; the LM head only at answer positions."""
    seqs = [p + a for p, a in batch]
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    pos_b, pos_t, labels = [], [], []
    for i, ((p, a), s) in enumerate(zip(batch, seqs)):
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
        for j in range(len(a)):  # the logits at position len(p) - 1 + j predict a[j]
            pos_b.append(i)
            pos_t.append(len(p) - 1 + j)
            labels.append(a[j])
    hidden = lm.model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
    h = hidden[torch.tensor(pos_b), torch.tensor(pos_t)]
    logits = lm.lm_head(h).float()
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels, device=logits.device))
    return loss, len(labels)


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * max(0.0, (steps - step) / max(1, steps - warmup))


def lora_tensors(peft_model) -> dict[str, torch.Tensor]:
    """{<module path in the CausalLM>.lora_A / .lora_B: float32 factor} of the default adapter."""
    out = {}
    for name, p in peft_model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            mod, rest = name.split(".lora_", 1)
            mod = mod.removeprefix("base_model.model.")
            out[f"{mod}.lora_{rest[0]}"] = p.detach().float().contiguous().clone()
    return out


def train(args) -> dict:
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file

    from harness.provenance import git_sha
    from tasks.hyporadise import HyPoradise
    from tools.train_acceptance_head import load_engine

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    task = HyPoradise(sets=["atis"], path=args.data)
    pool = task.train_examples("atis")
    train_file = task.train_file("atis")
    rng = random.Random(args.seed)
    order = list(range(len(pool)))
    rng.shuffle(order)
    if not 1 <= args.examples <= len(pool):
        raise ConfigError(f"--examples must be in 1..{len(pool)} (the ATIS train rows)")
    rows = [pool[i] for i in order[: args.examples]]
    engine = load_engine(args.model, args.set, args.dtype)
    data = build_examples(task, engine, rows)
    lm = get_peft_model(engine.model, LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=args.dropout,
                                                 target_modules=list(args.targets), bias="none"))
    lm.train()
    base = lm.base_model.model  # the CausalLM with LoRA layers injected
    params = [p for p in lm.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    pad = engine.special_id("pad")
    pad = int(pad if pad is not None else min(engine.eos_ids))
    steps = math.ceil(len(data) / args.batch_size) * args.epochs
    warmup = max(1, int(round(args.warmup * steps)))
    losses, t0, step = [], time.perf_counter(), 0
    from tqdm import tqdm

    bar = tqdm(total=steps, desc="h2t-lora", unit="step", disable=not args.progress, dynamic_ncols=True)
    for epoch in range(args.epochs):
        ep_order = list(range(len(data)))
        random.Random(args.seed + epoch).shuffle(ep_order)
        for b in range(0, len(ep_order), args.batch_size):
            batch = [data[i] for i in ep_order[b: b + args.batch_size]]
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps, args.lr, warmup)
            loss, _ = batch_loss(base, batch, pad, engine.device)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(round(float(loss.detach()), 5))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    bar.close()
    seconds = time.perf_counter() - t0
    tensors = lora_tensors(lm)
    meta = {"base_model": engine.name, "model_config": args.model, "model_overrides": list(args.set), "dtype": args.dtype or "config",
            "vocabulary": engine.vocabulary_fingerprint(), "r": args.r, "alpha": args.alpha,
            "dropout": args.dropout, "target_modules": list(args.targets),
            "train_file": train_file.name, "train_sha256": hashlib.sha256(train_file.read_bytes()).hexdigest(),
            "train_rows_available": len(pool), "examples": len(data), "example_ids": [r["id"] for r in rows],
            "answer_tokens": sum(len(a) for _, a in data), "prompt_tokens": sum(len(p) for p, _ in data),
            "epochs": args.epochs, "batch_size": args.batch_size, "steps": steps, "lr": args.lr,
            "warmup_steps": warmup, "seed": args.seed, "threads": args.threads, "losses": losses,
            "loss_first10": sum(losses[:10]) / len(losses[:10]), "loss_last10": sum(losses[-10:]) / len(losses[-10:]),
            "train_seconds": round(seconds, 1), "commit": git_sha(), "tool": "tools.train_h2t_lora"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    tmp.replace(out)
    meta["sha256"] = hashlib.sha256(out.read_bytes()).hexdigest()
    meta["bytes"] = out.stat().st_size
    return meta


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen25_coder_05b", help="model config name (conf/model/*.yaml)")
    ap.add_argument("--set", action="append", default=[], help="model override, e.g. tiny.seed=1 (repeatable)")
    ap.add_argument("--dtype", default=None, help="base weights' dtype while training (default: the config's)")
    ap.add_argument("--data", default=None, help="folder with train_atis.json (default: $HARNESS_DATA_DIR/hyporadise)")
    ap.add_argument("--examples", type=int, default=800)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=float, default=0.05, help="fraction of the steps")
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--dropout", type=float, default=0.05)
    ap.add_argument("--targets", nargs="+", default=["q_proj", "v_proj"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=max(1, torch.get_num_threads()))
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    ap.add_argument("--out", required=True, help="adapter file to write (.safetensors)")
    args = ap.parse_args(argv)
    for k in ("examples", "epochs", "batch_size", "r"):
        if getattr(args, k) < 1:
            raise SystemExit(f"error: --{k.replace('_', '-')} must be >= 1")
    try:
        meta = train(args)
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    print(json.dumps({k: v for k, v in meta.items() if k not in ("losses", "example_ids")}, indent=1))
    return meta


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
