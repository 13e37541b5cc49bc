"""Write and execute the family notebooks (one per family of papers) from the cells below.

    python -m tools.build_notebooks [--only NAME] [--no-execute]

Every notebook reads committed results only (results/published/, through harness.compare), shows
its family's claim-vs-measured table (the same numbers as the paper cards) and its plots. The
notebooks are executed with nbclient and saved with their outputs; CI executes them again
(tests/test_notebooks.py). Edit the cells here, not the .ipynb files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SETUP = """%matplotlib inline
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from harness import compare
pd.set_option("display.max_colwidth", 90)"""


def claims_cell(family: str) -> str:
    return f"""claims = compare.claims_table({family!r})
display(Markdown("### Claim vs measured (every number recomputed from committed rows)"))
claims"""


NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "draft_model_speculative": [
        ("md", """# Draft-model speculative decoding: the papers' claims beside our measurements

Papers: SpecDec++, SmartSpec, SpecTr, Recursive Speculative Decoding, DySpec (and plain speculative
decoding as the baseline). Our setting: Qwen2.5-Coder-0.5B drafting for the 1.5B, bf16, on a
2-core CPU, every method interleaved per prompt in one process (`benchmarks/bench_decoding.py`).
Speedups are ratios measured side by side in that process, with a paired bootstrap CI over the
prompts."""),
        ("code", SETUP),
        ("code", claims_cell("draft_model")),
        ("code", """tables = {name: compare.bench_table(f"{name}.json") for name in
          ["bench_qwen_pair_bf16", "bench_qwen_pair_all_bf16", "qwen_pair_specdec_pp_bf16"]}
fig, ax = plt.subplots(figsize=(8, 5))
compare.plot_speedup_vs_mat(tables, ax)
ax.set_title("Qwen 0.5B -> 1.5B, bf16, CPU: speedup vs mean accepted tokens")
fig.tight_layout()
pd.concat({k: v for k, v in tables.items()}, names=["run"]).round(3)"""),
        ("md", """A longer accepted prefix (MAT) does not buy speed one-for-one on this CPU: a verification
forward over k tokens costs more than a one-token forward, which is why the GPU papers' 2-3x
shrink here. The DySpec rows in these files are the superseded chain implementation (see its card)."""),
    ],
    "model_free_self_speculative": [
        ("md", """# Model-free and self-speculative decoding

Papers: Token Recycling, STAND, DEL, S2D, Lexical Unit Decoding (and prompt lookup as the
baseline). Our settings: SmolLM2-135M fp32 and Qwen2.5-Coder-1.5B bf16 on the CPU, methods
interleaved per prompt in one process; STAND also in its multi-sample setting (T = 0.8)."""),
        ("code", SETUP),
        ("code", claims_cell("model_free")),
        ("code", """tables = {"Qwen2.5-Coder-1.5B bf16": compare.bench_table("bench_qwen15_model_free_bf16.json"),
          "SmolLM2-135M fp32": compare.bench_table("bench_smollm2_model_free_fp32.json")}
fig, ax = plt.subplots(figsize=(8, 5))
compare.plot_speedup_vs_mat(tables, ax)
ax.set_title("model-free drafting: speedup vs MAT (same process, per model)")
fig.tight_layout()
stand = compare.bench_table("qwen15_stand_multisample_bf16.json", baseline="sampling[sampling.temperature=0.8]")
pd.concat({**tables, "STAND, 4 samples / prompt, T = 0.8": stand}, names=["run"]).round(3)"""),
        ("code", """# The price of a wide forward on this CPU (the reason trees stay small here)
print(open(compare.PUBLISHED / "forward_cost_qwen15_bf16.txt").read())"""),
    ],
    "lossy_acceleration": [
        ("md", """# Lossy acceleration: Entropy Adaptive Decoding and Superposed Decoding

Both trade exactness for speed; the comparison is quality vs cost (share of tokens from the large
model for EAD; wall time vs k nucleus samples for Superposed Decoding). EAD: the Qwen 0.5B / 1.5B
pair on 8 GSM8K problems (`python -m harness experiment=ead_sweep strategy.tau=TAU task.limit=8
run.max_new_tokens=192`). Superposed Decoding has no stored rows yet: its line says "not run"
rather than showing a number the rows do not back."""),
        ("code", SETUP),
        ("code", claims_cell("lossy")),
        ("code", """# EAD's cost/quality curve: accuracy vs the share of tokens the large model produced (tau sweep)
p = compare.PUBLISHED / "ead_gsm8k8_qwen_pair_bf16.json"
if p.exists():
    import json
    runs = json.loads(p.read_text())
    ead = compare.runs_table(p.name)
    ead["tau"] = [r["strategy_params"]["tau"] for r in runs]
    ead["large share"] = [sum((x.get("extra") or {}).get("large_tokens", 0) for x in r["rows"]) /
                          max(sum(x.get("new_tokens") or 0 for x in r["rows"]), 1) for r in runs]
    ead = ead.sort_values("large share")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(ead["large share"], ead["quality"], yerr=[ead["quality"] - ead["ci_low"], ead["ci_high"] - ead["quality"]],
                marker="o", capsize=3)
    for rec in ead.to_dict("records"):
        ax.annotate(f"tau={rec['tau']:g}", (rec["large share"], rec["quality"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("share of tokens from the large model")
    compare.accuracy_axis(ax)
    ax.set_title("EAD, Qwen 0.5B / 1.5B, GSM8K (8 problems)")
    fig.tight_layout()
    display(ead[["tau", "n", "quality", "ci_low", "ci_high", "large share", "new_tokens / example"]])
else:
    print("no EAD rows stored yet")"""),
    ],
    "test_time_search": [
        ("md", """# Test-time search: A*-decoding and its baselines

Papers: A*-decoding (with best-of-N, self-consistency and particle filtering as its baselines),
First Finish Search, InfAlign, in-context navigation. Our setting: Qwen2.5-Coder-0.5B fp32, GSM8K
test problems 1-2, the policy as its own judge. Two problems cannot rank methods; the plot shows
the accounting (accuracy vs generated tokens) the papers compare on."""),
        ("code", SETUP),
        ("code", claims_cell("search")),
        ("code", """runs = compare.runs_table("tts_gsm8k_first2")
runs["tokens"] = runs["generated tokens / example"].fillna(runs["new_tokens / example"])
fig, ax = plt.subplots(figsize=(7, 4))
for rec in runs.to_dict("records"):
    ax.errorbar(rec["tokens"], rec["quality"], yerr=[[rec["quality"] - rec["ci_low"]], [rec["ci_high"] - rec["quality"]]],
                fmt="o", capsize=3, label=rec["strategy"])
ax.set_xscale("log")
ax.set_xlabel("generated tokens per example (all candidates)")
compare.accuracy_axis(ax)
ax.legend(fontsize=7)
ax.set_title("GSM8K (2 problems): accuracy vs generated tokens")
fig.tight_layout()
runs"""),
    ],
    "quality_decoding": [
        ("md", """# Quality-oriented decoding

Papers: Diverse Beam Search, Top-H, AdaDec, GRAD, exact-extract, pointer networks (as copy-
constrained decoding), Hyperfitting. Settings: Qwen2.5-Coder-0.5B on small stated subsets (see
each card); SmolLM2-135M for Hyperfitting."""),
        ("code", SETUP),
        ("code", claims_cell("quality")),
        ("code", """# Top-H's comparison: accuracy vs temperature per sampler (GSM8K, first 8 problems)
import re
frames = []
for f in sorted(compare.PUBLISHED.glob("top_h_T*_gsm8k8_qwen05b_bf16.json")):
    t = compare.runs_table(f.name)
    t["T"] = float(re.search(r"top_h_T([0-9p.]+)_", f.name).group(1).replace("p", "."))
    frames.append(t)
top_h = pd.concat(frames, ignore_index=True)
top_h["sampler"] = [("top_h" if s == "top_h" else ("min-p 0.1" if "min_p" in p else "top-p 0.9" if "top_p" in p else "plain"))
                    for s, p in zip(top_h["strategy"], top_h["params"])]
fig, ax = plt.subplots(figsize=(6, 4))
for name, g in top_h.groupby("sampler"):
    g = g.sort_values("T")
    ax.errorbar(g["T"], g["quality"], yerr=[g["quality"] - g["ci_low"], g["ci_high"] - g["quality"]], marker="o", capsize=3, label=name)
compare.accuracy_axis(ax)
ax.set_xlabel("temperature")
ax.legend()
ax.set_title("GSM8K (8 problems), Qwen2.5-Coder-0.5B bf16")
fig.tight_layout()
top_h[["T", "sampler", "n", "quality", "ci_low", "ci_high"]].sort_values(["T", "sampler"])"""),
        ("code", """# Extractive QA: greedy vs beams vs exact-extract vs copy-constrained vs GRAD (HotpotQA gold docs, 10 questions)
qa = compare.runs_table("quality_multihop_hotpot_gold10_qwen05b_fp32.json")
fig, ax = plt.subplots(figsize=(7, 3.5))
x = range(len(qa))
for i, col in enumerate(["quality", "squad_em", "squad_f1"]):
    ax.bar([j + 0.27 * (i - 1) for j in x], qa[col], width=0.27, label={"quality": "substring EM"}.get(col, col))
ax.set_xticks(list(x), qa["strategy"], rotation=20)
compare.accuracy_axis(ax, "score")
ax.legend(fontsize=7)
fig.tight_layout()
qa"""),
    ],
    "diffusion_parallelbench": [
        ("md", """# Diffusion LLMs and ParallelBench

Papers: ParallelBench (the finding), FreeDave (lossless, fewer forwards), Learn2PD (learned
filter). Our setting: a 3.1M-parameter masked-diffusion LM and its autoregressive twin trained on
this CPU on the waiting-line tasks (`make dllm-models`), evaluated on the shipped test rows."""),
        ("code", SETUP),
        ("code", claims_cell("diffusion")),
        ("code", """pts = compare.parallelbench_points()
compare.per_task_curves(pts, "positions_per_forward", "positions settled per forward", ar_line=True);"""),
        ("code", """# Forwards vs quality (Learn2PD's curve: its filter threshold; Fast-dLLM's gamma; top-k's k)
compare.per_task_curves(pts, "forwards_per_example", "forwards per example",
                        families=["dllm_topk", "dllm_threshold", "learn2pd", "freedave"]);"""),
        ("code", """import json
aup = pd.DataFrame(json.loads((compare.PUBLISHED / "parallelbench_sweep.json").read_text())["aup"]).T
display(Markdown("### AUP per task and strategy (d3LLM weighting)"))
aup.round(2)"""),
    ],
    "asr_error_correction": [
        ("md", """# ASR error correction (HyPoradise)

The paper's comparison: 1-best vs LM reranking vs generative correction, bounded by the N-best
oracle (o_nb, the best hypothesis in the list) and the compositional oracle (o_cp). Our setting:
Qwen2.5-Coder-0.5B fp32, the first 50 ATIS test utterances, zero-shot, the paper's normalisation."""),
        ("code", SETUP),
        ("code", claims_cell("asr")),
        ("code", """import json
p = compare.PUBLISHED / "hyporadise_atis50_qwen05b_fp32.json"
if p.exists():
    wer = compare.runs_table(p.name)[["strategy", "n", "quality", "ci_low", "ci_high"]]
    orc = json.loads((compare.PUBLISHED / "hyporadise_atis50_oracles.json").read_text())["sets"][0]
    names = [{"nbest_first": "1-best", "nbest_rerank": "LM rerank", "greedy": "zero-shot correction"}.get(s, s)
             for s in wer["strategy"]] + ["o_nb (oracle)", "o_cp (oracle)"]
    vals = list(wer["quality"]) + [orc["onb_utt"], orc["ocp_utt"]]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(names, vals, color=["tab:blue"] * len(wer) + ["tab:grey"] * 2)
    ax.set_ylabel("utterance WER (lower is better)")
    ax.set_ylim(bottom=0)
    ax.set_title("ATIS, first 50 utterances")
    fig.tight_layout()
    display(wer)
else:
    print("no HyPoradise rows stored yet")"""),
    ],
    "multihop_document_orders": [
        ("md", """# Multi-hop QA: does the order of the documents matter?

The paper permutes the context documents (original, forward = reasoning order, backward, gold
only) and finds forward order best. Our setting: Qwen2.5-Coder-0.5B fp32, greedy, the first 20
HotpotQA questions of the shipped subset, answer-only prompt, substring EM."""),
        ("code", SETUP),
        ("code", claims_cell("multihop")),
        ("code", """p = compare.PUBLISHED / "multihop_orders_hotpot20_qwen05b_fp32.json"
if p.exists():
    orders = compare.runs_table(p.name)
    import json
    orders["order"] = [r["task_options"].get("order") for r in json.loads(p.read_text())]
    rank = {o: i for i, o in enumerate(["original", "forward", "backward", "forward_k", "rm_first", "random", "gold"])}
    orders = orders.sort_values("order", key=lambda s: s.map(rank)).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.errorbar(orders["order"], orders["quality"], yerr=[orders["quality"] - orders["ci_low"], orders["ci_high"] - orders["quality"]],
                fmt="o", capsize=4)
    compare.accuracy_axis(ax, "substring EM")
    ax.set_title("HotpotQA (20 questions): EM by document order")
    fig.tight_layout()
    display(orders[["order", "n", "quality", "ci_low", "ci_high", "squad_f1"]])
else:
    print("no document-order rows stored yet")"""),
        ("md", """## The paper's prompt, causal and bidirectional (zero-shot)

The paper's own answer-only prompt (system prompt, `\\boxed{` prefill) on the same 20 questions,
forward and backward order, with the causal model and with the paper's bidirectional-prompt
variant. The paper FINE-TUNES that variant; here it runs zero-shot, which tests the plumbing and
shows what the attention change alone does to a causally trained model."""),
        ("code", """import json
tabs = []
for fname, model in (("multihop_paper_hotpot20_qwen05b_fp32.json", "causal"),
                     ("multihop_paper_bi_hotpot20_qwen05b_fp32.json", "bidirectional prompt (zero-shot)")):
    p = compare.PUBLISHED / fname
    if not p.exists():
        continue
    t = compare.runs_table(fname)
    t["order"] = [r["task_options"].get("order") for r in json.loads(p.read_text())]
    t["model variant"] = model
    tabs.append(t)
if tabs:
    import pandas as pd
    paper = pd.concat(tabs, ignore_index=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (variant, g) in enumerate(paper.groupby("model variant", sort=False)):
        x = [j + 0.1 * (2 * i - 1) for j in range(len(g))]
        ax.errorbar(x, g["quality"], yerr=[g["quality"] - g["ci_low"], g["ci_high"] - g["quality"]], fmt="o",
                    capsize=4, label=variant)
    ax.set_xticks(range(len(g)), list(g["order"]))
    compare.accuracy_axis(ax, "substring EM")
    ax.set_title("Paper prompt: causal vs bidirectional prompt (n = 20 each)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    display(paper[["model variant", "order", "n", "quality", "ci_low", "ci_high", "squad_f1"]])
else:
    print("no paper-prompt rows stored yet")"""),
    ],
    "information_surplus": [
        ("md", """# The information surplus of hidden states (the Markov-categorical view)

The claim: the hidden state at position t carries information about tokens beyond t + 1, the
surplus that multi-token drafters exploit. Our measurement (`python -m tools.spec_analysis
surplus`): linear probes on SmolLM2-135M's final hidden states over GSM8K train text predict the
token at t + d; held-out accuracy by distance d is set beside what the current token alone
predicts (the surplus is the gap), and beside the chain acceptance of the probes used as a
Medusa-style draft (heads 1..j all right)."""),
        ("code", SETUP),
        ("code", claims_cell("analysis")),
        ("code", """import json
rec = json.loads((compare.PUBLISHED / "information_surplus_smollm2.json").read_text())
by_d = pd.DataFrame(rec["by_distance"])
chain = pd.DataFrame(rec["chain_acceptance"])
fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
a1.plot(by_d["distance"], by_d["probe_acc"], marker="o", label="probe on h_t")
a1.plot(by_d["distance"], by_d["current_token_acc"], marker="s", label="current token alone")
if "lm_head_acc" in by_d:
    a1.scatter([1], [by_d["lm_head_acc"].iloc[0]], marker="*", s=120, color="k", label="the model's LM head (d = 1)")
a1.set_xlabel("distance d (predict token t + d)")
compare.accuracy_axis(a1, "held-out top-1 accuracy")
a1.legend(fontsize=7)
a1.set_title(f"{rec['model']}: what h_t knows about t + d")
a2.plot(chain["depth"], chain["accepted_all"], marker="o")
a2.set_xlabel("draft depth j (probe heads 1..j)")
compare.accuracy_axis(a2, "share of positions accepted in full")
a2.set_title("the probes as a draft: acceptance by depth")
fig.tight_layout()
display(Markdown(f"corpus: {rec['corpus']}; top-{rec['top_k']} tokens cover {rec['top_k_token_coverage']:.1%} of the text"))
by_d.round(3)"""),
    ],
    "scaling_laws": [
        ("md", """# Scaling laws for speculative decoding: acceptance vs draft capacity

The claim (Scylla): the acceptance rate is log-linear in the draft's pre-training tokens, its
capacity and the batch size. Our measurement (`python -m tools.spec_analysis scaling`): nested
drafts of one family, the first k layers of Qwen2.5-Coder-1.5B (its own norm and head), and the
separate 0.5B model of the pair, on the 1.5B's own greedy continuations of GSM8K prompts. We fit
alpha = a + b log10(N) over the nested drafts (N = non-embedding parameters) and show the fit's
error; only capacity varies here (pre-training tokens and batch size do not)."""),
        ("code", SETUP),
        ("code", claims_cell("analysis")),
        ("code", """import json
import numpy as np
rec = json.loads((compare.PUBLISHED / "scaling_nested_qwen15.json").read_text())
nested = pd.DataFrame(rec["nested"])
fit_pts = nested[nested["layers"] < rec["target_layers"]]  # the full model drafting for itself is alpha = 1 by construction
x, y = np.log10(fit_pts["nonembedding_params"]), fit_pts["alpha"]
b, a = np.polyfit(x, y, 1)
resid = y - (a + b * x)
fig, ax = plt.subplots(figsize=(7, 4))
ax.scatter(fit_pts["nonembedding_params"], y, label="first-k-layer drafts of the 1.5B")
xx = np.linspace(x.min(), x.max(), 50)
ax.plot(10 ** xx, a + b * xx, "--", label=f"fit: alpha = {a:.2f} + {b:.2f} log10 N (RMS error {np.sqrt((resid ** 2).mean()):.3f})")
if "separate_draft" in rec:
    sd = rec["separate_draft"]
    ax.scatter([sd["nonembedding_params"]], [sd["alpha"]], marker="*", s=160, color="tab:red", label=f"separate draft {sd['model']}")
ax.set_xscale("log")
ax.set_xlabel("draft non-embedding parameters N (log)")
compare.accuracy_axis(ax, "greedy acceptance alpha (top-1 agreement)")
ax.legend(fontsize=7)
ax.set_title(f"{rec['target']} ({rec['dtype']}): {rec['text']}")
fig.tight_layout()
nested.assign(fit=(a + b * np.log10(nested["nonembedding_params"])).round(3)).round(4)"""),
    ],
}


def build(name: str, cells: list[tuple[str, str]], execute: bool = True, timeout: int = 300):
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook(cells=[new_markdown_cell(s) if k == "md" else new_code_cell(s) for k, s in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if execute:
        from nbclient import NotebookClient

        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    return nb


def main(argv=None) -> int:
    import nbformat

    ap = argparse.ArgumentParser(prog="python -m tools.build_notebooks", description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None)
    ap.add_argument("--no-execute", action="store_true")
    a = ap.parse_args(argv)
    for name, cells in NOTEBOOKS.items():
        if a.only and name != a.only:
            continue
        nb = build(name, cells, execute=not a.no_execute)
        path = ROOT / "notebooks" / f"{name}.ipynb"
        nbformat.write(nb, path)
        print(f"[notebooks] {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
