"""Regenerate ParallelBench's synthetic task files (Waiting Line lists and the Latin square).

Implements the generation rules in ../shared/data/parallelbench/SOURCE.md §"Generation rules";
with the default settings the output is byte-identical to the shipped files
`output/test/waiting_line/*.jsonl`, `output/test/waiting_line_n15/*.jsonl` (`--n 15`) and
`output/test/puzzle/latin_square_n4.jsonl` (checked by tests/test_parallelbench.py).
`--n` is the list length (names per list) or the Latin-square size, as in the paper's "n".

    python -m tools.parallelbench_gen --task copy --out copy.jsonl              # = waiting_line/copy.jsonl (n 3..6)
    python -m tools.parallelbench_gen --task shuffle --n 15 --out s.jsonl       # = waiting_line_n15/shuffle.jsonl
    python -m tools.parallelbench_gen --task copy --n 20 --out file.jsonl       # new size: 100 lists of 20 names
    python -m tools.parallelbench_gen --task latin_square --out ls.jsonl        # = puzzle/latin_square_n4.jsonl

Rules (summary): names = every "First Last" pair of resources/first_last_names.yaml (first-name
major). rng = random.Random(seed), seed = (int(sha256(key)) + 42) % (2**16 - 1) for the original
list-op key (copy, sort, reverse, shuffle, insert_index_list, ...). An endless stream from that
rng: n = rng.randint(lo, hi); x = rng.sample(names, n), redrawn (same n) until first and last
names are all distinct; then the operation. The first `per_length` samples of each length are
kept (output ordered by length), then the same rng makes one ICL example per row, unbucketed.
Rows are JSON with compact separators (",", ":"), keys in insertion order, ASCII, one per line.
The distinct-names rule makes long lists slow to draw (n = 20: ~20 redraws per list); lengths
whose expected redraws exceed 10^5 (n > ~33 with the shipped names) are refused.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import random
import sys
from pathlib import Path

# task name (file stem) -> (original list-op key that seeds the rng, operation, index given in prompt)
LIST_TASKS = {
    "copy": ("copy", "copy", False),
    "sort": ("sort", "sort", False),
    "reverse": ("reverse", "reverse", False),
    "shuffle": ("shuffle", "shuffle", False),
    "insert_index": ("insert_index_list", "insert", True),
    "insert_random": ("insert_random_list", "insert", False),
    "remove_index": ("remove_index_list", "remove", True),
    "remove_random": ("remove_random_list", "remove", False),
    "replace_index": ("replace_index_list", "replace", True),
    "replace_random": ("replace_random_list", "replace", False),
}
# tasks whose rows carry the infilling skeleton "output_format" (as in the shipped files)
OUTPUT_FORMAT = {"copy", "shuffle", "insert_index", "insert_random", "replace_index", "replace_random"}
LATIN_SEED = 51291
LATIN_SYMBOLS = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [str(d) for d in range(10)]


def task_seed(key: str) -> int:
    return (int(hashlib.sha256(key.encode()).hexdigest(), 16) + 42) % (2**16 - 1)


def default_names_file() -> Path:
    root = os.environ.get("HARNESS_DATA_DIR")
    shared = Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data"
    base = shared / "parallelbench"
    return base / "resources" / "first_last_names.yaml"


def load_vocab(names_file: Path | str | None = None) -> list[str]:
    import yaml

    with open(names_file or default_names_file(), encoding="utf-8") as f:
        first, last = yaml.safe_load(f)
    return [" ".join(p) for p in itertools.product(first, last)]


def dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


def render_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{s}"' for s in items) + "]"


def _draw(rng: random.Random, vocab: list[str], lo: int, hi: int) -> list[str]:
    n = rng.randint(lo, hi)
    while True:
        x = rng.sample(vocab, n)
        firsts, lasts = zip(*(s.split(" ") for s in x))
        if len(set(firsts)) == n and len(set(lasts)) == n:
            return x


def _accept_prob(vocab: list[str], n: int) -> float:
    """Approximate chance that n sampled names have distinct first and distinct last names."""
    nf, nl = len({v.split(" ")[0] for v in vocab}), len({v.split(" ")[1] for v in vocab})
    p = 1.0
    for i in range(n):
        p *= max(0.0, 1 - i / nf) * max(0.0, 1 - i / nl)
    return p


def _sample(task: str, rng: random.Random, vocab: list[str], lo: int, hi: int) -> dict:
    """One example (without icl_examples): {"input", "answer", ["output_format"], "metadata"}."""
    _, op, indexed = LIST_TASKS[task]
    x = _draw(rng, vocab, lo, hi)
    inp: dict = {"context": render_list(x)}
    meta: dict = {"length": len(x)}
    word = index = None
    if op == "copy":
        y = list(x)
    elif op == "reverse":
        y = x[::-1]
    elif op == "sort":
        y = sorted(x)
    elif op == "shuffle":
        y = list(x)
        while y == x:
            rng.shuffle(y)
    elif op in ("insert", "replace"):
        word = rng.choice([v for v in vocab if v not in x])
        index = rng.randint(0, len(x)) if op == "insert" else rng.randint(0, len(x) - 1)
        y = list(x)
        if op == "insert":
            y.insert(index, word)
        else:
            y[index] = word
    elif op == "remove":
        index = rng.randint(0, len(x) - 1)
        y = list(x)
        y.pop(index)
    else:  # pragma: no cover
        raise ValueError(op)
    if word is not None:
        inp["word"] = word
    if op in ("insert", "remove", "replace"):
        if indexed:
            inp["index"] = index
        meta["index"] = index if indexed else None
        if word is not None:
            meta["word"] = word
    if indexed or op in ("copy", "reverse", "sort"):
        answer: str | dict = render_list(y)
    else:
        answer = {"input": list(x)}
        if word is not None:
            answer["word"] = word
        answer["example"] = render_list(y)
    row = {"input": inp, "answer": answer}
    if task in OUTPUT_FORMAT:
        row["output_format"] = render_list(["[MASK]"] * len(y))
    row["metadata"] = meta
    return row


def generate_list_task(task: str, n: int | None = None, rows: int = 100, min_length: int = 3,
                       max_length: int = 6, per_length: int | None = None, seed: int | None = None,
                       vocab: list[str] | None = None) -> list[dict]:
    """Rows of waiting_line/<task> (defaults) or waiting_line_n15/<task> (n=15).

    `n` fixes the list length (one bucket); otherwise lengths min..max, `per_length` rows each
    (default: `rows` split evenly over the lengths)."""
    if task not in LIST_TASKS:
        raise ValueError(f"unknown task '{task}' (choose from {', '.join(LIST_TASKS)}, latin_square)")
    if n is not None:
        min_length = max_length = n
    vocab = vocab or load_vocab()
    if not 1 <= min_length <= max_length:
        raise ValueError(f"list lengths must satisfy 1 <= min <= max (got {min_length}..{max_length})")
    if _accept_prob(vocab, max_length) < 1e-5:
        raise ValueError(f"lists of {max_length} names with distinct first and last names are too rare "
                         f"to draw from this name file")
    lengths = list(range(min_length, max_length + 1))
    if per_length is None:
        if rows % len(lengths):
            raise ValueError(f"rows={rows} does not split evenly over lengths {lengths}; give per_length")
        per_length = rows // len(lengths)
    rng = random.Random(task_seed(LIST_TASKS[task][0]) if seed is None else seed)
    buckets: dict[int, list[dict]] = {k: [] for k in lengths}
    while any(len(b) < per_length for b in buckets.values()):
        s = _sample(task, rng, vocab, min_length, max_length)
        b = buckets[s["metadata"]["length"]]
        if len(b) < per_length:
            b.append(s)
    picked = [s for k in lengths for s in buckets[k]]
    icl = [_sample(task, rng, vocab, min_length, max_length) for _ in picked]
    out = []
    for s, e in zip(picked, icl):
        row = {"input": {**s["input"], "icl_examples": [e]}}
        row.update({k: v for k, v in s.items() if k != "input"})
        out.append(row)
    return out


def _latin(rng: random.Random, size: int) -> dict:
    symbols = rng.sample(LATIN_SYMBOLS, size)
    rows = [symbols[i:] + symbols[:i] for i in range(size)]
    rng.shuffle(rows)
    cols = [list(c) for c in zip(*rows)]
    rng.shuffle(cols)
    rows = [list(r) for r in zip(*cols)]
    return {"input": {"size": size, "symbols": "[" + ", ".join(symbols) + "]"},
            "answer": {"symbols": symbols, "example": "\n".join(",".join(r) for r in rows)},
            "metadata": {"length": size}}


def generate_latin_square(n: int = 4, rows: int = 100, seed: int = LATIN_SEED) -> list[dict]:
    """Rows of puzzle/latin_square_n4.jsonl (defaults): `rows` n x n squares, then as many ICL
    examples, all from one rng."""
    if not 1 <= n <= len(LATIN_SYMBOLS):
        raise ValueError(f"latin square size must be 1..{len(LATIN_SYMBOLS)} (got {n})")
    rng = random.Random(seed)
    picked = [_latin(rng, n) for _ in range(rows)]
    icl = [_latin(rng, n) for _ in range(rows)]
    out = []
    for s, e in zip(picked, icl):
        out.append({"input": {**s["input"], "icl_examples": [e]}, "answer": s["answer"], "metadata": s["metadata"]})
    return out


def to_jsonl(rows: list[dict]) -> str:
    return "".join(dumps(r) + "\n" for r in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.parallelbench_gen",
                                description="Generate ParallelBench Waiting Line / Latin square files.")
    p.add_argument("--task", required=True, choices=[*LIST_TASKS, "latin_square"])
    p.add_argument("--n", type=int, default=None, help="list length (names per list; default: lengths "
                   "--min-length..--max-length = 3..6) or Latin-square size (default 4)")
    p.add_argument("--rows", type=int, default=100, help="rows in the file (default 100; split evenly over lengths)")
    p.add_argument("--min-length", type=int, default=3)
    p.add_argument("--max-length", type=int, default=6)
    p.add_argument("--per-length", type=int, default=None, help="rows per list length (overrides --rows)")
    p.add_argument("--seed", type=int, default=None, help="override the task's seed (default: the paper's)")
    p.add_argument("--names", default=None,
                   help="first_last_names.yaml (default: $HARNESS_DATA_DIR/parallelbench/resources/)")
    p.add_argument("--out", default="-", help="output .jsonl (default: stdout)")
    a = p.parse_args(argv)
    try:
        if a.task == "latin_square":
            rows = generate_latin_square(n=a.n or 4, rows=a.rows, seed=LATIN_SEED if a.seed is None else a.seed)
        else:
            rows = generate_list_task(a.task, n=a.n, rows=a.rows, min_length=a.min_length,
                                      max_length=a.max_length, per_length=a.per_length, seed=a.seed,
                                      vocab=load_vocab(a.names))
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = to_jsonl(rows)
    if a.out == "-":
        sys.stdout.write(text)
    else:
        Path(a.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
