"""GSM8K (Cobbe et al. 2021): grade-school math word problems, final-number accuracy.

Data: hub `openai/gsm8k` config `main` split `test`, or `<HARNESS_DATA_DIR>/gsm8k/test.jsonl`
(see ../shared/data/gsm8k/SOURCE.md). Gold = the number after `####`. The model is asked to
reason step by step and end with `#### <number>`; `quality` uses strict extraction (the
`####` marker) falling back to the last number in the output (flexible); both are stored.
"""

from __future__ import annotations

import hashlib

from tasks.answers import last_number, strict_final_number
from tasks.base import Task, load_hub, read_jsonl

INSTRUCTION = ("Solve the following math word problem. Reason step by step, then give the final "
               "answer as a number on the last line in the form '#### <number>'.\n\n")


class GSM8K(Task):
    name = "gsm8k"
    version = "1"
    data_dir = "gsm8k"
    secondary_metrics = ("strict_match", "flexible_match")

    def __init__(self, limit=None, path=None, config: str = "main", split: str = "test"):
        super().__init__(limit, path)
        self.config, self.split = config, split

    def hub_source(self):
        return f"openai/gsm8k:{self.config}:{self.split}"

    def raw_rows(self) -> list[dict]:
        local = self.local_dir()
        if local is None:
            return load_hub(self.name, "openai/gsm8k", self.config, self.split)
        fname = {"main": "test.jsonl", "socratic": "test_socratic.jsonl"}[self.config]
        return read_jsonl(local / fname if local.is_dir() else local, ("question", "answer"), self.name)

    def load(self) -> list[dict]:
        out = []
        for i, r in enumerate(self.raw_rows()):
            gold = strict_final_number(r["answer"])
            if gold is None:
                from harness.errors import ConfigError

                raise ConfigError(f"task {self.name}: row {i} has no '#### <number>' in its answer")
            qid = hashlib.sha1(r["question"].encode()).hexdigest()[:10]
            out.append({"id": f"{self.name}-{i:04d}-{qid}", "question": r["question"], "gold": gold})
        return out[: self.limit] if self.limit else out

    def prompt(self, example):
        return [{"role": "user", "content": INSTRUCTION + example["question"]}]

    votes = True

    def extract_answer(self, output):
        """As in `score`: the '#### ' number, else the last number (normalised)."""
        strict = strict_final_number(output)
        return strict if strict is not None else last_number(output)

    def gold_output(self, example):
        return f"#### {example['gold']}"

    def score(self, example, output):
        strict, flexible = strict_final_number(output), last_number(output)
        extracted = self.extract_answer(output)
        return {"extracted": extracted, "quality": float(extracted == example["gold"]),
                "strict_match": float(strict == example["gold"]),
                "flexible_match": float(flexible == example["gold"])}
