"""Build GRAD's token-transition graph for one model from a train split (strategies/grad.py).

    python -m tools.build_grad_graph --model qwen25_coder_05b --task gsm8k --examples 512 \
        --out results/grad/qwen25_coder_05b-gsm8k-train.pt

Corpus: GSM8K's TRAIN split (question + worked solution per sequence, the paper's question-answer
sequences), never test problems; or any JSON-lines file with `--file F --field text` (one
sequence per line). One forward of the model per sequence; the graph file records the model's
identity (the strategy refuses it for another model), the corpus, its size (sequences, edges,
source tokens) and the build time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def corpus(task: str | None, file: str | None, field: str, n: int) -> tuple[list[str], str]:
    if file:
        rows = [json.loads(line) for line in Path(file).read_text().splitlines() if line.strip()]
        return [str(r[field]) for r in rows][:n], f"file:{file}:{field}"
    if task != "gsm8k":
        raise SystemExit("error: --task gsm8k (its train split) or --file F --field text")
    data = os.environ.get("HARNESS_DATA_DIR")
    p = Path(data) / "gsm8k" / "train.jsonl" if data else None
    if p is None or not p.exists():
        raise SystemExit("error: GSM8K train needs HARNESS_DATA_DIR/gsm8k/train.jsonl")
    rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()][:n]
    return [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows], "gsm8k:train"


def main(argv=None):
    from harness.errors import ConfigError
    from strategies.adadec import identity
    from strategies.grad import Graph
    from tools.train_acceptance_head import load_engine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--file", default=None)
    ap.add_argument("--field", default="text")
    ap.add_argument("--examples", type=int, default=512)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    texts, name = corpus(a.task, a.file, a.field, a.examples)
    try:
        engine = load_engine(a.model, a.set, a.dtype)
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    t0 = time.perf_counter()
    seqs = [engine.encode(t) for t in texts]
    g = Graph.build(engine, seqs, progress=True)
    g.meta = {"model": identity(engine), "corpus": name, "sequences": len(seqs),
              "source_tokens": sum(len(s) for s in seqs), "edges": g.edges, "nodes": len(g.rows),
              "seconds": time.perf_counter() - t0}
    g.save(Path(a.out))
    print(f"{g.edges} edges from {len(seqs)} sequences ({g.meta['source_tokens']} tokens) in "
          f"{g.meta['seconds']:.0f} s -> {a.out}")
    return g.meta


if __name__ == "__main__":
    main()
