"""Train Learn2PD's filter for one masked-diffusion model (strategies/learn2pd.py).

The model decodes TRAINING prompts (the Waiting Line generator with its own seed, never the
evaluation rows) one token per step; at every step, every masked position gives one example:
features of the current logits and canvas -> label "the current argmax is the token finally
decoded here". An MLP is fitted with binary cross-entropy (Adam, full batch) on 80% of the
prompts, and its accuracy and AUC on the other 20% are recorded with the artifact, together with
the model's identity (another model is refused by the strategy).

    python -m tools.train_learn2pd --model waitline_mdlm --out results/dllm/learn2pd-waitline-mdlm.pt
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


def auc(score: torch.Tensor, y: torch.Tensor) -> float:
    order = torch.argsort(score)
    ranks = torch.empty(len(score))
    ranks[order] = torch.arange(1, len(score) + 1, dtype=torch.float)
    pos = y.bool()
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if not n1 or not n0:
        return float("nan")
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def collect(engine, prompts: list[list[int]], length: int, block: int):
    """Features and labels of one-token-per-step decodings: ([N, F], [N], prompt index [N])."""
    from strategies.core.diffusion import Canvas, next_fix
    from strategies.learn2pd import features

    X, Y, G = [], [], []
    for g, ids in enumerate(prompts):
        canvas = Canvas(engine, ids, length, block, eos_stop=False)
        steps = []
        while not canvas.done:
            logits = canvas.logits()
            act = canvas.active()
            steps.append((features(canvas, logits, act), act, logits[act].argmax(-1)))
            pos, tok = next_fix(canvas, logits)
            canvas.fix([pos], [tok])
        final = canvas.answer
        for x, act, pred in steps:
            X.append(x)
            Y.append((pred == final[act]).float())
            G.append(torch.full((len(act),), g))
    return torch.cat(X), torch.cat(Y), torch.cat(G)


def main(argv=None) -> int:
    from harness.errors import ConfigError
    from strategies.learn2pd import Filter, model_identity, save_filter
    from tools.parallelbench_gen import load_vocab
    from tools.train_acceptance_head import load_engine
    from tools.train_dllm import make_examples, task_configs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model config name (conf/model/*.yaml), kind: diffusion")
    ap.add_argument("--tasks", default="copy,shuffle,replace_index,replace_random")
    ap.add_argument("--prompts", type=int, default=250)
    ap.add_argument("--canvas", type=int, default=32)
    ap.add_argument("--block-length", type=int, default=0)
    ap.add_argument("--seed", type=int, default=7, help="prompt generator seed (the models were trained with 0)")
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    try:
        engine = load_engine(args.model, [], None)
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    if getattr(engine, "paradigm", "") != "diffusion":
        raise SystemExit(f"error: model {args.model} is not a masked-diffusion model (kind: diffusion)")
    data_dir = Path(os.environ.get("HARNESS_DATA_DIR") or ROOT.parent / "shared" / "data")
    cfgs = task_configs(data_dir)
    tasks = args.tasks.split(",")
    names = load_vocab(data_dir / "parallelbench" / "resources" / "first_last_names.yaml")
    examples, _ = make_examples(tasks, args.prompts, args.seed, 3, 6, cfgs, set(), names)
    prompts = [engine.render([{"role": "user", "content": p}]) for _, p, _ in examples]
    t0 = time.time()
    X, Y, G = collect(engine, prompts, args.canvas, args.block_length)
    collect_s = time.time() - t0
    train = G < int(0.8 * len(prompts))
    filt = Filter()
    opt = torch.optim.Adam(filt.parameters(), lr=3e-3)
    for _ in range(args.epochs):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(filt(X[train]), Y[train])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        s = torch.sigmoid(filt(X[~train]))
    held = {"accuracy": float(((s > 0.5).float() == Y[~train]).float().mean()), "auc": auc(s, Y[~train]),
            "positions": int((~train).sum()), "label_rate": float(Y[~train].mean())}
    record = {"model": model_identity(engine), "model_config": args.model, "tasks": tasks,
              "prompts": len(prompts), "prompt_seed": args.seed, "canvas": args.canvas,
              "block_length": args.block_length, "positions": int(len(Y)), "train_positions": int(train.sum()),
              "label_rate": float(Y.mean()), "train_loss": float(loss), "held_out": held,
              "forwards": engine.forwards, "collect_seconds": round(collect_s, 1),
              "seconds": round(time.time() - t0, 1)}
    save_filter(args.out, filt, record)
    Path(args.out).with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
