"""The floor under plain decoding: every linear layer of a model applied once to one token.

A decode step must read every weight matrix once; on a CPU at batch 1 that matrix-vector work
is bound by memory bandwidth, so no engine (ours, transformers', compiled or not) can decode a
token faster than this loop over the model's own nn.Linear weights (the LM head included). Also
printed: the same loop for B rows (what a batched step of B samples pays in matmuls), so a
measured per-token time can be split into "weights" and "everything else".

With --engines, the floor is also measured in lockstep with one decode forward of our default
engine and of `engine=static` (rounds of one floor pass + one forward each, the order rotating;
benchmarks/bench_greedy_gap.py's steppers), so "how far above the floor" is a ratio measured in
one process, not across runs.

Run:  python benchmarks/bench_linear_floor.py [--model smollm2_135m] [--dtype float32] [--rows 8] [--engines]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_decoding import load_engine, machine  # noqa: E402


def floor_ms(mats, rows: int, reps: int) -> float:
    xs = {w.shape[1]: torch.ones(rows, w.shape[1], dtype=w.dtype) for w in mats}
    with torch.inference_mode():
        for w in mats:  # warm-up
            torch.nn.functional.linear(xs[w.shape[1]], w)
        t0 = time.perf_counter()
        for _ in range(reps):
            for w in mats:
                torch.nn.functional.linear(xs[w.shape[1]], w)
    return (time.perf_counter() - t0) / reps * 1e3


def lockstep_engines(eng, mats, rounds: int) -> dict:
    """ms per step of: the floor (one pass over the weights), a decode forward of the default
    engine, and of engine=static, interleaved round by round (order rotating)."""
    from benchmarks.bench_decoding import build_prompts, static_twin
    from benchmarks.bench_greedy_gap import Stepper

    st = static_twin(eng, False, 4096)
    _, ids = build_prompts(eng, 1)[0]
    x = {w.shape[1]: torch.ones(1, w.shape[1], dtype=w.dtype) for w in mats}

    def floor_pass():
        with torch.inference_mode():
            for w in mats:
                torch.nn.functional.linear(x[w.shape[1]], w)

    steppers = {"engine": Stepper("engine", eng, st, ids), "static": Stepper("static", eng, st, ids)}
    fns = {"floor": floor_pass, "engine": steppers["engine"].step, "static": steppers["static"].step}
    for f in fns.values():  # warm-up
        f()
    names, secs = list(fns), dict.fromkeys(fns, 0.0)
    for r in range(rounds):
        for k in names[r % 3:] + names[:r % 3]:
            t0 = time.perf_counter()
            fns[k]()
            secs[k] += time.perf_counter() - t0
    if steppers["engine"].out != steppers["static"].out:
        print("note: engine=hf and engine=static decoded different tokens (a bf16 near-tie?); "
              "both still ran one forward per round over the same context length")
    return {k: 1e3 * v / rounds for k, v in secs.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engines", action="store_true",
                    help="also time decode forwards of engine=hf and engine=static in lockstep with the floor")
    ap.add_argument("--rounds", type=int, default=48, help="--engines: lockstep rounds (decode forwards each)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    eng = load_engine(args.model, args.dtype)
    mats = [m.weight for m in eng.model.modules() if isinstance(m, torch.nn.Linear)]
    mb = sum(w.numel() * w.element_size() for w in mats) / 1e6
    one = min(floor_ms(mats, 1, args.reps) for _ in range(3))
    many = min(floor_ms(mats, args.rows, max(1, args.reps // 2)) for _ in range(3))
    print(machine())
    print(f"{args.model} ({args.dtype}): {len(mats)} linear layers, {mb:.0f} MB of weights")
    print(f"1 token:  {one:.1f} ms per step ({mb / one:.1f} GB/s of weights) -> at most {1e3 / one:.1f} tok/s")
    print(f"{args.rows} rows:   {many:.1f} ms per step ({many / one:.2f}x one row)")
    lock = lockstep_engines(eng, mats, args.rounds) if args.engines else None
    if lock:
        print(f"lockstep, {args.rounds} rounds (ms per decode step; x floor = how far above the weights' floor):")
        for k, v in lock.items():
            print(f"  {k:8s} {v:7.1f} ms  {v / lock['floor']:5.2f}x floor")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "args": vars(args), "weights_mb": mb,
                                               "floor_ms_1": one, f"floor_ms_{args.rows}": many,
                                               **({"lockstep_ms": lock} if lock else {})}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
