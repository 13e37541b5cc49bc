"""Where does plain greedy's time go? One model, several ways of calling it, alternated (#17 item 0).

Each variant runs the same greedy chain (a prefill, then one-token forwards) on the same prompt
and weights, in one process; variants rotate every repeat so drift and machine load hit them
alike. Reported: milliseconds per decode forward (prefill excluded), the ratio to `generate()`,
and whether every variant produced the same tokens.

    engine        our HFEngine.forward(last_only=True) (what every strategy calls)
    raw           model(input_ids, cache, use_cache) as HFEngine calls it, no engine code around it
    raw+mask      raw plus a 2D all-ones attention_mask and explicit position_ids (as generate() passes)
    raw-nograd    raw under torch.no_grad() instead of torch.inference_mode()
    static        our engine=static (harness/engines/static.py)
    generate      model.generate(do_sample=False), timed per forward by a hook

    python benchmarks/bench_greedy_gap.py --model qwen25_coder_15b --dtype bfloat16 --tokens 64 --repeats 3
    python benchmarks/bench_greedy_gap.py ... --lockstep --variants engine,raw,raw+mask,raw-nograd,static

--lockstep advances every variant by ONE forward per round (order rotating), instead of running
each variant's whole chain in turn: on a machine whose memory bandwidth is shared, per-forward
times drift by 20-30% over seconds, and block-by-block runs then measure the drift.
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
from benchmarks.bench_decoding import build_prompts, load_engine, machine, static_twin  # noqa: E402

VARIANTS = ["engine", "raw", "raw+mask", "raw-nograd", "static", "generate"]


def run_variant(name, eng, st, ids, n):
    """-> (tokens, seconds of the n - 1 decode forwards): a whole chain of one variant."""
    clock = time.perf_counter
    if name != "generate":
        s = Stepper(name, eng, st, ids)
        t0 = clock()
        for _ in range(n - 1):
            s.step()
        return s.out, clock() - t0
    from transformers import DynamicCache

    model = eng.model
    times, start = [], [0.0]
    pre = model.register_forward_pre_hook(lambda m, a: start.__setitem__(0, clock()))
    post = model.register_forward_hook(lambda m, a, o: times.append(clock() - start[0]))
    try:
        x = torch.tensor([ids])
        res = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n,
                             min_new_tokens=n, pad_token_id=0, cache=DynamicCache(config=model.config))
    finally:
        pre.remove()
        post.remove()
    return res[0, len(ids):].tolist(), sum(times[1:])


class Stepper:
    """One variant's greedy chain (not generate()), advanced one forward at a time."""

    def __init__(self, name, eng, st, ids):
        from transformers import DynamicCache

        self.name, self.eng, self.L = name, eng, len(ids)
        self.e = eng if name == "engine" else st if name == "static" else None
        self.cache = None if self.e else DynamicCache(config=eng.model.config)
        if self.e:
            self.e.reset()
        self.out = [self._call(ids, prefill=True)]

    def _call(self, ids, prefill=False):
        if self.e is not None:
            with torch.inference_mode():
                self.last = self.e.forward(ids, last_only=True)  # the latest logits (tests compare them)
            return int(self.last.argmax())
        ctx = torch.no_grad if self.name == "raw-nograd" else torch.inference_mode
        x, kw = torch.tensor([ids]), {}
        if self.name == "raw+mask":
            n = len(ids)
            kw = {"attention_mask": torch.ones(1, self.L if prefill else self.L + 1, dtype=torch.long),
                  "position_ids": (torch.arange(n) if prefill else torch.tensor([self.L]))[None]}
        with ctx():
            o = self.eng.model(input_ids=x, cache=self.cache, use_cache=True, logits_to_keep=1, **kw)
        if not prefill:
            self.L += 1
        self.last = o.logits[0, -1].float()
        return int(self.last.argmax())

    def step(self):
        self.out.append(self._call([self.out[-1]]))


def lockstep(variants, eng, st, ids, n, repeats):
    """Every variant advances one forward per round, the order rotating each round, so slow drifts
    of the machine (memory bandwidth shared with other tenants) hit every variant alike."""
    secs = {v: 0.0 for v in variants}
    toks = {}
    for rep in range(repeats):
        steppers = {v: Stepper(v, eng, st, ids) for v in variants}
        for i in range(n - 1):
            k = (i + rep) % len(variants)
            for v in variants[k:] + variants[:k]:
                t0 = time.perf_counter()
                steppers[v].step()
                secs[v] += time.perf_counter() - t0
        for v in variants:
            toks.setdefault(v, steppers[v].out)
        print(f"  repeat {rep}: " + "  ".join(f"{v} {1000 * secs[v] / ((rep + 1) * (n - 1)):.1f}" for v in variants),
              flush=True)
    return secs, toks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2_135m")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--lockstep", action="store_true",
                    help="advance every variant one forward per round (no 'generate': it cannot be stepped)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    if bad := [v for v in variants if v not in VARIANTS]:
        ap.error(f"unknown variant(s) {bad}; choose from {VARIANTS}")
    if args.lockstep and "generate" in variants:
        ap.error("--lockstep cannot step generate(); raw-nograd / raw+mask stand for its call")
    torch.set_num_threads(args.threads)
    print(machine(), flush=True)
    eng = load_engine(args.model, args.dtype)
    st = static_twin(eng, False, 4096) if "static" in variants else None
    _, ids = build_prompts(eng, 1)[0]
    for v in variants:  # warm-up: one short run each (allocator, oneDNN primitives)
        run_variant(v, eng, st, ids, 4)
    secs = {v: 0.0 for v in variants}
    toks = {}
    if args.lockstep:
        secs, toks = lockstep(variants, eng, st, ids, args.tokens, args.repeats)
    for rep in range(0 if args.lockstep else args.repeats):
        order = variants[rep % len(variants):] + variants[:rep % len(variants)]
        for v in order:
            out, s = run_variant(v, eng, st, ids, args.tokens)
            secs[v] += s
            toks.setdefault(v, out)
            print(f"  repeat {rep} {v:11s} {1000 * s / (args.tokens - 1):7.1f} ms/forward", flush=True)
    per = {v: 1000 * secs[v] / (args.repeats * (args.tokens - 1)) for v in variants}
    ref_name = "generate" if "generate" in per else "raw-nograd" if "raw-nograd" in per else None
    ref = per.get(ref_name)
    print(f"\n{'variant':11s} {'ms/forward':>10s} {'x ' + str(ref_name):>12s} same tokens")
    for v in variants:
        same = toks[v] == toks[variants[0]]
        print(f"{v:11s} {per[v]:10.1f} {(ref / per[v]) if ref else float('nan'):12.3f} {same}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "args": vars(args), "ms_per_forward": per,
                                               "tokens_equal": {v: toks[v] == toks[variants[0]] for v in variants}},
                                              indent=1))


if __name__ == "__main__":
    main()
