"""Learn AdaDec's entropy threshold for one model (strategies/adadec.py); CPU, about 6 minutes for 64 HumanEval problems with the 0.5B model.

    python -m tools.learn_adadec_threshold --model qwen25_coder_05b --task humaneval --examples 64 \
        --out results/adadec/qwen2.5-coder-0.5b-humaneval.json

Data: the LAST `--examples` problems of the task (HumanEval ships only its test split: evaluate
AdaDec on the first ones, task.limit <= len - examples, to keep them unseen). For each problem
the model reads its prompt (the task's own, rendered with the chat template) followed by the
task's reference output (`Task.gold_output`: the canonical solution) in ONE forward. At each
reference position t: x_t = the entropy (nats) of the model's next-token distribution, y_t = 1 if
the model's greedy token differs from the reference token (where greedy decoding would leave
the reference). A logistic regression P(y = 1 | x) = sigmoid(a x + b), class-balanced (both
classes weigh the same in total, so the boundary is not swamped by the many agreeing tokens),
fitted by Newton's method; tau = -b / a, the entropy at which a divergence becomes the more
likely class. The artifact (JSON) holds tau, the fit, the entropy's AUC for divergence, the
model's identity (name, depth, vocabulary fingerprint), the problems' ids, the counts and the
commit; the strategy refuses it for any other model.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.errors import ConfigError  # noqa: E402


def fit_logistic(x: np.ndarray, y: np.ndarray, balanced: bool = True, iters: int = 50) -> tuple[float, float]:
    """(a, b) of P(y = 1 | x) = sigmoid(a x + b) by Newton's method on the (weighted) log-loss."""
    if y.min() == y.max():
        raise ValueError("logistic fit needs both classes (some divergences and some agreements)")
    w = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean())) if balanced else np.ones_like(x)
    X = np.stack([x, np.ones_like(x)], 1)
    theta = np.zeros(2)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(X @ theta)))
        g = X.T @ (w * (p - y))
        H = (X * (w * p * (1 - p))[:, None]).T @ X + 1e-9 * np.eye(2)
        step = np.linalg.solve(H, g)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def auc(score: np.ndarray, y: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counted half."""
    pos, neg = score[y == 1], score[y == 0]
    if not len(pos) or not len(neg):
        return math.nan
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    vals = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(vals):  # average ranks of ties
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def collect(engine, prompts: list[list[int]], references: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Entropy and divergence label at every reference position (one forward per problem)."""
    from tqdm import tqdm

    xs, ys = [], []
    for p, r in tqdm(list(zip(prompts, references)), desc="reference forwards", unit="problem"):
        engine.reset()
        logits = engine.forward(p + r)[len(p) - 1:len(p) + len(r) - 1]  # row t predicts r[t]
        lp = torch.log_softmax(logits.float(), -1)
        xs.append((-(lp.exp() * lp).sum(-1)).numpy())
        ys.append((logits.argmax(-1) != torch.as_tensor(r)).numpy().astype(float))
    return np.concatenate(xs), np.concatenate(ys)


def learn(engine, prompts, references, ids, task_name: str) -> dict:
    from harness.provenance import git_sha
    from strategies.adadec import identity

    t0 = time.perf_counter()
    x, y = collect(engine, prompts, references)
    a, b = fit_logistic(x, y)
    if a <= 0:
        raise ValueError(f"entropy does not predict divergence on these data (slope {a:.3f} <= 0): no threshold")
    return {"threshold": -b / a, "coef": a, "intercept": b, "balanced": True,
            "model": identity(engine), "task": task_name, "examples": ids, "positions": int(len(x)),
            "divergences": int(y.sum()), "entropy_auc": auc(x, y),
            "mean_entropy": {"agree": float(x[y == 0].mean()), "diverge": float(x[y == 1].mean())},
            "seconds": time.perf_counter() - t0, "commit": git_sha(),
            "method": "class-balanced logistic regression of [greedy token != reference token] on entropy (nats)"}


def main(argv=None) -> dict:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from tools.train_acceptance_head import load_engine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model config name (conf/model/*.yaml)")
    ap.add_argument("--set", action="append", default=[], help="model override, e.g. tiny.seed=1 (repeatable)")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--task", default="humaneval", help="task config name (its reference = Task.gold_output)")
    ap.add_argument("--examples", type=int, default=64, help="the LAST n problems of the task")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    path = ROOT / "conf" / "task" / f"{args.task}.yaml"
    if not path.exists():
        raise SystemExit(f"error: unknown task config '{args.task}'")
    if args.examples < 2:
        raise SystemExit("error: --examples must be >= 2")
    cfg = OmegaConf.load(path)
    cfg.limit = None
    try:
        task = instantiate(cfg, _convert_="all")
        task.check_data()
        engine = load_engine(args.model, args.set, args.dtype)
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    chosen = task.load()[-args.examples:]
    prompts = [engine.render(task.prompt(e)) for e in chosen]
    refs = [engine.encode(task.gold_output(e)) for e in chosen]
    out = learn(engine, prompts, refs, [e["id"] for e in chosen], args.task)
    p = Path(args.out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(out, indent=1) + "\n")
    print(f"tau = {out['threshold']:.3f} nats ({out['positions']} positions, {out['divergences']} divergences, "
          f"entropy AUC {out['entropy_auc']:.3f}, {out['seconds']:.0f} s) -> {p}")
    return out


if __name__ == "__main__":
    main()
