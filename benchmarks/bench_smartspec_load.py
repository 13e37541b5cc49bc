"""SmartSpec under load: a batch of concurrent requests, K chosen per step by the goodput rule vs
fixed K, side by side in one process (#18 item 6; strategies/core/batched_spec.py).

    python benchmarks/bench_smartspec_load.py [--target qwen25_coder_15b] [--draft qwen25_coder_05b] \
        [--dtype bfloat16] [--prompts 8] [--max-new-tokens 64] [--loads 1,4,8] [--ks 0,2,4] [--k-max 6] \
        [--out results/published/bench_smartspec_load_qwen15b_bf16.json]

1. Step-time table, measured ONCE here before any decoding and then an input of the rule:
   target forwards of B rows x L new tokens (L = 1, 2, 3, 5, k_max + 1) and a batched 1-token
   draft forward, for each load B (median of `--repeats`), on the forks the decoding uses.
2. For each load B the prompts are cut into batches of B requests (GSM8K test questions, chat
   template); per batch every method runs in turn (the order rotates from batch to batch):
   K = 0 (plain batched greedy), each fixed K of --ks, and the goodput rule (k_max) with its
   acceptance prior measured first on GSM8K TRAIN prompts (fixed K, `--calibration-*`; or given
   with --prior-accept) and one batch-wide acceptance estimate (`--pooled`, default).
3. Printed per load and method: generated tokens / wall s of the whole batch (throughput), x
   plain batched greedy at that load, the K histogram, the acceptance rate, and how many rows
   are token-identical to the same prompt decoded ALONE by plain greedy (bf16 batched forwards
   round differently from single-row ones, so a near-tie may flip; fp32 exactness is what
   tests/test_batched_spec.py checks).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HARNESS_DATA_DIR", str(ROOT.parent / "shared" / "data"))

from bench_decoding import DATA, load_engine, machine  # noqa: E402
from strategies.core.batched_spec import FixedK, GoodputRule, batched_speculative, common_prefix  # noqa: E402


def gsm8k_prompts(engine, n, split="test"):
    from tasks.gsm8k import GSM8K

    task = GSM8K(path=str(DATA / "gsm8k"))  # the folder: test.jsonl for load(), train.jsonl for the pool
    exs = task.load() if split == "test" else task.fewshot_pool()
    return [(ex["id"], task.prompt_ids(engine, ex)[0]) for ex in exs[:n]]


@torch.inference_mode()
def profile(target, draft, prompts, loads, lengths, repeats):
    """t_target[B][L], t_draft[B] (seconds, medians) on forks of the first B prompts: one fork per
    load, each timed feed of L tokens per row dropped again (Fork.drop_last) before the next."""
    t_target, t_draft = {}, {}
    for B in loads:
        group = prompts[:B]
        P = common_prefix(group)
        target.reset()
        f = target.fork(group[0][:P], [p[P:] for p in group])
        tok = int(f.logits[0].argmax())
        row = {}
        for L in lengths:
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                f.feed([[tok] * L for _ in group])
                times.append(time.perf_counter() - t0)
                for r in range(B):
                    f.drop_last(r, L)
            row[L] = sorted(times)[len(times) // 2]
        t_target[B] = row
        draft.reset()
        f = draft.fork(group[0][:P], [p[P:] for p in group])
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f.step([tok] * B)
            times.append(time.perf_counter() - t0)
            for r in range(B):
                f.drop_last(r, 1)
        t_draft[B] = sorted(times)[len(times) // 2]
    return t_target, t_draft


def calibrate(target, draft, engine_prompts, max_new_tokens, k):
    """The pair's acceptance rate at fixed K on prompts NOT used below (GSM8K TRAIN questions):
    the measured prior of the goodput rule, an explicit input like the step-time table."""
    res = batched_speculative(target, draft, engine_prompts, max_new_tokens, FixedK(k))
    acc = sum(s["accepted"] for s in res.steps)
    drafted = sum(s["K"] * s["B"] for s in res.steps)
    return acc / max(drafted, 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="qwen25_coder_15b")
    ap.add_argument("--draft", default="qwen25_coder_05b")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--loads", default="1,4,8")
    ap.add_argument("--ks", default="2,4")
    ap.add_argument("--k-max", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prior-accept", type=float, default=None,
                    help="the goodput rule's acceptance prior (default: measured on GSM8K TRAIN prompts first)")
    ap.add_argument("--prior-weight", type=float, default=16.0, help="the prior's weight in drafted tokens")
    ap.add_argument("--pooled", action=argparse.BooleanOptionalAction, default=True,
                    help="one batch-wide acceptance estimate (default) instead of one per request")
    ap.add_argument("--calibration-prompts", type=int, default=4)
    ap.add_argument("--calibration-k", type=int, default=4)
    ap.add_argument("--threads", type=int, default=max(1, torch.get_num_threads()))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    loads = [int(x) for x in args.loads.split(",")]
    ks = [int(x) for x in args.ks.split(",") if x.strip()]
    if max(loads) > args.prompts or any(args.prompts % b for b in loads):
        raise SystemExit("error: every load must divide --prompts")
    target, draft = load_engine(args.target, args.dtype), load_engine(args.draft, args.dtype)
    prompts = gsm8k_prompts(target, args.prompts)
    ids = [p for _, p in prompts]
    print(machine(), flush=True)
    lengths = sorted({1, 2, 3, 5, args.k_max + 1})
    t0 = time.perf_counter()
    t_target, t_draft = profile(target, draft, ids, loads, lengths, args.repeats)
    print(f"step-time table ({time.perf_counter() - t0:.0f} s to measure): target "
          + "; ".join(f"B={b}: " + ", ".join(f"L={l} {v * 1e3:.0f} ms" for l, v in r.items()) for b, r in t_target.items())
          + " | draft " + ", ".join(f"B={b} {v * 1e3:.0f} ms" for b, v in t_draft.items()), flush=True)
    rule = GoodputRule(t_target, t_draft, k_max=args.k_max)
    prior = args.prior_accept
    if prior is None:
        t0 = time.perf_counter()
        cal = [p for _, p in gsm8k_prompts(target, args.calibration_prompts, split="train")]
        prior = calibrate(target, draft, cal, args.max_new_tokens, args.calibration_k)
        print(f"acceptance prior {prior:.3f}: fixed K={args.calibration_k} on {len(cal)} GSM8K TRAIN prompts "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    methods = [("greedy (K=0)", FixedK(0))] + [(f"fixed K={k}", FixedK(k)) for k in ks] + [("smartspec", rule)]
    kw = {"smartspec": {"prior_accept": prior, "prior_weight": args.prior_weight, "pooled": args.pooled}}
    alone = {}  # prompt id -> single-row plain greedy tokens (the B = 1, K = 0 run when measured)
    results = []
    for B in loads:
        acc = {name: {"tokens": 0, "wall_s": 0.0, "accepted": 0, "drafted": 0, "k_hist": {}, "rows": [],
                      "target_forwards": 0} for name, _ in methods}
        for bi in range(0, len(ids), B):
            batch = ids[bi: bi + B]
            names = [prompts[bi + j][0] for j in range(B)]
            rot = (bi // B) % len(methods)
            for name, r in methods[rot:] + methods[:rot]:
                t1 = time.perf_counter()
                res = batched_speculative(target, draft, batch, args.max_new_tokens, r, **kw.get(name, {}))
                wall = time.perf_counter() - t1
                a = acc[name]
                a["tokens"] += sum(len(t) for t in res.tokens)
                a["wall_s"] += wall
                a["accepted"] += sum(s["accepted"] for s in res.steps)
                a["drafted"] += sum(s["K"] * s["B"] for s in res.steps)
                a["target_forwards"] += res.target_forwards
                for k, v in res.k_histogram.items():
                    a["k_hist"][k] = a["k_hist"].get(k, 0) + v
                for n, toks in zip(names, res.tokens):
                    a["rows"].append((n, toks))
                    if B == 1 and name.startswith("greedy"):
                        alone[n] = toks
        base = acc[methods[0][0]]["tokens"] / acc[methods[0][0]]["wall_s"]
        for name, _ in methods:
            a = acc[name]
            tps = a["tokens"] / a["wall_s"]
            same = sum(alone.get(n) == t for n, t in a["rows"]) if alone else None
            row = {"load": B, "method": name, "tok_per_s": tps, "x_batched_greedy": tps / base,
                   "tokens": a["tokens"], "wall_s": a["wall_s"], "k_hist": dict(sorted(a["k_hist"].items())),
                   "acceptance": a["accepted"] / a["drafted"] if a["drafted"] else None,
                   "target_forwards": a["target_forwards"], "identical_to_alone": same, "rows": len(a["rows"])}
            results.append(row)
            print(f"B={B:<2} {name:<14} {tps:6.2f} tok/s  x{tps / base:4.2f}  K {row['k_hist']}  "
                  f"accept {row['acceptance'] if row['acceptance'] is None else round(row['acceptance'], 3)}  "
                  f"identical to alone {same}/{len(a['rows'])}", flush=True)
    out = {"command": " ".join(sys.argv), "machine": machine(), "target": args.target, "draft": args.draft,
           "dtype": args.dtype, "prompts": [n for n, _ in prompts], "max_new_tokens": args.max_new_tokens,
           "step_table": {"t_target": t_target, "t_draft": t_draft}, "results": results,
           "smartspec": {"prior_accept": prior, "prior_weight": args.prior_weight, "pooled": args.pooled,
                         "k_max": args.k_max},
           "date": time.strftime("%Y-%m-%d")}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
