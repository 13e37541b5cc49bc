"""Train a small masked-diffusion LM and its autoregressive twin on ParallelBench Waiting Line tasks.

No diffusion LM ships offline, so this tool makes two that run on this CPU in minutes, from the
SAME data, tokenizer, architecture (Llama layout: 4 layers, width 128) and number of steps:

  <out>-mdlm   masked-diffusion LM (bidirectional attention; LLaDA's objective: mask each answer
               token with probability t ~ U(0, 1), cross-entropy on the masked tokens weighted 1/t;
               the answer region is a fixed canvas of --canvas tokens, padded with EOS as LLaDA's SFT
               pads, so the model also learns where the answer ends)
  <out>-ar     autoregressive twin (causal attention; next-token cross-entropy on answer + EOS)

Data: the project's own generator (tools/parallelbench_gen._sample, the paper's rules) with a
training seed (--seed, offset far from the paper's task seeds) and list lengths --min-n..--max-n;
every training list whose names equal an evaluation row's list (the shipped waiting_line files,
all ten tasks) is dropped, and the count is recorded. Prompts are the tasks' own templates
(task_config.yaml). The models' chat template renders the LAST user turn only (trained on the
tasks, they need no in-context example, and it would double the canvas), followed by 4 (NMAX - n)
<|fill|> tokens for a list of n names, so that the answer starts at one fixed distance from the
list (see CHAT_TEMPLATE): copying becomes one fixed-offset attention pattern per task.

Tokenizer: word level (every "First Last" name of the name file is one token; template words,
digits, list punctuation; a token keeps its leading space, decoding concatenates), a real `tokenizers` tokenizer saved with the model, so both models
load as ordinary transformers folders (AutoTokenizer / AutoModelForCausalLM).

    make dllm-models      # the shipped models: AR twin 2500 steps, the dLLM from it 2500 steps, then 2000 more each

Writes <out>-mdlm/, <out>-ar/ (config, model.safetensors, tokenizer) and <out>-train.json (data,
settings, loss curve, wall time, sha256 of both weight files). Deterministic on one machine type
(fixed seeds, fixed thread count); a rebuild elsewhere may differ in the last bits, which the
model configs' sha256 check reports.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import time
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[MASK]", "<|eos|>", "<|user|>", "<|assistant|>", "<|fill|>"]
# a "First Last" name is ONE token (so copying a name is one fixed-offset lookup, not two), then words
# (keeping their leading space), single punctuation marks, whitespace runs
PRETOKEN = r"[A-Z][A-Za-z]+ [A-Z][A-Za-z]+| ?[A-Za-z0-9]+| ?[^A-Za-z0-9\s]|\s+"
# The last user turn, then <|fill|> tokens so that a list of n <= NMAX names is followed by 4 (NMAX - n)
# fillers: the answer then starts at the same distance from the prompt's list whatever n is (a list
# of n names is 4n + 1 tokens), and copying item i is attention at one fixed offset per task, which a
# model this small learns in minutes (without it, it must learn ordinal matching: far slower).
CHAT_TEMPLATE = ("{% for m in messages %}{% if loop.last %}<|user|>{{ m['content'] }}"
                 "{% set n = m['content'].count('\", \"') + 1 %}"
                 "{% if n < NMAX %}{{ '<|fill|>' * (4 * (NMAX - n)) }}{% endif %}{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
TRAIN_SEED_OFFSET = 1_000_003  # training rngs: seed + this, far from the paper's task seeds (< 2^16)


def pieces(text: str) -> list[str]:
    return re.findall(PRETOKEN, text)


def build_tokenizer(words: list[str], nmax: int = 6):
    """A word-level transformers tokenizer over `words` (+ the special tokens)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(PRETOKEN), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]",
                                   eos_token="<|eos|>",
                                   additional_special_tokens=["<|user|>", "<|assistant|>", "<|fill|>"])
    fast.chat_template = CHAT_TEMPLATE.replace("NMAX", str(int(nmax)))
    return fast


def task_configs(data_dir: Path) -> dict:
    import yaml

    f = data_dir / "parallelbench" / "output" / "test" / "waiting_line" / "task_config.yaml"
    if not f.is_file():
        raise SystemExit(f"error: {f} not found (set HARNESS_DATA_DIR to the folder holding parallelbench/)")
    return {k.split("/")[-1]: v for k, v in yaml.safe_load(f.read_text()).items()}


def eval_lists(data_dir: Path) -> set:
    """Every input list of the shipped Waiting Line files (test rows and their ICL examples)."""
    out = set()
    for sub in ("waiting_line", "waiting_line_n15"):
        for f in sorted((data_dir / "parallelbench" / "output" / "test" / sub).glob("*.jsonl")):
            for line in f.read_text().splitlines():
                row = json.loads(line)
                for inp in [row["input"]] + [e["input"] for e in row["input"].get("icl_examples") or []]:
                    out.add(tuple(json.loads(inp["context"])))
    return out


def answer_text(sample: dict) -> str:
    a = sample["answer"]
    return a if isinstance(a, str) else a["example"]


def make_examples(tasks, n, seed, lo, hi, cfgs, banned, names):
    """n training samples (task, prompt text, answer text), round-robin over the tasks."""
    from tools.parallelbench_gen import _sample

    rngs = {t: random.Random(seed + TRAIN_SEED_OFFSET + i) for i, t in enumerate(tasks)}
    out, dropped = [], 0
    while len(out) < n:
        t = tasks[len(out) % len(tasks)]
        s = _sample(t, rngs[t], names, lo, hi)
        if tuple(json.loads(s["input"]["context"])) in banned:
            dropped += 1
            continue
        prompt = cfgs[t]["prompt"].format(**s["input"]).replace("\\n", "\n")
        out.append((t, prompt, answer_text(s)))
    return out, dropped


def vocabulary(cfgs, names) -> list[str]:
    words = set()
    for c in cfgs.values():
        words.update(pieces(c["prompt"].replace("\\n", "\n")))
    words.update(names)  # every "First Last" pair of the name file: one token each
    for d in range(100):
        words.update([str(d), " " + str(d)])
    for p in '[]",.:;!?()-\'':
        words.update([p, " " + p])
    words.update(["\n", "\n\n", " ", "\n\n\n"])
    words = {w for w in words if not re.fullmatch(r" ?\{\w+\}", w) and w not in ("{", " {", "}", " }")}
    return sorted(words)


def encode_all(tok, examples, canvas):
    eos = tok.eos_token_id
    rows = []
    for t, prompt, ans in examples:
        p = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
        p = list(p["input_ids"] if hasattr(p, "keys") else p)
        a = tok.encode(ans, add_special_tokens=False) + [eos]
        if len(a) > canvas:
            raise SystemExit(f"error: an answer of {len(a)} tokens does not fit a canvas of {canvas} "
                             f"(lower --max-n or raise --canvas)")
        rows.append((p, a))
    return rows


def batch_tensors(rows, canvas, pad, eos, diffusion):
    import torch

    B = len(rows)
    if diffusion:
        seqs = [p + a + [eos] * (canvas - len(a)) for p, a in rows]
    else:
        seqs = [p + a for p, a in rows]
    T = max(len(s) for s in seqs)
    ids = torch.full((B, T), pad, dtype=torch.long)
    real = torch.zeros(B, T, dtype=torch.bool)
    ans = torch.zeros(B, T, dtype=torch.bool)
    for i, ((p, a), s) in enumerate(zip(rows, seqs)):
        ids[i, T - len(s):] = torch.tensor(s)
        real[i, T - len(s):] = True
        ans[i, T - len(s) + len(p):] = True
    pos = (real.long().cumsum(1) - 1).clamp_min(0)
    return ids, real, ans, pos


def train(args) -> dict:
    import os

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.engines.diffusion import make_bidirectional
    from harness.provenance import file_sha256
    from tools.parallelbench_gen import load_vocab

    torch.set_num_threads(args.threads)
    data_dir = Path(os.environ.get("HARNESS_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
    cfgs = task_configs(data_dir)
    tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in cfgs]
    if unknown:
        raise SystemExit(f"error: unknown task(s) {unknown} (choose from {', '.join(sorted(cfgs))})")
    names = load_vocab(data_dir / "parallelbench" / "resources" / "first_last_names.yaml")
    t0 = time.time()
    tok = build_tokenizer(vocabulary(cfgs, names), args.max_n)
    examples, dropped = make_examples(tasks, args.examples, args.seed, args.min_n, args.max_n, cfgs,
                                      eval_lists(data_dir), names)
    rows = encode_all(tok, examples, args.canvas)
    unk = sum(x == tok.unk_token_id for p, a in rows for x in p + a)
    if unk:
        raise SystemExit(f"error: {unk} unknown tokens in the training data (the vocabulary misses words)")
    gen_s = time.time() - t0
    record = {"tool": "tools.train_dllm", "tasks": tasks, "examples": len(rows), "dropped_eval_lists": dropped,
              "list_lengths": [args.min_n, args.max_n], "seed": args.seed,
              "train_seed_offset": TRAIN_SEED_OFFSET, "canvas": args.canvas, "vocab": len(tok),
              "steps": args.steps, "batch": args.batch, "init_from_ar": args.init_from_ar, "lr": args.lr, "threads": args.threads,
              "arch": {"hidden_size": args.width, "num_hidden_layers": args.layers, "heads": args.heads,
                       "intermediate_size": args.width * 3}, "data_seconds": round(gen_s, 1), "models": {}}
    for kind in args.kinds.split(","):
        diffusion = kind == "mdlm"
        steps = args.mdlm_steps if diffusion and args.mdlm_steps else args.steps
        torch.manual_seed(args.seed)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=args.width, intermediate_size=args.width * 3,
                          num_hidden_layers=args.layers, num_attention_heads=args.heads,
                          num_key_value_heads=args.heads, max_position_embeddings=256, tie_word_embeddings=True,
                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
        shift = diffusion and args.init_from_ar
        if diffusion:
            cfg.mask_token_id = tok.mask_token_id
            cfg.dllm_logit_shift = bool(shift)
        model = LlamaForCausalLM(cfg)
        resume = Path(f"{args.out}-{kind}") / "model.safetensors"
        if args.resume and resume.exists():  # continue a finished run of this kind (same data, new schedule)
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(resume)), strict=False)
            record.setdefault("resumed", []).append({"kind": kind, "from_sha256": file_sha256(resume)})
        elif shift:  # Dream's recipe: start from the autoregressive twin, logits shifted one position
            ar = Path(f"{args.out}-ar") / "model.safetensors"
            if "ar" not in record["models"]:
                raise SystemExit("error: --init-from-ar needs --kinds ar,mdlm (the twin first)")
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(ar)), strict=False)
        if diffusion:
            make_bidirectional(model)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
        warm = max(steps // 20, 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, 0.5 * (1 + math.cos(
            math.pi * min(s / steps, 1.0)))))
        g = torch.Generator().manual_seed(args.seed)
        order = torch.randperm(len(rows), generator=g).tolist()
        curve, t1, i = [], time.time(), 0
        model.train()
        for step in range(steps):
            if i + args.batch > len(order):
                order, i = torch.randperm(len(rows), generator=g).tolist(), 0
            batch = [rows[j] for j in order[i:i + args.batch]]
            i += args.batch
            ids, real, ans, pos = batch_tensors(batch, args.canvas, tok.pad_token_id, tok.eos_token_id, diffusion)
            if diffusion:
                t = torch.rand(len(batch), 1, generator=g) * (1 - 1e-3) + 1e-3
                m = (torch.rand(ids.shape, generator=g) < t) & ans
                none = ~m.any(1)
                if none.any():  # at least one masked answer position per row
                    first = ans.float().argmax(1)
                    m[none, first[none]] = True
                x = ids.masked_fill(m, tok.mask_token_id)
                att = torch.zeros(ids.shape[0], 1, ids.shape[1], ids.shape[1])
                att.masked_fill_(~real[:, None, None, :], torch.finfo(torch.float32).min)
                h = model.model(input_ids=x, attention_mask=att, position_ids=pos).last_hidden_state
                tw = t.expand_as(ids)
                if shift:  # position i - 1 predicts token i
                    ms = m[:, 1:]
                    ce = torch.nn.functional.cross_entropy(model.lm_head(h[:, :-1][ms]), ids[:, 1:][ms],
                                                           reduction="none")
                    loss = (ce / tw[:, 1:][ms]).sum() / (len(batch) * args.canvas)
                else:
                    ce = torch.nn.functional.cross_entropy(model.lm_head(h[m]), ids[m], reduction="none")
                    loss = (ce / tw[m]).sum() / (len(batch) * args.canvas)
            else:
                h = model.model(input_ids=ids, attention_mask=real.long(), position_ids=pos).last_hidden_state
                tgt = ans[:, 1:]
                loss = torch.nn.functional.cross_entropy(model.lm_head(h[:, :-1][tgt]), ids[:, 1:][tgt])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % 50 == 0 or step == steps - 1:
                curve.append([step, round(loss.item(), 4)])
                print(f"[train_dllm] {kind} step {step}/{steps} loss {loss.item():.4f} "
                      f"({time.time() - t1:.0f} s)", flush=True)
        out = Path(f"{args.out}-{kind}")
        out.mkdir(parents=True, exist_ok=True)
        model.eval()
        model.save_pretrained(out)
        tok.save_pretrained(out)
        record["models"][kind] = {"folder": str(out), "steps": steps, "train_seconds": round(time.time() - t1, 1),
                                  "parameters": sum(p.numel() for p in model.parameters()),
                                  "sha256": file_sha256(out / "model.safetensors"), "loss_curve": curve}
    out_json = Path(f"{args.out}-train.json")
    if args.resume and out_json.exists():  # keep the record of the run this one continues
        old = json.loads(out_json.read_text())
        record["models"] = {**old.get("models", {}), **record["models"]}
        record["previous"] = old
    out_json.write_text(json.dumps(record, indent=1))
    return record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.train_dllm", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output prefix: <out>-mdlm/, <out>-ar/, <out>-train.json")
    p.add_argument("--tasks", default="copy,shuffle,replace_index,replace_random")
    p.add_argument("--kinds", default="mdlm,ar", help="which models: mdlm, ar (comma list)")
    p.add_argument("--examples", type=int, default=30000)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--mdlm-steps", type=int, default=0, help="steps of the dLLM (0 = --steps)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--canvas", type=int, default=32, help="answer canvas (the paper's 32-token budget)")
    p.add_argument("--min-n", type=int, default=2)
    p.add_argument("--max-n", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="start each kind from its existing <out>-<kind> weights "
                   "(more steps on a finished run; recorded)")
    p.add_argument("--init-from-ar", action="store_true", help="start the dLLM from the AR twin's weights with "
                   "logits shifted one position (Dream's recipe); needs --kinds ar,mdlm")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    rec = train(args)
    print(json.dumps({k: (v if k != "models" else {m: {kk: vv for kk, vv in d.items() if kk != "loss_curve"}
                                                   for m, d in v.items()}) for k, v in rec.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
