"""Best-of-N generation cost: N samples batched over a shared prompt KV vs one generation.

Side by side in one process, same prompts, same weights, interleaved per prompt:

    greedy-1      one greedy generation (our Greedy strategy), the unit of cost
    batched-N     N sampled solutions grown in ONE batched forward per token (strategies/core/search
                  StepSampler, shared prompt prefill) -- what best_of_n / self_consistency pay
    sequential-N  N sampled solutions generated one after another (the naive way)
    hf-greedy-1   transformers `model.generate(do_sample=False)`: the peer's unit of cost
    hf-batched-N  transformers `model.generate(do_sample=True, num_return_sequences=N)`, same
                  temperature / top-p: the peer of batched-N

With --static, greedy-1@static and batched-N@static run the same strategies on `engine=static`
(harness/engines/static.py) built over the SAME weight tensors: preallocated KV, our own decoder
loop, forks on their own buffers (no per-step cache concatenation of B rows).

With --ban-eos every generation runs to --max-new-tokens (EOS masked in ours, min_new_tokens in
transformers'), so every method generates exactly the same number of tokens and wall times
compare directly. Ratios are printed against the FASTER of the two greedy baselines.

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
    ap.add_argument("--ban-eos", action="store_true", help="every generation runs to --max-new-tokens")
    ap.add_argument("--repeats", type=int, default=1, help="passes over the prompts (method order rotates)")
    ap.add_argument("--json", default=None, help="write the raw numbers here")
    ap.add_argument("--static", action="store_true", help="also run greedy-1 and batched-N on engine=static")
    ap.add_argument("--no-sequential", action="store_true", help="skip sequential-N (the naive baseline, ~N x greedy)")
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

    from transformers import DynamicCache

    model = eng.model
    eos = sorted(eng.eos_ids)
    greedy_strategy = Greedy()
    if args.ban_eos:
        greedy_strategy.sampling = SamplingParams()  # greedy, EOS masked below

    def greedy(p, seed, eng=eng):
        if not args.ban_eos:
            return len(greedy_strategy.generate(eng, p, args.max_new_tokens, torch.Generator().manual_seed(seed)).tokens)
        eng.reset()  # one token at a time with EOS masked: same path as Greedy, run to the budget
        logits, n = eng.forward(p, last_only=True), 0
        while n < args.max_new_tokens:
            logits = logits.reshape(-1, logits.shape[-1])[-1].clone()
            logits[eos] = float("-inf")
            t = int(logits.argmax())
            n += 1
            if n < args.max_new_tokens:
                logits = eng.forward([t], last_only=True)
        return n

    def batched(p, seed, eng=eng):
        eng.reset()
        s = StepSampler(eng, sp)
        s.ban_eos = args.ban_eos
        s.extend(p, [Candidate()] * args.n, torch.Generator().manual_seed(seed), args.max_new_tokens, whole=True)
        return s.generated

    def sequential(p, seed):
        total = 0
        for i in range(args.n):
            eng.reset()
            s = StepSampler(eng, sp)
            s.ban_eos = args.ban_eos
            s.extend(p, [Candidate()], torch.Generator().manual_seed(seed * 1000 + i), args.max_new_tokens, whole=True)
            total += s.generated
        return total

    def hf(p, seed, n_seq, sample):
        torch.manual_seed(seed)
        x = torch.tensor([p], device=eng.device)
        kw = {"min_new_tokens": args.max_new_tokens} if args.ban_eos else {}
        if sample:
            kw.update(do_sample=True, temperature=args.temperature, top_p=0.95, top_k=0, num_return_sequences=n_seq)
        else:
            kw.update(do_sample=False)
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=args.max_new_tokens,
                             eos_token_id=eos, pad_token_id=eos[0], cache=DynamicCache(config=model.config), **kw)
        gen = out[:, len(p):]
        return int(sum(int((row != eos[0]).sum()) if not args.ban_eos else row.numel() for row in gen))

    methods = {"greedy-1": greedy, "hf-greedy-1": lambda p, s: hf(p, s, 1, False),
               f"batched-{args.n}": batched, f"hf-batched-{args.n}": lambda p, s: hf(p, s, args.n, True),
               f"sequential-{args.n}": sequential}
    if args.no_sequential:
        del methods[f"sequential-{args.n}"]
    if args.static:
        from benchmarks.bench_decoding import static_twin

        st = static_twin(eng, False, 4096)
        methods["greedy-1@static"] = lambda p, s: greedy(p, s, eng=st)
        methods[f"batched-{args.n}@static"] = lambda p, s: batched(p, s, eng=st)
        greedy(prompts[0][1], 0, eng=st)  # warm-up
    greedy(prompts[0][1], 0)  # warm-up
    hf(prompts[0][1], 0, 1, False)
    # each engine's own timer (a static twin shares the model, so both timers see its modules):
    # a method is timed by the engine it runs on; transformers' generate() by the default engine's hooks
    timer = {m: (st if m.endswith("@static") else eng) for m in methods}
    wall = {m: 0.0 for m in methods}
    inside = {m: 0.0 for m in methods}  # seconds inside the model (its engine's timer)
    toks = {m: 0 for m in methods}
    names = list(methods)
    for r in range(args.repeats):
        for i, (pid, p) in enumerate(prompts):
            k = (r * len(prompts) + i) % len(names)
            for m in names[k:] + names[:k]:  # the order rotates: no method always runs first
                m0, t0 = timer[m].model_s, time.perf_counter()
                toks[m] += methods[m](p, i)
                wall[m] += time.perf_counter() - t0
                inside[m] += timer[m].model_s - m0
            print(f"  pass {r + 1} {pid}: " + "  ".join(f"{m} {wall[m]:.1f}s" for m in methods), flush=True)
    base_name = min((m for m in ("greedy-1", "hf-greedy-1", "greedy-1@static") if m in wall),
                    key=lambda m: wall[m])  # all greedy: the same tokens
    base = wall[base_name]
    outside = {m: 1.0 - inside[m] / wall[m] for m in methods}  # sampling, bookkeeping, copies: not the weights
    print(f"\n{'method':<16} {'wall s':>8} {'tokens':>7} {'tok/s':>7} {'x faster greedy':>16} {'outside model':>14}")
    for m in methods:
        print(f"{m:<16} {wall[m]:8.1f} {toks[m]:7d} {toks[m] / wall[m]:7.1f} {wall[m] / base:16.2f} {outside[m]:13.1%}")
    b, hb = f"batched-{args.n}", f"hf-batched-{args.n}"
    print(f"\nbatched-{args.n} costs {wall[b] / base:.2f}x one greedy generation (the fastest greedy: {base_name}); "
          f"transformers' num_return_sequences={args.n}: {wall[hb] / base:.2f}x; ours / theirs {wall[b] / wall[hb]:.2f}"
          + (f" (naive sequential: {wall[f'sequential-{args.n}'] / base:.2f}x)" if not args.no_sequential else ""))
    if args.static:
        bs = f"batched-{args.n}@static"
        print(f"batched-{args.n}@static costs {wall[bs] / base:.2f}x; ours@static / theirs {wall[bs] / wall[hb]:.2f}")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({"machine": machine(), "args": vars(args), "wall_s": wall, "tokens": toks,
                                               "inside_model_s": inside, "outside_model_share": outside,
                                               "baseline": base_name, "x_faster_greedy": {m: wall[m] / base for m in methods},
                                               "ours_over_peer": wall[b] / wall[hb],
                                               **({"static_over_peer": wall[f"batched-{args.n}@static"] / wall[hb]}
                                                  if args.static else {})}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
