"""Measurements for the two analysis papers of speculative decoding (#15), written as JSON for
the notebooks (notebooks/information_surplus.ipynb, notebooks/scaling_laws.ipynb).

    python -m tools.spec_analysis surplus --model smollm2_135m --examples 240 \
        --out results/published/information_surplus_smollm2.json
    python -m tools.spec_analysis scaling --model qwen25_coder_15b --draft qwen25_coder_05b \
        --dtype bfloat16 --prompts 4 --tokens 96 --out results/published/scaling_nested_qwen15.json

surplus (the Markov-categorical view's "information surplus"): the final hidden state h_t of a
packed model, over GSM8K TRAIN text, is fed to linear probes trained to predict the token at
t + d (d = 1..D; a Medusa-style head per distance), restricted to the K most frequent tokens of
the training part (positions whose token is outside them are left out of training and scoring).
Held-out top-1 accuracy by distance is set beside (a) what the current token alone predicts (the
best t -> t + d table from the same training positions) — the surplus is the difference — and (b)
the chain acceptance of those probes used as a draft: the share of positions where heads 1..j
are all right, i.e. the probability a j-token Medusa draft is accepted in full by greedy
verification (the target's own next token, d = 1, is the LM head).

scaling (scaling laws for speculative decoding): acceptance of nested drafts of ONE family, the
first k layers of the target (+ its final norm and LM head; exactly a truncated self-draft, read
from one teacher-forced forward's hidden states), and of the separate smaller model of the
pair, on the target's own greedy continuations of GSM8K test prompts. alpha = share of positions
where the draft's top-1 equals the target's top-1 (greedy acceptance of a one-token draft).
Capacity = the draft's non-embedding parameters. The notebook fits alpha against log capacity.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

from tools.train_acceptance_head import commit, load_engine, load_prompts

ROOT = Path(__file__).resolve().parents[1]


def gsm8k_train_texts(n: int) -> list[str]:
    import os

    p = Path(os.environ.get("HARNESS_DATA_DIR", ROOT.parent / "shared" / "data")) / "gsm8k" / "train.jsonl"
    if not p.exists():
        raise SystemExit(f"error: {p} not found (set HARNESS_DATA_DIR)")
    rows = [json.loads(line) for line in p.read_text().splitlines()[:n]]
    return [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows]


@torch.no_grad()
def hidden_and_tokens(engine, texts: list[str], max_len: int = 256):
    model, tok = engine.model, engine.tokenizer
    feats, ids_all, lm_top1 = [], [], []
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)[:max_len]
        x = torch.tensor([ids])
        out = model(input_ids=x, output_hidden_states=True)
        h = out.hidden_states[-1][0].float()  # after the final norm (what the LM head reads)
        feats.append(h)
        ids_all.append(torch.tensor(ids))
        lm_top1.append(out.logits[0].argmax(-1))
    return feats, ids_all, lm_top1


def train_probe(x, y, classes: int, steps: int, lr: float = 0.01, wd: float = 1e-4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.nn.Linear(x.shape[1], classes)
    with torch.no_grad():
        w.weight.normal_(0, 0.01, generator=g)
        w.bias.zero_()
    opt = torch.optim.Adam(w.parameters(), lr=lr, weight_decay=wd)
    mu, sd = x.mean(0), x.std(0) + 1e-5
    xs = (x - mu) / sd
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(w(xs), y)
        loss.backward()
        opt.step()
    def predict(z):
        with torch.no_grad():
            return w((z - mu) / sd).argmax(-1)

    return predict, float(loss.detach())


def surplus(a) -> dict:
    torch.manual_seed(0)
    engine = load_engine(a.model, [], "float32")
    texts = gsm8k_train_texts(a.examples)
    t0 = time.time()
    feats, ids, lm_top1 = hidden_and_tokens(engine, texts)
    n_train = int(len(texts) * 0.8)
    freq = Counter(int(t) for s in ids[:n_train] for t in s)
    top = [t for t, _ in freq.most_common(a.top_k)]
    index = {t: i for i, t in enumerate(top)}
    cover = sum(freq[t] for t in top) / sum(freq.values())

    def pairs(seqs, d):
        xs, ys, cur, keys = [], [], [], []
        for si, (h, s) in enumerate(seqs):
            for t in range(len(s) - d):
                tgt = int(s[t + d])
                if tgt in index:
                    xs.append(h[t])
                    ys.append(index[tgt])
                    cur.append(int(s[t]))
                    keys.append((si, t))
        return torch.stack(xs), torch.tensor(ys), cur, keys

    train = list(zip(feats[:n_train], ids[:n_train]))
    test = list(zip(feats[n_train:], ids[n_train:]))
    by_d, correct_at = [], {}
    for d in range(1, a.distances + 1):
        xtr, ytr, ctr, _ = pairs(train, d)
        xte, yte, cte, kte = pairs(test, d)
        predict, loss = train_probe(xtr, ytr, len(top), a.steps)
        pred = predict(xte)
        acc = float((pred == yte).float().mean())
        table = defaultdict(Counter)  # the current token alone: best t -> t + d map from the training positions
        for c, y in zip(ctr, ytr.tolist()):
            table[c][y] += 1
        major = Counter(ytr.tolist()).most_common(1)[0][0]
        tab_pred = torch.tensor([table[c].most_common(1)[0][0] if c in table else major for c in cte])
        tab_acc = float((tab_pred == yte).float().mean())
        line = {"distance": d, "train_positions": len(ytr), "test_positions": len(yte), "probe_acc": acc,
                "current_token_acc": tab_acc, "surplus": acc - tab_acc, "majority_acc": float((yte == major).float().mean()),
                "final_train_loss": loss}
        if d == 1:  # the model's own LM head on the same positions (its top-1 over the full vocabulary)
            lm = [int(lm_top1[n_train + si][t]) == top[y] for (si, t), y in zip(kte, yte.tolist())]
            line["lm_head_acc"] = sum(lm) / len(lm)
        by_d.append(line)
        correct_at[d] = {k: bool(p == y) for k, p, y in zip(kte, pred.tolist(), yte.tolist())}
        print(f"[surplus] d={d}: probe {acc:.3f}  current-token table {tab_acc:.3f}  ({len(yte)} held-out positions)")
    chain = []
    keys = set(correct_at[1])
    for j in range(1, a.distances + 1):
        keys = {k for k in keys if k in correct_at[j]}
        ok = [all(correct_at[i][k] for i in range(1, j + 1)) for k in keys]
        chain.append({"depth": j, "positions": len(ok), "accepted_all": sum(ok) / max(len(ok), 1)})
    return {"analysis": "information_surplus", "model": a.model, "corpus": f"GSM8K train, first {a.examples} examples "
            f"(80/20 split by example)", "top_k": a.top_k, "top_k_token_coverage": cover, "probe_steps": a.steps,
            "by_distance": by_d, "chain_acceptance": chain, "seconds": round(time.time() - t0, 1),
            "git_sha": commit(), "command": a.command}


def _layers(model):
    return model.model.layers


def _nonembedding_params(model, k: int | None = None) -> int:
    layers = _layers(model)
    k = len(layers) if k is None else k
    return sum(p.numel() for layer in list(layers)[:k] for p in layer.parameters()) + \
        sum(p.numel() for p in model.model.norm.parameters())


@torch.no_grad()
def scaling(a) -> dict:
    torch.manual_seed(0)
    target = load_engine(a.model, [], a.dtype)
    draft = load_engine(a.draft, [], a.dtype) if a.draft else None
    prompts, ids = load_prompts("gsm8k", a.prompts, False, target)
    model = target.model
    n_layers = len(_layers(model))
    ks = [int(k) for k in a.layers.split(",")] if a.layers else list(range(2, n_layers + 1, 2))
    agree = {k: [] for k in ks}
    agree_draft = []
    t0 = time.time()
    for p in prompts:
        x = torch.tensor([p])
        gen = model.generate(x, max_new_tokens=a.tokens, do_sample=False, attention_mask=torch.ones_like(x))
        seq = gen[0]
        out = model(input_ids=seq[None], output_hidden_states=True)
        span = slice(len(p) - 1, len(seq) - 1)  # positions predicting the generated tokens
        tgt = out.logits[0, span].argmax(-1)
        for k in ks:
            h = out.hidden_states[k][0, span] if k < n_layers else None
            top = tgt if h is None else model.lm_head(model.model.norm(h)).argmax(-1)
            agree[k] += (top == tgt).tolist()
        if draft is not None:
            dl = draft.model(input_ids=seq[None]).logits[0, span].argmax(-1)
            agree_draft += (dl == tgt).tolist()
        print(f"[scaling] prompt done ({len(seq) - len(p)} tokens, {time.time() - t0:.0f} s)")
    nested = [{"layers": k, "nonembedding_params": _nonembedding_params(model, k), "positions": len(agree[k]),
               "alpha": sum(agree[k]) / len(agree[k])} for k in ks]
    rec = {"analysis": "scaling_nested_drafts", "target": a.model, "target_layers": n_layers, "dtype": a.dtype,
           "text": f"the target's greedy continuations ({a.tokens} tokens) of the first {a.prompts} GSM8K test prompts",
           "prompt_ids": ids, "nested": nested, "seconds": round(time.time() - t0, 1), "git_sha": commit(),
           "command": a.command}
    if draft is not None:
        rec["separate_draft"] = {"model": a.draft, "nonembedding_params": _nonembedding_params(draft.model),
                                 "positions": len(agree_draft), "alpha": sum(agree_draft) / len(agree_draft)}
    return rec


def main(argv=None) -> int:
    import sys

    ap = argparse.ArgumentParser(prog="python -m tools.spec_analysis", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("surplus")
    s.add_argument("--model", default="smollm2_135m")
    s.add_argument("--examples", type=int, default=240)
    s.add_argument("--top-k", type=int, default=256)
    s.add_argument("--distances", type=int, default=4)
    s.add_argument("--steps", type=int, default=300)
    s.add_argument("--out", required=True)
    c = sub.add_parser("scaling")
    c.add_argument("--model", default="qwen25_coder_15b")
    c.add_argument("--draft", default="qwen25_coder_05b")
    c.add_argument("--dtype", default="bfloat16")
    c.add_argument("--prompts", type=int, default=4)
    c.add_argument("--tokens", type=int, default=96)
    c.add_argument("--layers", default=None, help="nested draft depths (default: every second layer)")
    c.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    a.command = "python -m tools.spec_analysis " + " ".join(sys.argv[1:] if argv is None else argv)
    rec = surplus(a) if a.cmd == "surplus" else scaling(a)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rec, indent=1) + "\n")
    print(f"-> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
