"""Best-of-N generation cost: N samples batched over a shared prompt KV vs one generation.

Side by side in one process, same prompts, same weights, interleaved per prompt:

    greedy-1      one greedy generation (our Greedy strategy), the unit of cost
    batched-N     N sampled solutions grown in ONE batched forward per token (strategies/core/search
                  StepSampler, shared prompt prefill) -- what best_of_n / self_consistency pay
    sequential-N  N sampled solutions generated one after another (the naive way)

Each generation runs to EOS or --max-new-tokens. Printed per method: wall seconds, generated
tokens, tokens/s, and wall time / greedy-1 wall time. Because samples stop at different
lengths, the tokens column is printed too: compare "x greedy" with N (the naive cost) and look
at tokens/s for the throughput gain of batching. Scoring (the PRM / judge) is not included.

Run:  python benchmarks/bench_batched_sampling.py [--model qwen25_coder_05b] [--n 8] [--prompts 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_decoding import build_prompts, load_engine, machine  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen25_coder_05b")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=3, help="GSM8K prompts (HumanEval excluded)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from strategies.core.base import SamplingParams
    from strategies.greedy import Greedy
    from strategies.core.search import Candidate, StepSampler

    eng = load_engine(args.model, args.dtype)
    prompts = [p for p in build_prompts(eng, args.prompts + round(args.prompts / 2))
               if p[0].startswith("gsm8k")][: args.prompts]
    sp = SamplingParams(temperature=args.temperature, top_p=0.95)
    print(machine())
    print(f"model {args.model} ({args.dtype}), N={args.n}, {len(prompts)} GSM8K prompt(s), "
          f"max {args.max_new_tokens} new tokens, temperature {args.temperature}")

    def greedy(p, seed):
        return len(Greedy().generate(eng, p, args.max_new_tokens, torch.Generator().manual_seed(seed)).tokens)

    def batched(p, seed):
        eng.reset()
        s = StepSampler(eng, sp)
        s.extend(p, [Candidate()] * args.n, torch.Generator().manual_seed(seed), args.max_new_tokens, whole=True)
        return s.generated

    def sequential(p, seed):
        total = 0
        for i in range(args.n):
            eng.reset()
            s = StepSampler(eng, sp)
            s.extend(p, [Candidate()], torch.Generator().manual_seed(seed * 1000 + i), args.max_new_tokens, whole=True)
            total += s.generated
        return total

    methods = {"greedy-1": greedy, f"batched-{args.n}": batched, f"sequential-{args.n}": sequential}
    greedy(prompts[0][1], 0)  # warm-up
    wall = {m: 0.0 for m in methods}
    toks = {m: 0 for m in methods}
    for i, (pid, p) in enumerate(prompts):
        for m, fn in methods.items():
            t0 = time.perf_counter()
            toks[m] += fn(p, i)
            wall[m] += time.perf_counter() - t0
        print(f"  {pid}: " + "  ".join(f"{m} {wall[m]:.1f}s" for m in methods), flush=True)
    base = wall["greedy-1"]
    print(f"\n{'method':<14} {'wall s':>8} {'tokens':>7} {'tok/s':>7} {'x greedy-1 wall':>16}")
    for m in methods:
        print(f"{m:<14} {wall[m]:8.1f} {toks[m]:7d} {toks[m] / wall[m]:7.1f} {wall[m] / base:16.2f}")
    print(f"\nbatched-{args.n} costs {wall[f'batched-{args.n}'] / base:.2f}x one greedy generation "
          f"(naive sequential: {wall[f'sequential-{args.n}'] / base:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
