"""Superposed Decoding vs nucleus sampling: the cost of k drafts, side by side in one process.

The paper's claim (Shen et al. 2024): k drafts from superposed decoding are >= 2.44x faster
than k drafts from nucleus sampling for k >= 3 (one pass instead of k). Per prompt this script
runs ONE superposed pass (k drafts) and k nucleus-sampling runs (top-p, seeds 0..k-1) on the same
engine, interleaved, after a short warm-up each, and prints:

    tok/s          output tokens / wall s (superposed: the best draft, as the harness counts it)
    draft tok/s    tokens of ALL k drafts / wall s (sampling: the k samples)
    k-draft ratio  wall time of the k sampling runs / wall time of the superposed pass
    fwd/token      target forwards / output tokens (superposed: 1 per step whatever k)

    NLL/token      each draft's mean negative log-likelihood per token under the model itself
                   (teacher-forced, T = 1; exp = perplexity): the paper's coherence measure, on
                   the model at hand instead of a larger judge

and every draft's text. `--scorings paper,interpolated` runs both n-gram scorings of
strategies/superposed.py side by side (order rotated per prompt). Run (SmolLM2 pack installed):

    python benchmarks/bench_superposed.py [--model smollm2_135m] [--k 3] [--max-new-tokens 64] [--prompts 2]
"""

from __future__ import annotations

import argparse
import json
import math
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


def build(name: str, model: str, overrides):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"strategy={name}", f"model={model}", *overrides])
    return instantiate(cfg.strategy, _convert_="all")


def timed(strategy, engine, prompt, n, seed):
    t0 = time.perf_counter()
    tr = strategy.generate(engine, prompt, n, torch.Generator().manual_seed(seed))
    return time.perf_counter() - t0, tr


def draft_nll(engine, prompt, drafts) -> list[float]:
    """Mean negative log-likelihood per token of each draft under the model itself (T = 1,
    teacher-forced): the perplexity-style coherence measure (exp of it = perplexity)."""
    rows = [d for d in drafts if d]
    scored = engine.score_suffixes(prompt, rows) if rows else []
    return [float(-lp.mean()) for lp, _ in scored]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=2, help="GSM8K test prompts (chat template)")
    ap.add_argument("--scorings", default="paper", help="comma list of superposed scorings to run side by side "
                    "(paper, interpolated)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write raw numbers and texts as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    engine = load_engine(args.model, args.dtype)
    scorings = [x.strip() for x in args.scorings.split(",") if x.strip()]
    sups = {sc: build("superposed", args.model, [f"strategy.k={args.k}", f"strategy.scoring={sc}"]) for sc in scorings}
    nuc = build("sampling", args.model, ["strategy.sampling.temperature=1.0", f"strategy.sampling.top_p={args.top_p}"])
    t0 = time.perf_counter()
    for sup in sups.values():
        sup.setup(engine)  # the n-gram model: counted once (or loaded from the cache), outside the timing
    lm = next(iter(sups.values()))._lm[1]
    print(f"[bench] n-gram model ready in {time.perf_counter() - t0:.1f} s "
          f"({lm.meta['tokens']} corpus tokens, {lm.nbytes() / 1e6:.1f} MB)")
    print(machine())
    from tasks.gsm8k import GSM8K

    task = GSM8K(path=str(DATA / "gsm8k" / "test.jsonl"))
    prompts = [(ex["id"], engine.render(task.prompt(ex))) for ex in task.load()[:args.prompts]]
    for sup in sups.values():
        timed(sup, engine, prompts[0][1], 8, 0)  # warm-up
    timed(nuc, engine, prompts[0][1], 8, 0)

    tot = {sc: {"s": 0.0, "best": 0, "all": 0, "fw": 0, "nll": [], "distinct": 0} for sc in scorings}
    ntot = {"s": 0.0, "tok": 0, "fw": 0, "nll": []}
    raw = []
    for pi, (pid, prompt) in enumerate(prompts):
        order = scorings[pi % len(scorings):] + scorings[:pi % len(scorings)]  # rotate the order per prompt
        rec = {"id": pid}
        print(f"\n== {pid}")
        for sc in order:
            s_wall, s_tr = timed(sups[sc], engine, prompt, args.max_new_tokens, 0)
            t = tot[sc]
            t["s"] += s_wall
            t["best"] += len(s_tr.tokens)
            t["all"] += sum(len(c) for c in s_tr.candidates)
            t["fw"] += s_tr.target_forwards
            nll = draft_nll(engine, prompt, s_tr.candidates)
            t["nll"] += nll
            t["distinct"] += len({tuple(c) for c in s_tr.candidates})
            print(f"  superposed[{sc}] {s_wall:.2f} s for {args.k} drafts, draft NLL/token "
                  f"{', '.join(f'{x:.2f}' for x in nll)}")
            for i, c in enumerate(s_tr.candidates):
                print(f"    draft {i}: {engine.decode(c)!r}")
            rec[sc] = {"s": s_wall, "drafts": [engine.decode(c) for c in s_tr.candidates],
                       "draft_tokens": [len(c) for c in s_tr.candidates], "nll": nll}
        n_runs = [timed(nuc, engine, prompt, args.max_new_tokens, seed) for seed in range(args.k)]
        ntot["s"] += sum(w for w, _ in n_runs)
        ntot["tok"] += sum(len(t.tokens) for _, t in n_runs)
        ntot["fw"] += sum(t.target_forwards for _, t in n_runs)
        nll = draft_nll(engine, prompt, [t.tokens for _, t in n_runs])
        ntot["nll"] += nll
        print(f"  nucleus {sum(w for w, _ in n_runs):.2f} s for {args.k} samples, NLL/token {', '.join(f'{x:.2f}' for x in nll)}")
        for i, (_, t) in enumerate(n_runs):
            print(f"    sample {i}: {engine.decode(t.tokens)!r}")
        rec["nucleus"] = {"s": [w for w, _ in n_runs], "samples": [engine.decode(t.tokens) for _, t in n_runs],
                          "sample_tokens": [len(t.tokens) for _, t in n_runs], "nll": nll}
        raw.append(rec)

    nuc_tps = ntot["tok"] / ntot["s"]
    mean = lambda xs: sum(xs) / max(len(xs), 1)  # noqa: E731
    print(f"\n{args.model} {args.dtype}, k={args.k}, {args.max_new_tokens} new tokens, {len(prompts)} prompts, "
          f"nucleus top_p={args.top_p}, n-gram corpus {lm.meta.get('corpus') or sups[scorings[0]].corpus or sups[scorings[0]].ngram_path}")
    print("| method | tok/s | draft tok/s | fwd/token | mean draft NLL/token (ppl) | distinct drafts |\n|---|---|---|---|---|---|")
    summary = {}
    for sc in scorings:
        t = tot[sc]
        tps, dtps = t["best"] / t["s"], t["all"] / t["s"]
        summary[sc] = {"tok_per_s": tps, "draft_tok_per_s": dtps, "fwd_per_token": t["fw"] / t["best"],
                       "nll": mean(t["nll"]), "distinct": t["distinct"], "k_draft_ratio": dtps / nuc_tps,
                       "nucleus_wall_over_superposed": ntot["s"] / t["s"]}
        print(f"| superposed {sc} (k={args.k}, one pass) | {tps:.2f} | {dtps:.2f} | {t['fw'] / t['best']:.3f} | "
              f"{mean(t['nll']):.3f} ({math.exp(mean(t['nll'])):.2f}) | {t['distinct']}/{args.k * len(prompts)} |")
    print(f"| nucleus sampling ({args.k} runs) | {nuc_tps:.2f} | {nuc_tps:.2f} | {ntot['fw'] / ntot['tok']:.3f} | "
          f"{mean(ntot['nll']):.3f} ({math.exp(mean(ntot['nll'])):.2f}) | - |")
    for sc in scorings:
        print(f"[{sc}] k-draft ratio (draft tok/s superposed / nucleus): {summary[sc]['k_draft_ratio']:.2f}x; wall time "
              f"of {args.k} nucleus runs / one superposed pass: {summary[sc]['nucleus_wall_over_superposed']:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "machine": machine(), "summary": summary,
                                              "nucleus": {"tok_per_s": nuc_tps, "nll": mean(ntot["nll"])},
                                              "prompts": raw}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
