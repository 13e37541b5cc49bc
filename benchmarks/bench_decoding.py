"""Our decoding strategies vs transformers' own implementations, side by side in one process.

Pairs measured on the same prompts, same weights (the same `engine.model` object), same dtype:

    greedy       vs  hf-greedy    model.generate(do_sample=False)
    speculative  vs  hf-assisted  model.generate(assistant_model=draft.model), fixed K drafts
    pld          vs  hf-pld       model.generate(prompt_lookup_num_tokens=K, max_matching_ngram_size=n)

Methods run interleaved per prompt (after one short warm-up each), their order rotating with
every prompt and repeat (before 2026-12-03 it was fixed: the first method always ran right after
the previous prompt's last), so machine drift and order effects hit all of them alike.
Columns, per method over all prompts and repeats:

    tok/s        sum of new tokens / sum of wall seconds (prefill included, prompt not counted)
    x greedy     tok/s divided by our first plain greedy method's (`greedy`, or `greedy@static`)
    x hf-greedy  tok/s divided by transformers' greedy tok/s
    x fastest    tok/s divided by the FASTEST plain greedy run here (ours on any engine, or
                 transformers'): the baseline every speedup target of issue #17 is stated against
    MAT          new tokens / target-model forwards (counted by a hook on the target module;
                 plain decoding is 1.0, a speculative method is higher when drafts are accepted).
                 Both ours and transformers fold the prefill into the first verification
                 (prompt + drafts in one forward). hf-pld takes the EARLIEST n-gram match, ours the latest, so
                 their drafts (and MATs) may differ while both stay lossless.
    identical    runs (prompts x repeats) token-identical to our greedy (temperature 0 is lossless
                 for every method here, so anything below n/n is printed as a mismatch below the
                 table with the first differing position; float ties in batched verification can
                 cause these, they are not hidden)
    tie-cons.    runs whose every token is the target's argmax or within --tie-gap nats of it, judged
                 teacher-forced by ONE extra target forward over prompt + output (harness/tiecheck.py,
                 outside the timing). In bf16, near-ties flip between a batched and a one-token
                 forward, so "identical" can fall below n/n for a correct method; tie-consistency
                 still holds, while a real bug (a wrong position or cache slot) fails it
    target s / draft s / other s
                 wall seconds inside the target model's forwards, inside the draft model's, and
                 everything else (sampling, verification, cache bookkeeping, Python): where a
                 method's time goes (hooks on the two modules); draft fw = draft forwards

Engines: a method name ending in `@static` (e.g. `greedy@static`, `pld[k=8]@static`) runs our
strategy on `engine=static` (harness/engines/static.py: preallocated KV, our own forward) built
over the SAME weight tensors as the default engine; `@compiled` runs it on a second static engine
whose decoder stack is torch.compiled (the warm-up includes the compilation; its seconds are
printed as "warm-up s" and stored in the JSON). Target forwards and seconds of both come from the
engines' own counters (they call no transformers module the hooks could see).

Run:  python benchmarks/bench_decoding.py [--model smollm2_135m] [--prompts 6] [--max-new-tokens 128]

On a CPU shared with other tenants, --threads 2 can be slowed many-fold by thread-pool contention
(the printed cpu pressure shows it); --threads 1 gives steadier numbers there.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from harness.tiecheck import tie_check  # noqa: E402
DATA = Path(os.environ.get("HARNESS_DATA_DIR", ROOT.parent / "shared" / "data"))
HF_METHODS = ["hf-greedy", "hf-assisted", "hf-pld"]
# ours: any conf/strategy/<name>.yaml (its YAML defaults; --k-spec / --k-pld set k of speculative / pld)
OURS = sorted(p.stem for p in (ROOT / "conf" / "strategy").glob("*.yaml"))
METHODS = ["greedy", "hf-greedy", "speculative", "hf-assisted", "pld", "hf-pld"]  # the default set


def split_variant(method: str) -> tuple[str, list[str]]:
    """'token_recycling[template=cpu32;reset=never]' -> ('token_recycling', ['strategy.template=cpu32', ...]);
    an '@static' / '@compiled' suffix (the engine) is ignored here."""
    m = re.fullmatch(r"([\w-]+)(?:\[(.*)\])?(?:@static|@compiled)?", method)
    if not m:
        raise ValueError(f"bad method spec {method!r}; expected name or name[key=value;key=value]")
    return m.group(1), [f"strategy.{kv.strip()}" for kv in (m.group(2) or "").split(";") if kv.strip()]


def split_methods(text: str) -> list[str]:
    """Comma list whose items may carry [key=value;...] overrides (commas inside brackets kept)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [m for m in out + [cur.strip()] if m]


def load_strategy(method: str, model: str):
    """A strategy built from its YAML exactly as `python -m harness strategy=<name> strategy.key=value`
    would build it; `method` is `name` or `name[key=value;key=value]`."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    name, overrides = split_variant(method)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"strategy={name}", f"model={model}", *overrides])
    return instantiate(cfg.strategy, _convert_="all")


def load_engine(name: str, dtype: str, truncate_layers: int | None = None):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")
    cfg.dtype = dtype
    if truncate_layers is not None:
        cfg.truncate_layers = truncate_layers
        cfg.name = f"{cfg.name}-L{truncate_layers}"
    return instantiate(cfg, _convert_="all").load()


def build_prompts(engine, n: int, skip: int = 0) -> list[tuple[str, list[int]]]:
    """round(n/3) HumanEval prompts, the rest GSM8K (default 6 = 4 GSM8K + 2 HumanEval), after
    the prompts that `--prompts skip` would take (so `--prompts 6 --skip 6` is a disjoint set:
    GSM8K test rows 4..7 and HumanEval/2..3, prompts nothing was tuned on)."""
    from tasks.gsm8k import GSM8K

    n_he, skip_he = round(n / 3), round(skip / 3)
    skip_g = skip - skip_he
    task = GSM8K(path=str(DATA / "gsm8k" / "test.jsonl"))
    out = [(ex["id"], engine.render(task.prompt(ex))) for ex in task.load()[skip_g: skip_g + n - n_he]]
    with gzip.open(DATA / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()][skip_he: skip_he + n_he]
    for r in rows:
        text = f"Complete the following Python function:\n```python\n{r['prompt']}```"
        out.append((r["task_id"], engine.render(text)))
    return out


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import transformers

    try:  # share of time runnable tasks waited for a CPU (other tenants); high = noisy timings
        load = "cpu pressure avg60 " + open("/proc/pressure/cpu").readline().split()[2].split("=")[1] + "%, "
    except (OSError, IndexError):
        load = ""
    return (f"cpu: {cpu} ({os.cpu_count()} visible cores), {load}torch threads: {torch.get_num_threads()}, "
            f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}")


class ForwardCounter:
    """Counts calls of a module (forward hooks), i.e. target forwards for any implementation, and the
    wall time spent inside them (so a method's time splits into target, draft and everything else)."""

    def __init__(self, module):
        self.n, self.seconds, self._t0 = 0, 0.0, 0.0
        module.register_forward_pre_hook(self._pre)
        module.register_forward_hook(self._post)

    def _pre(self, module, args):
        self.n += 1
        self._t0 = time.perf_counter()

    def _post(self, module, args, out):
        self.seconds += time.perf_counter() - self._t0


def engine_of(method: str) -> str | None:
    return next((e for e in ("static", "compiled") if method.endswith("@" + e)), None)


def strip_engine(method: str) -> str:
    return method.removesuffix("@static").removesuffix("@compiled")


def static_twin(engine, compile_: bool, max_len: int):
    """engine=static over the same weight tensors as `engine` (no copy)."""
    from harness.engines.static import StaticEngine

    return StaticEngine(engine.model, engine.tokenizer, engine.name + "@static", engine.dtype, max_len=max_len,
                        compile=compile_)


def make_runners(args, target, draft, statics=None):
    """method name -> fn(prompt_ids, max_new) returning the new token ids."""
    from transformers import DynamicCache

    rng = torch.Generator().manual_seed(0)
    model, eos = target.model, sorted(target.eos_ids)
    ours = {}
    for name in (m for m in args.methods if m not in HF_METHODS):
        base = split_variant(name)[0]
        strategy = load_strategy(strip_engine(name), args.model)
        if base == "speculative" and "[" not in name:
            strategy.k = args.k_spec
        if base == "pld" and "[" not in name:
            strategy.k, strategy.max_ngram = args.k_pld, args.pld_ngram
        t, d = statics[engine_of(name)] if engine_of(name) else (target, draft)
        ours[name] = (t, strategy, d if strategy.draft is not None else None)
    if draft is not None:
        # transformers reads the draft length from the ASSISTANT's generation_config; "constant" keeps
        # it fixed and threshold 0 disables the confidence early stop (default 0.4, adaptive).
        gc = draft.model.generation_config
        gc.num_assistant_tokens_schedule = "constant"
        gc.num_assistant_tokens = args.k_spec
        if hasattr(gc, "assistant_confidence_threshold"):
            gc.assistant_confidence_threshold = 0.0
    hf_kw = {"hf-greedy": {}, "hf-assisted": {"assistant_model": draft.model if draft else None,
                                               "num_assistant_tokens": args.k_spec},
             "hf-pld": {"prompt_lookup_num_tokens": args.k_pld, "max_matching_ngram_size": args.pld_ngram}}

    def run_ours(name):
        t, strategy, d = ours[name]
        return lambda ids, n: strategy.generate(t, ids, n, rng, draft=d).tokens

    def run_hf(name):
        def go(ids, n):
            x = torch.tensor([ids], device=target.device)
            # the cache keyword is `cache` in transformers 5.x (`past_key_values` is deprecated)
            out = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n,
                                 eos_token_id=eos, pad_token_id=eos[0], cache=DynamicCache(config=model.config),
                                 **hf_kw[name])
            return out[0, len(ids):].tolist()
        return go

    return {m: (run_hf(m) if m.startswith("hf-") else run_ours(m)) for m in args.methods}


def first_diff(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2_135m", help="conf/model/<name>.yaml")
    ap.add_argument("--draft", default=None, help="conf/model/<name>.yaml of the draft (default: self-draft)")
    ap.add_argument("--draft-layers", type=int, default=8, help="layers of the self-draft (when no --draft)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--prompts", type=int, default=6, help="number of prompts: 2/3 GSM8K, 1/3 HumanEval")
    ap.add_argument("--skip", type=int, default=0,
                    help="skip the prompts that --prompts SKIP would use (--skip 6: 6 prompts disjoint from the default)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--k-spec", type=int, default=4, help="draft tokens per step (speculative, hf-assisted)")
    ap.add_argument("--k-pld", type=int, default=10, help="lookup tokens per step (pld, hf-pld)")
    ap.add_argument("--pld-ngram", type=int, default=2, help="max n-gram matched by pld and hf-pld")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma list of our strategies (" + ",".join(OURS) + "), each optionally with YAML "
                         "overrides as name[key=value;key=value], and " + ",".join(HF_METHODS))
    ap.add_argument("--tie-gap", type=float, default=0.3,
                    help="tie-consistent: every token within this many nats of the target's best (teacher-forced)")
    ap.add_argument("--json", default=None, metavar="OUT", help="write the numbers to this file")
    ap.add_argument("--max-len", type=int, default=4096, help="KV slots of the @static / @compiled engines")
    args = ap.parse_args(argv)
    args.methods = split_methods(args.methods)
    if bad := [m for m in args.methods if split_variant(m)[0] not in OURS + HF_METHODS]:
        ap.error(f"unknown method(s) {bad}; choose from {OURS + HF_METHODS}")

    torch.set_num_threads(args.threads)
    info = machine()
    print(info, flush=True)
    target = load_engine(args.model, args.dtype)
    draft = None
    if "hf-assisted" in args.methods or any(load_strategy(strip_engine(m), args.model).draft is not None
                                             for m in args.methods if m not in HF_METHODS):
        draft = load_engine(args.draft, args.dtype) if args.draft else \
            load_engine(args.model, args.dtype, truncate_layers=args.draft_layers)
    print(f"target: {target.name} ({target.num_layers} layers, {args.dtype}); "
          f"draft: {draft.name + f' ({draft.num_layers} layers)' if draft else '-'}; "
          f"k_spec={args.k_spec} k_pld={args.k_pld} pld_ngram={args.pld_ngram} "
          f"max_new_tokens={args.max_new_tokens} repeats={args.repeats}", flush=True)
    prompts = build_prompts(target, args.prompts, args.skip)
    statics = {}
    for kind in {engine_of(m) for m in args.methods} - {None}:
        statics[kind] = (static_twin(target, kind == "compiled", args.max_len),
                         static_twin(draft, kind == "compiled", args.max_len) if draft is not None else None)
    runners = make_runners(args, target, draft, statics)
    counter = ForwardCounter(target.model)
    dcounter = ForwardCounter(draft.model) if draft is not None else None

    def counts(m):
        """(target forwards, target s, draft forwards, draft s) so far, for method m's engines."""
        if engine_of(m):
            st, sd = statics[engine_of(m)]
            return st.forwards, st.model_s, (sd.forwards if sd else 0), (sd.model_s if sd else 0.0)
        return counter.n, counter.seconds, (dcounter.n if dcounter else 0), (dcounter.seconds if dcounter else 0.0)

    # identity and "x greedy" are judged against our first plain greedy method in the list
    greedy_ref = next((m for m in args.methods if strip_engine(m) == "greedy"), None)
    compile_s = {}
    with torch.inference_mode():
        for m in args.methods:  # warm-up: one short generation each (includes any compilation)
            t0 = time.perf_counter()
            runners[m](prompts[0][1], 4)
            compile_s[m] = time.perf_counter() - t0
        if "compiled" in statics:
            print("warm-up s (compilation included for @compiled): " +
                  ", ".join(f"{m} {s:.1f}" for m, s in compile_s.items()), flush=True)
        tot = {m: {"tokens": 0, "seconds": 0.0, "forwards": 0, "identical": 0, "tie_consistent": 0, "runs": 0,
                   "target_s": 0.0, "draft_s": 0.0, "draft_forwards": 0} for m in args.methods}
        tie_bad = []
        per_prompt, mismatches = [], []
        for pi, (pid, ids) in enumerate(prompts):
            rows = []
            for rep in range(args.repeats):
                k = (pi * args.repeats + rep) % len(args.methods)  # the order rotates: no method always first
                for m in args.methods[k:] + args.methods[:k]:
                    f0, s0, d0, ds0 = counts(m)
                    t0 = time.perf_counter()
                    toks = runners[m](ids, args.max_new_tokens)
                    dt = time.perf_counter() - t0
                    f1, s1, d1, ds1 = counts(m)
                    fw = f1 - f0
                    t = tot[m]
                    t["target_s"] += s1 - s0
                    t["draft_s"] += ds1 - ds0
                    t["draft_forwards"] += d1 - d0
                    t["tokens"], t["seconds"], t["forwards"], t["runs"] = (
                        t["tokens"] + len(toks), t["seconds"] + dt, t["forwards"] + fw, t["runs"] + 1)
                    tc = tie_check(target, ids, toks, args.tie_gap)  # outside the timing
                    t["tie_consistent"] += tc["tie_consistent"]
                    if not tc["tie_consistent"]:
                        tie_bad.append(f"{m:12s} {pid} repeat {rep}: token {tc['first_violation']} is "
                                       f"{tc['max_deficit']:.3f} nats below the target's best (gap {args.tie_gap})")
                    rows.append({"prompt": pid, "repeat": rep, "method": m, "prompt_len": len(ids),
                                 "new_tokens": len(toks), "seconds": dt, "target_forwards": fw, "tokens": toks,
                                 "tie_consistent": tc["tie_consistent"], "max_deficit": tc["max_deficit"],
                                 "non_argmax": tc["non_argmax"]})
            ref = next((r["tokens"] for r in rows if r["method"] == greedy_ref), None)
            for row in rows if ref is not None else []:  # every run vs our greedy's first run
                row["identical"] = same = row["tokens"] == ref
                tot[row["method"]]["identical"] += same
                if not same:
                    i, toks = first_diff(ref, row["tokens"]), row["tokens"]
                    mismatches.append(
                        f"{row['method']:12s} {pid} repeat {row['repeat']}: first difference at new token {i} "
                        f"(greedy {ref[i] if i < len(ref) else 'END'} {target.decode(ref[i:i + 1])!r} vs "
                        f"{toks[i] if i < len(toks) else 'END'} {target.decode(toks[i:i + 1])!r}); "
                        f"lengths {len(ref)} vs {len(toks)}")
            per_prompt += rows
            print(f"  done {pid} ({len(ids)} prompt tokens)", flush=True)

    tps = {m: t["tokens"] / t["seconds"] if t["seconds"] else 0.0 for m, t in tot.items()}
    base, hf_base = tps.get(greedy_ref), tps.get("hf-greedy")
    plain = [m for m in tot if strip_engine(m) in ("greedy", "hf-greedy")]
    fastest = max(plain, key=tps.get) if plain else None  # every speedup target is against the faster greedy
    w = max(12, *(len(m) for m in tot))
    print(f"\nx greedy: vs {greedy_ref or '-'}; x fastest: vs the fastest plain greedy run here ({fastest or '-'})")
    print(f"\n{'method':{w}s} {'tokens':>7s} {'seconds':>8s} {'tok/s':>8s} {'x greedy':>9s} {'x hf-greedy':>11s} {'x fastest':>9s} "
          f"{'MAT':>6s} {'identical':>10s} {'tie-cons.':>10s} {'target s':>9s} {'draft s':>8s} {'other s':>8s} {'draft fw':>8s}")
    for m, t in tot.items():
        ratio = f"{tps[m] / base:.2f}" if base else "-"
        hf_ratio = f"{tps[m] / hf_base:.2f}" if hf_base else "-"
        fast_ratio = f"{tps[m] / tps[fastest]:.2f}" if fastest else "-"
        mat = t["tokens"] / t["forwards"] if t["forwards"] else 0.0
        ident = f"{t['identical']}/{t['runs']}" if greedy_ref else "-"
        tie = f"{t['tie_consistent']}/{t['runs']}"
        print(f"{m:{w}s} {t['tokens']:7d} {t['seconds']:8.2f} {tps[m]:8.2f} {ratio:>9s} {hf_ratio:>11s} {fast_ratio:>9s} "
              f"{mat:6.2f} {ident:>10s} {tie:>10s} {t['target_s']:9.2f} {t['draft_s']:8.2f} "
              f"{t['seconds'] - t['target_s'] - t['draft_s']:8.2f} {t['draft_forwards']:8d}")
    print(f"\nmismatches vs {greedy_ref}:" if mismatches else f"\nall outputs token-identical to {greedy_ref}"
          if greedy_ref else "\n(no greedy run: identity not checked)")
    for line in mismatches:
        print("  " + line)
    print(f"\nnot tie-consistent (gap {args.tie_gap} nats):" if tie_bad else
          f"\nevery output tie-consistent (gap {args.tie_gap} nats, teacher-forced)")
    for line in tie_bad:
        print("  " + line)

    if args.json:
        out = {"machine": info, "args": vars(args), "warmup_s": compile_s, "greedy_reference": greedy_ref,
               "fastest_greedy": fastest, "totals": {m: {**t, "tok_per_s": tps[m]} for m, t in tot.items()},
               "mismatches": mismatches, "not_tie_consistent": tie_bad, "runs": per_prompt}
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
