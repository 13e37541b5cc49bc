"""Superposed Decoding vs nucleus sampling: the cost of k drafts, side by side in one process.

The paper's claim (Shen et al. 2024): k drafts from superposed decoding are >= 2.44x faster
than k drafts from nucleus sampling for k >= 3 (one pass instead of k). Per prompt this script
runs ONE superposed pass (k drafts) and k nucleus-sampling runs (top-p, seeds 0..k-1) on the same
engine, interleaved, after a short warm-up each, and prints:

    tok/s          output tokens / wall s (superposed: the best draft, as the harness counts it)
    draft tok/s    tokens of ALL k drafts / wall s (sampling: the k samples)
    k-draft ratio  wall time of the k sampling runs / wall time of the superposed pass
    fwd/token      target forwards / output tokens (superposed: 1 per step whatever k)

and every draft's text. Run (SmolLM2 pack installed):

    python benchmarks/bench_superposed.py [--model smollm2_135m] [--k 3] [--max-new-tokens 64] [--prompts 2]
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--prompts", type=int, default=2, help="GSM8K test prompts (chat template)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write raw numbers and texts as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    engine = load_engine(args.model, args.dtype)
    sup = build("superposed", args.model, [f"strategy.k={args.k}"])
    nuc = build("sampling", args.model, ["strategy.sampling.temperature=1.0", f"strategy.sampling.top_p={args.top_p}"])
    t0 = time.perf_counter()
    sup.setup(engine)  # the n-gram model: counted once (or loaded from the cache), outside the timing
    print(f"[bench] n-gram model ready in {time.perf_counter() - t0:.1f} s "
          f"({sup._lm[1].meta['tokens']} corpus tokens, {sup._lm[1].nbytes() / 1e6:.1f} MB)")
    print(machine())
    from tasks.gsm8k import GSM8K

    task = GSM8K(path=str(DATA / "gsm8k" / "test.jsonl"))
    prompts = [(ex["id"], engine.render(task.prompt(ex))) for ex in task.load()[:args.prompts]]
    timed(sup, engine, prompts[0][1], 8, 0)  # warm-up
    timed(nuc, engine, prompts[0][1], 8, 0)

    tot = {"sup_s": 0.0, "sup_best": 0, "sup_all": 0, "sup_fw": 0, "nuc_s": 0.0, "nuc_tok": 0, "nuc_fw": 0}
    raw = []
    for pid, prompt in prompts:
        s_wall, s_tr = timed(sup, engine, prompt, args.max_new_tokens, 0)
        n_runs = [timed(nuc, engine, prompt, args.max_new_tokens, seed) for seed in range(args.k)]
        tot["sup_s"] += s_wall
        tot["sup_best"] += len(s_tr.tokens)
        tot["sup_all"] += sum(len(c) for c in s_tr.candidates)
        tot["sup_fw"] += s_tr.target_forwards
        tot["nuc_s"] += sum(w for w, _ in n_runs)
        tot["nuc_tok"] += sum(len(t.tokens) for _, t in n_runs)
        tot["nuc_fw"] += sum(t.target_forwards for _, t in n_runs)
        print(f"\n== {pid}: superposed {s_wall:.2f} s for {args.k} drafts; nucleus {sum(w for w, _ in n_runs):.2f} s "
              f"for {args.k} samples")
        for i, c in enumerate(s_tr.candidates):
            print(f"  superposed draft {i}: {engine.decode(c)!r}")
        for i, (_, t) in enumerate(n_runs):
            print(f"  nucleus sample {i}:   {engine.decode(t.tokens)!r}")
        raw.append({"id": pid, "superposed_s": s_wall, "drafts": [engine.decode(c) for c in s_tr.candidates],
                    "draft_tokens": [len(c) for c in s_tr.candidates], "nucleus_s": [w for w, _ in n_runs],
                    "samples": [engine.decode(t.tokens) for _, t in n_runs],
                    "sample_tokens": [len(t.tokens) for _, t in n_runs]})

    sup_tps, nuc_tps = tot["sup_best"] / tot["sup_s"], tot["nuc_tok"] / tot["nuc_s"]
    sup_dtps = tot["sup_all"] / tot["sup_s"]
    print(f"\n{args.model} {args.dtype}, k={args.k}, {args.max_new_tokens} new tokens, {len(prompts)} prompts, "
          f"nucleus top_p={args.top_p}")
    print("| method | tok/s | draft tok/s | fwd/token |\n|---|---|---|---|")
    print(f"| superposed (k={args.k}, one pass) | {sup_tps:.2f} | {sup_dtps:.2f} | {tot['sup_fw'] / tot['sup_best']:.3f} |")
    print(f"| nucleus sampling ({args.k} runs) | {nuc_tps:.2f} | {nuc_tps:.2f} | {tot['nuc_fw'] / tot['nuc_tok']:.3f} |")
    print(f"one-pass tok/s ratio superposed / nucleus: {sup_tps / nuc_tps:.2f}x")
    print(f"k-draft ratio (draft tok/s superposed / nucleus): {sup_dtps / nuc_tps:.2f}x; "
          f"wall time of {args.k} nucleus runs / one superposed pass: {tot['nuc_s'] / tot['sup_s']:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "machine": machine(), "totals": tot,
                                              "prompts": raw}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
