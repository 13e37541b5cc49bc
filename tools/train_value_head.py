"""Train a value head (an outcome reward model) for test-time search on the policy's own samples.

    # 1. the policy's samples on GSM8K TRAIN problems (a normal, resumable run; every sample's
    #    text kept in its row):
    python -m harness strategy=self_consistency strategy.n=4 strategy.record_samples=true \
        task=gsm8k task.split=train task.limit=120 model.dtype=bfloat16 run.max_new_tokens=320
    # 2. the head:
    python -m tools.train_value_head --rows results/gsm8k-self_consistency-.../rows.jsonl \
        --trunk qwen25_coder_05b --dtype bfloat16 --out results/scorers/value_head_gsm8k_qwen05b.safetensors

Data: every sample of every row (the rows must come from a TRAIN split: the tool reads each
run's meta.json and refuses any other split), split into steps at blank lines as the search strategies split
whole solutions; each step prefix is one example, labelled 1 when the sample's final answer
is right (the task's own score of the whole sample against the row's example) and 0 otherwise:
an outcome-supervised value, r(prefix) ~ P(the policy's solution through it ends right).
Prefixes of one sample are weighted 1 / its number of steps (each sample counts once).

Features (scorers/value_head.py): the frozen trunk's last hidden state at the prefix's last
token beside the mean over the solution's tokens so far (2 x hidden size), standardised.
Model: logistic regression with an L2 penalty, full-batch L-BFGS. The penalty is chosen by
4-fold cross-validation over PROBLEMS (never splitting one problem's samples) within the
development problems (80%, by a hash of the example id); the held-out 20% of problems then
give the reported AUC (step prefixes and whole solutions) and the accuracy of best-of-N by the
head vs the first sample vs majority vote on those problems. The shipped head is refit on
ALL problems with the chosen penalty. Everything (trunk, tokenizer fingerprint, rows sha256,
counts, metrics, seconds, commit) goes into the file's metadata.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from harness.errors import ConfigError
from scorers.value_head import save_head, trunk_features
from strategies.core.search import split_steps

ROOT = Path(__file__).resolve().parent.parent


def load_samples(paths: list[str], task_name: str):
    """[(example_id, question, [(text, label)])] from rows carrying extra.samples."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    rows = []
    for p in paths:
        meta = Path(p).parent / "meta.json"
        split = (json.loads(meta.read_text()).get("task_options") or {}).get("split") if meta.exists() else None
        if split != "train":
            raise ConfigError(f"train_value_head: {p} is not a run on a TRAIN split (its meta.json says split "
                              f"{split!r}); a scorer is trained on train rows only")
        for line in Path(p).read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    rows = [r for r in rows if not r.get("error") and (r.get("extra") or {}).get("samples")]
    if not rows:
        raise ConfigError("train_value_head: no rows with extra.samples (run with strategy.record_samples=true)")
    cfg = OmegaConf.load(ROOT / "conf" / "task" / f"{task_name}.yaml")
    cfg.limit = None
    cfg.split = "train"
    task = instantiate(cfg, _convert_="all")
    examples = {e["id"]: e for e in task.load()}
    out = []
    for r in rows:
        ex = examples.get(r["example_id"])
        if ex is None:
            raise ConfigError(f"train_value_head: example {r['example_id']} is not in {task_name}'s train split")
        users = [m["content"] for m in r["prompt_messages"] if m.get("role") == "user"]
        labelled = [(s["text"], float(task.score(ex, s["text"])["quality"])) for s in r["extra"]["samples"]]
        out.append((r["example_id"], users[-1], labelled))
    return out, rows, task


def build(engine, problems, max_tokens: int, batch_size: int):
    """X [n, 2d], y [n], weight [n], problem index [n], sample index [n], is_last [n]."""
    from tqdm import tqdm

    X, y, w, pid, sid, last = [], [], [], [], [], []
    s_global = 0
    for p, (_, q, labelled) in enumerate(tqdm(problems, desc="trunk features", unit="problem")):
        steps = [split_steps(t) or [t.strip() or " "] for t, _ in labelled]
        feats, _, _ = trunk_features(engine, q, steps, max_tokens, batch_size)
        for f, (_, lab) in zip(feats, labelled):
            n = f.shape[0]
            X.append(f)
            y += [lab] * n
            w += [1.0 / n] * n
            pid += [p] * n
            sid += [s_global] * n
            last += [False] * (n - 1) + [True]
            s_global += 1
    return (torch.cat(X), torch.tensor(y), torch.tensor(w), torch.tensor(pid), torch.tensor(sid),
            torch.tensor(last))


def fit(X, y, w, l2: float, iters: int = 200):
    mu = (X * w[:, None]).sum(0) / w.sum()
    sd = ((((X - mu) ** 2) * w[:, None]).sum(0) / w.sum()).sqrt().clamp_min(1e-6)
    Z = (X - mu) / sd
    coef = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    Z64, y64, w64 = Z.double(), y.double(), (w / w.sum()).double()
    opt = torch.optim.LBFGS([coef, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = Z64 @ coef + b
        loss = (w64 * torch.nn.functional.binary_cross_entropy_with_logits(z, y64, reduction="none")).sum()
        loss = loss + l2 * (coef ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return {"w": coef.detach().float(), "b": b.detach().float().reshape(1), "mu": mu.float(), "sd": sd.float()}


def predict(head, X):
    return torch.sigmoid(((X - head["mu"]) / head["sd"]) @ head["w"] + head["b"])


def auc(score: torch.Tensor, label: torch.Tensor, weight: torch.Tensor | None = None) -> float | None:
    """Weighted ROC AUC (probability a random positive outranks a random negative; ties half)."""
    pos, neg = label > 0.5, label <= 0.5
    if not pos.any() or not neg.any():
        return None
    wt = torch.ones_like(score) if weight is None else weight
    sp, sn, wp, wn = score[pos], score[neg], wt[pos], wt[neg]
    gt = (sp[:, None] > sn[None, :]).double() + 0.5 * (sp[:, None] == sn[None, :]).double()
    return float((wp[:, None] * wn[None, :] * gt).sum() / (wp.sum() * wn.sum()))


def fold_of(example_id: str, k: int) -> int:
    return int(hashlib.sha256(example_id.encode()).hexdigest()[:8], 16) % k


def choice_accuracy(head, X, y, pid, last, problems_idx, problems, task):
    """On the given problems: best-of-N by the head (whole-solution value), the first sample, and
    majority vote (by the task's answer extraction), as fractions right."""
    bon = first = maj = 0
    for p in problems_idx:
        m = (pid == p) & last
        vals = predict(head, X[m]).tolist()
        labs = y[m].tolist()
        bon += labs[max(range(len(vals)), key=lambda i: (vals[i], -i))]
        first += labs[0]
        answers = [task.extract_answer(t) for t, _ in problems[p][2]]
        counts: dict = {}
        for i, a in enumerate(answers):
            if a is not None:
                counts.setdefault(a, []).append(i)
        if counts:
            best = max(counts.values(), key=lambda ms: (len(ms), -ms[0]))
            maj += labs[best[0]]
    n = max(len(problems_idx), 1)
    return {"best_of_n_by_head": bon / n, "first_sample": first / n, "majority_vote": maj / n, "problems": len(problems_idx)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.train_value_head", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", nargs="+", required=True, help="rows.jsonl files with extra.samples (train split)")
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--trunk", default="qwen25_coder_05b", help="model config whose hidden states the head reads")
    ap.add_argument("--set", action="append", default=[], help="trunk model override (repeatable)")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--l2", type=float, nargs="+", default=[1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0, 10.0])
    ap.add_argument("--max-tokens", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        torch.set_num_threads(args.threads)
        t0 = time.time()
        problems, rows, task = load_samples(args.rows, args.task)
        from tools.train_acceptance_head import load_engine

        engine = load_engine(args.trunk, args.set, args.dtype)
        X, y, w, pid, sid, last = build(engine, problems, args.max_tokens, args.batch_size)
        dev = [p for p, (eid, _, _) in enumerate(problems) if fold_of(eid, 5) != 0]
        held = [p for p, (eid, _, _) in enumerate(problems) if fold_of(eid, 5) == 0]
        dev_mask = torch.isin(pid, torch.tensor(dev))
        cv = {}
        for l2 in args.l2:
            scores = []
            for k in range(4):
                val = [p for p in dev if fold_of(problems[p][0] + "/cv", 4) == k]
                vm = torch.isin(pid, torch.tensor(val or [-1]))
                tm = dev_mask & ~vm
                head = fit(X[tm], y[tm], w[tm], l2)
                a = auc(predict(head, X[vm]), y[vm], w[vm])
                if a is not None:
                    scores.append(a)
            cv[l2] = sum(scores) / len(scores) if scores else float("nan")
            print(f"l2 {l2:g}: cross-validated step-prefix AUC {cv[l2]:.3f}")
        best_l2 = max(cv, key=lambda k: (cv[k], -k))
        head = fit(X[dev_mask], y[dev_mask], w[dev_mask], best_l2)
        hm = torch.isin(pid, torch.tensor(held or [-1]))
        held_auc = auc(predict(head, X[hm]), y[hm], w[hm])
        held_auc_final = auc(predict(head, X[hm & last]), y[hm & last])
        held_choice = choice_accuracy(head, X, y, pid, last, held, problems, task)
        final = fit(X, y, w, best_l2)  # the shipped head: every problem
        train_auc = auc(predict(final, X), y, w)
        sha = hashlib.sha256(b"".join(Path(p).read_bytes() for p in args.rows)).hexdigest()
        try:
            import subprocess

            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        except OSError:
            commit = None
        n_samples = int(last.sum())
        meta = {"trunk": engine.name, "trunk_config": args.trunk, "trunk_overrides": list(args.set),
                "dtype": args.dtype or "config", "vocabulary": engine.vocabulary_fingerprint(),
                "features": "last-layer hidden at the prefix end + mean over solution tokens (2 x hidden)",
                "samples_task": f"{args.task}:train", "rows": [str(p) for p in args.rows], "rows_sha256": sha,
                "policy": sorted({str(r.get("model_name") or r.get("model")) for r in rows}),
                "problems": len(problems), "samples": n_samples, "prefixes": int(X.shape[0]),
                "positive_rate_samples": float(y[last].mean()), "l2": best_l2, "cv_auc": cv,
                "heldout_problems": len(held), "heldout_auc": held_auc, "heldout_auc_final": held_auc_final,
                "heldout_choice": held_choice, "train_auc_final_fit": train_auc,
                "seconds": round(time.time() - t0, 1), "commit": commit}
        save_head(args.out, final, meta)
        print(json.dumps({k: meta[k] for k in ("problems", "samples", "prefixes", "positive_rate_samples", "l2",
                                                "heldout_auc", "heldout_auc_final", "heldout_choice", "seconds")},
                         indent=1))
        print(f"wrote {args.out} (sha256 {hashlib.sha256(Path(args.out).read_bytes()).hexdigest()[:16]})")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
