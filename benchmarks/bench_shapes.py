"""Forward-cost curve and per-step overhead on random-weight models of REAL shapes (#17 item 6).

    python benchmarks/bench_shapes.py --device cuda --dtype bfloat16 --json results/bench_shapes_h200.json
    python benchmarks/bench_shapes.py --device cpu --shapes tiny_llama,tiny_qwen2 --tokens 8   # smoke run

No weights are needed: each model is built from its configuration (SmolLM2-135M, Qwen2.5-1.5B,
Qwen2.5-7B: the shapes below, checked against the packed GGUFs' configs where we have them) with
random weights, directly on the device. Outputs are meaningless; the timings are not (every
forward is the real architecture at its real size). EOS is switched off, so every generation
runs to `--tokens`. All in one process, over the same weight tensors, methods in rotating order:

1. **Forward-cost curve**: one forward over n new tokens after a `--prompt`-token prefix (a causal
   chain and the same chain as a 4D tree mask), best of `--repeats`, as a multiple of the
   one-token forward, for the default engine and `engine=static`. Logits stay on the device
   (what tree / multi-draft methods pay per verification: speedup ~ MAT / cost(n)).
2. **Per-step overhead, ours vs transformers**: `--tokens` tokens greedy and sampled
   (T = 0.8, top-p 0.95) through our strategies (`Sampling.generate`: DecodingState, the
   sampler, the engine) on both engines, with logits copied to the CPU (the default) and kept on
   the device (`model.logits_on_device`, sampling with a seeded device generator); and
   `model.generate()` greedy and sampled. Per mode: ms per token, ms inside the model (the
   engine's ModelTimer, which synchronises the device at each model call's edges), ms outside.
3. **Batched sampling**: N (`--n`) samples in one batched forward per token (StepSampler, as
   best_of_n / self_consistency) on both engines and both logits placements, against
   `model.generate(do_sample=True, num_return_sequences=N)`.

On the CPU the same code runs (the tests run it on tiny shapes); the numbers the issue asks for
need a GPU. Writes the raw numbers with `--json`.
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

# (architecture, transformers config kwargs): the models' published shapes. SmolLM2-135M and
# the 1.5B match the configs our packs convert to (tests/test_bench_shapes.py checks them where
# the packs are installed); Qwen2.5-7B from its published config (3584 / 18944 / 28 layers,
# 28 query and 4 kv heads, 152,064 logits, untied head).
SHAPES = {
    "smollm2_135m": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                   num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                   tie_word_embeddings=True, rope_theta=100000.0, rms_norm_eps=1e-5,
                                   max_position_embeddings=8192)),
    "qwen25_15b": ("qwen2", dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                 num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                                 tie_word_embeddings=True, rope_theta=1e6, rms_norm_eps=1e-6,
                                 max_position_embeddings=32768)),
    "qwen25_7b": ("qwen2", dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                                tie_word_embeddings=False, rope_theta=1e6, rms_norm_eps=1e-6,
                                max_position_embeddings=32768)),
    # smoke-test sizes (tests): the same code paths in milliseconds
    "tiny_llama": ("llama", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=300, tie_word_embeddings=True,
                                 rope_theta=10000.0, rms_norm_eps=1e-5, max_position_embeddings=2048)),
    "tiny_qwen2": ("qwen2", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=5000, tie_word_embeddings=False,
                                 rope_theta=1e6, rms_norm_eps=1e-6, max_position_embeddings=2048)),
}
DEFAULT_SHAPES = "smollm2_135m,qwen25_15b,qwen25_7b"


def build(shape: str, dtype: torch.dtype, device: str):
    """A random-weight causal LM of `shape`, built directly on `device` (no CPU copy of a 7B)."""
    import transformers

    from harness.models import ByteTokenizer

    arch, kw = SHAPES[shape]
    conf_cls, model_cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
                           "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[arch]
    config = conf_cls(**kw, eos_token_id=None, bos_token_id=None, pad_token_id=None)
    torch.manual_seed(0)
    with torch.device(device):
        model = model_cls._from_config(config, dtype=dtype)
    return model.eval(), ByteTokenizer(config.vocab_size)


def engines(model, tok, shape: str, dtype: str, max_len: int):
    """The default engine and engine=static over the SAME weight tensors (EOS off: fixed lengths)."""
    from harness.engines import HFEngine
    from harness.engines.static import StaticEngine

    out = {"hf": HFEngine(model, tok, name=shape, dtype=dtype),
           "static": StaticEngine(model, tok, name=shape, dtype=dtype, max_len=max_len)}
    for e in out.values():
        e.eos_ids = frozenset()
    # the static engine times its own decoder loop (ModelTimer._enter / _leave around it): its module
    # hooks would only time the default engine's and generate()'s calls a second time
    out["static"]._timing.remove()
    return out


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def curve(eng, prompt: list[int], sizes: list[int], repeats: int, device) -> dict:
    """ms of a forward over n new tokens after the prompt (chain and tree mask), best of repeats."""
    eng.logits_on_device(True)
    eng.reset()
    with torch.inference_mode():
        eng.forward(prompt, last_only=True)
    base = eng.length

    def one(n: int, tree: bool) -> float:
        ids = [(7 * i + 11) % eng.vocab_size for i in range(n)]
        mask = torch.tril(torch.ones(n, n, dtype=torch.bool)) if tree else None
        best = float("inf")
        for r in range(repeats + 1):
            sync(device)
            t0 = time.perf_counter()
            if tree:
                eng.forward(ids, tree=mask, depths=torch.arange(n))
            else:
                eng.forward(ids)
            sync(device)
            dt = time.perf_counter() - t0
            eng.truncate_to(base)
            if r:  # the first is a warm-up
                best = min(best, dt)
        return best * 1000

    ms1 = one(1, False)
    rows = [{"n": n, "chain_ms": one(n, False), "tree_ms": one(n, True)} for n in sizes]
    for r in rows:
        r["chain_x"], r["tree_x"] = r["chain_ms"] / ms1, r["tree_ms"] / ms1
    eng.logits_on_device(False)
    return {"one_token_ms": ms1, "prefix": base, "sizes": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"comma-separated, of {', '.join(SHAPES)}")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens (random ids)")
    ap.add_argument("--tokens", type=int, default=64, help="new tokens per generation")
    ap.add_argument("--sizes", default="1,2,4,8,16,32,64,128")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of every mode (order rotating)")
    ap.add_argument("--n", type=int, default=8, help="batched sampling: samples per prompt")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    bad = [s for s in shapes if s not in SHAPES]
    if bad:
        ap.error(f"unknown shape(s) {', '.join(bad)}; known: {', '.join(SHAPES)}")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: this torch ({torch.__version__}) sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers
    from transformers import DynamicCache

    from harness.runner import make_generator
    from strategies.core.base import SamplingParams
    from strategies.core.search import Candidate, StepSampler
    from strategies.sampling import Sampling

    dev = torch.device(args.device)
    info = {"device": str(dev), "torch": torch.__version__, "transformers": transformers.__version__,
            "dtype": args.dtype, "prompt": args.prompt, "tokens": args.tokens, "n": args.n,
            "repeats": args.repeats, "threads": torch.get_num_threads()}
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    print(json.dumps(info), flush=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    sampled = SamplingParams(temperature=0.8, top_p=0.95)
    report = {"info": info, "shapes": {}}
    for shape in shapes:
        t0 = time.perf_counter()
        model, tok = build(shape, getattr(torch, args.dtype), args.device)
        sync(dev)
        built_s = time.perf_counter() - t0
        engs = engines(model, tok, shape, args.dtype, max_len=args.prompt + args.tokens + max(sizes) + 16)
        g = torch.Generator().manual_seed(1)
        prompt = torch.randint(300, model.config.vocab_size, (args.prompt,), generator=g).tolist() \
            if model.config.vocab_size > 600 else torch.randint(0, model.config.vocab_size, (args.prompt,), generator=g).tolist()
        params = sum(p.numel() for p in model.parameters())
        print(f"\n{shape}: {params / 1e6:.0f}M parameters ({args.dtype}, {dev}), built in {built_s:.1f} s", flush=True)
        res = {"params": params, "built_s": built_s, "curve": {}, "steps": {}, "batched": {}}

        for name, eng in engs.items():
            res["curve"][name] = c = curve(eng, prompt, sizes, args.repeats, dev)
            print(f"  curve {name:6s}: 1 token {c['one_token_ms']:.2f} ms; "
                  + " ".join(f"n={r['n']}: {r['chain_x']:.2f}/{r['tree_x']:.2f}x" for r in c["sizes"]), flush=True)

        def ours(eng_name, on_device, sp, batched=False):
            eng = engs[eng_name]

            def go(seed):
                eng.logits_on_device(on_device)
                rng = make_generator(str(eng.logits_device), seed)  # the runner's: on the logits' device
                eng.reset()
                if batched:
                    s = StepSampler(eng, sp)
                    s.ban_eos = True
                    s.extend(prompt, [Candidate()] * args.n, rng, args.tokens, whole=True)
                    n = s.generated
                else:
                    toks = Sampling(sp).generate(eng, prompt, args.tokens, rng).tokens
                    if sp.greedy:
                        greedy_out[(eng_name, on_device)] = toks
                    n = len(toks)
                eng.logits_on_device(False)
                return n
            return go, eng

        def peer(sp, n_seq):
            model_ = model

            def go(seed):
                torch.manual_seed(seed)
                x = torch.tensor([prompt], device=dev)
                kw = dict(do_sample=not sp.greedy)
                if not sp.greedy:
                    kw.update(temperature=sp.temperature, top_p=sp.top_p, top_k=0, num_return_sequences=n_seq)
                out = model_.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=args.tokens,
                                      min_new_tokens=args.tokens, pad_token_id=0,
                                      cache=DynamicCache(config=model_.config), **kw)
                return int(out[:, len(prompt):].numel())
            return go, engs["hf"]  # the hf engine's ModelTimer hooks sit on the model: they time generate() too

        greedy_out = {}
        steps = {}
        for sp_name, sp in (("greedy", SamplingParams()), ("sampled", sampled)):
            for e in ("hf", "static"):
                for on in (False, True):
                    steps[f"{sp_name}/{e}/logits-{'device' if on else 'cpu'}"] = ours(e, on, sp)
            steps[f"{sp_name}/transformers-generate"] = peer(sp, 1)
        batched = {f"N={args.n}/{e}/logits-{'device' if on else 'cpu'}": ours(e, on, sampled, batched=True)
                   for e in ("hf", "static") for on in (False, True)}
        batched[f"N={args.n}/transformers-generate"] = peer(sampled, args.n)

        for group, modes in (("steps", steps), ("batched", batched)):
            names = list(modes)
            acc = {m: {"wall_s": 0.0, "model_s": 0.0, "tokens": 0, "steps": 0} for m in names}
            for go, _ in modes.values():  # warm-up (kernels, allocator, generate()'s setup)
                go(0)
            for r in range(args.repeats):
                for m in names[r % len(names):] + names[:r % len(names)]:
                    go, timer = modes[m]
                    m0 = timer.model_s
                    sync(dev)
                    t0 = time.perf_counter()
                    n = go(100 + r)
                    sync(dev)
                    acc[m]["wall_s"] += time.perf_counter() - t0
                    acc[m]["model_s"] += timer.model_s - m0
                    acc[m]["tokens"] += n
                    acc[m]["steps"] += args.tokens
            for m, a in acc.items():
                a["ms_per_step"] = 1000 * a["wall_s"] / a["steps"]
                a["model_ms_per_step"] = 1000 * a["model_s"] / a["steps"]
                a["outside_ms_per_step"] = a["ms_per_step"] - a["model_ms_per_step"]
                a["outside_share"] = 1 - a["model_s"] / a["wall_s"] if a["wall_s"] else 0.0
                print(f"  {group:7s} {m:38s} {a['ms_per_step']:8.2f} ms/step  inside {a['model_ms_per_step']:8.2f}  "
                      f"outside {a['outside_ms_per_step']:6.2f} ({100 * a['outside_share']:.1f}%)  "
                      f"{a['tokens']} tokens", flush=True)
            res[group] = acc
        ref = greedy_out[("hf", False)]
        res["greedy_identical"] = {f"{e}/logits-{'device' if on else 'cpu'}": toks == ref
                                   for (e, on), toks in greedy_out.items()}
        print(f"  greedy tokens identical to the default engine's with CPU logits: {res['greedy_identical']}", flush=True)
        report["shapes"][shape] = res
        del engs, model
        if dev.type == "cuda":
            res["max_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2 ** 30
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
