"""Cost of one target forward over n new tokens, relative to a one-token forward (one process).

    python benchmarks/bench_forward_cost.py --model qwen25_coder_15b --dtype bfloat16

Tree and multi-draft methods buy MAT with wider verification forwards; whether that pays on a
machine is decided by this curve (speedup ~ MAT / cost(n)). For each n the forward runs after a
150-token prefix, is cropped away again, and the best of `--repeats` timed runs (after one
warm-up) is reported, both as a causal chain and with a 4D tree mask (here a chain expressed as
a tree, so the numbers isolate the mask path's overhead).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_decoding import load_engine, machine  # noqa: E402


def timed(engine, base: int, n: int, tree: bool, repeats: int) -> float:
    ids = list(range(2000, 2000 + n))
    mask = torch.tril(torch.ones(n, n, dtype=torch.bool)) if tree else None
    best = float("inf")
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        if tree:
            engine.forward(ids, tree=mask, depths=torch.arange(n))
        else:
            engine.forward(ids)
        dt = time.perf_counter() - t0
        engine.truncate_to(base)
        if r:  # the first run is a warm-up
            best = min(best, dt)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2_135m", help="conf/model/<name>.yaml")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sizes", default="2,4,8,12,16,24,32,48,64")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(machine(), flush=True)
    engine = load_engine(args.model, args.dtype)
    with torch.inference_mode():
        engine.reset()
        engine.forward(list(range(1000, 1150)))
        base = engine.length
        one = timed(engine, base, 1, False, args.repeats)
        print(f"{engine.name} ({args.dtype}): one-token forward after {base} tokens: {one * 1000:.1f} ms")
        print(f"{'n':>4s} {'chain':>8s} {'tree mask':>10s}   (cost / one-token forward)")
        for n in (int(s) for s in args.sizes.split(",")):
            a, b = timed(engine, base, n, False, args.repeats), timed(engine, base, n, True, args.repeats)
            print(f"{n:4d} {a / one:7.2f}x {b / one:9.2f}x", flush=True)


if __name__ == "__main__":
    main()
