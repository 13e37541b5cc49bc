"""A small arithmetic word-problem set written by this project, in GSM8K's format.

The demo's embedded default: 36 one- and two-step problems generated deterministically from
templates (no download, no copy of any benchmark), scored exactly like GSM8K. Write the file
with `python -m tasks.demo_arith demo.jsonl` to inspect it or to use it as `task.path`.
"""

from __future__ import annotations

import json
import random
import sys

from tasks.gsm8k import GSM8K

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Iris", "Jamal", "Kira", "Liam"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps", "shells"]


def _templates(r: random.Random):
    n, m = r.choice(NAMES), r.choice(ITEMS)
    a, b, c = r.randint(2, 30), r.randint(2, 20), r.randint(2, 9)
    return [
        (f"{n} has {a} {m} and buys {b} more. How many {m} does {n} have now?",
         f"{n} has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} {m}.", a + b),
        (f"{n} had {a + b} {m} and gave {b} of them to a friend. How many {m} are left?",
         f"{a + b} - {b} = <<{a + b}-{b}={a}>>{a} {m} are left.", a),
        (f"{n} buys {c} boxes of {m}. Each box holds {b} {m}. How many {m} does {n} buy?",
         f"{c} * {b} = <<{c}*{b}={c * b}>>{c * b} {m}.", c * b),
        (f"{n} shares {c * b} {m} equally among {c} friends. How many {m} does each friend get?",
         f"{c * b} / {c} = <<{c * b}/{c}={b}>>{b} {m} each.", b),
        (f"{n} has {a} {m}, buys {c} packs of {b} {m}, then gives away {c} {m}. How many {m} does {n} have?",
         f"{c} * {b} = <<{c}*{b}={c * b}>>{c * b} bought. {a} + {c * b} - {c} = <<{a}+{c * b}-{c}={a + c * b - c}>>"
         f"{a + c * b - c} {m}.", a + c * b - c),
        (f"A ticket costs ${b}. {n} buys {c} tickets and pays with ${b * c + a}. How much change does {n} get?",
         f"{c} * {b} = <<{c}*{b}={c * b}>>{c * b} dollars. {b * c + a} - {c * b} = <<{b * c + a}-{c * b}={a}>>{a}.", a),
    ]


def make_problems(n: int = 36, seed: int = 0) -> list[dict]:
    """n problems in GSM8K's schema: {"question", "answer" ending in '#### N'}; deterministic."""
    r = random.Random(seed)
    out = []
    while len(out) < n:
        q, sol, ans = _templates(r)[len(out) % 6]
        out.append({"question": q, "answer": f"{sol}\n#### {ans}"})
    return out


class DemoArithmetic(GSM8K):
    name = "demo_arith"
    version = "1"
    data_dir = ""  # generated, never downloaded

    def __init__(self, limit=None, path=None, n: int = 36, seed: int = 0, prompting=None):
        super().__init__(limit, path, prompting=prompting)
        self.n, self.seed = n, seed

    def hub_source(self):
        return f"generated:demo_arith(n={self.n},seed={self.seed})"

    def raw_rows(self, split=None):
        if split == "train":  # few-shot exemplars: problems from another seed, never the test ones
            return make_problems(max(self.n, 16), self.seed + 1_000_003)
        if self.path:
            from tasks.base import read_jsonl

            return read_jsonl(self.local_dir(), ("question", "answer"), self.name)
        return make_problems(self.n, self.seed)


if __name__ == "__main__":
    with open(sys.argv[1] if len(sys.argv) > 1 else "demo_arith.jsonl", "w") as f:
        for row in make_problems():
            f.write(json.dumps(row) + "\n")
