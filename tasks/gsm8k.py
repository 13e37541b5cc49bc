"""GSM8K (Cobbe et al. 2021): grade-school math word problems, final-number accuracy.

Data: hub `openai/gsm8k` config `main` split `test`, or `<HARNESS_DATA_DIR>/gsm8k/test.jsonl`
(see ../shared/data/gsm8k/SOURCE.md). Gold = the number after `####`. The model is asked to
reason step by step and end with `#### <number>`; `quality` is the harness's lenient extraction
(the last `####` number, else the last number); `strict_match` and `flexible_match` are
lm-evaluation-harness's gsm8k metrics of the same names, rule for rule (see `score`).
"""

from __future__ import annotations

import hashlib

from harness.errors import ConfigError
from tasks.answers import (LM_EVAL_FLEXIBLE, LM_EVAL_STRICT, last_number, lm_eval_exact_match, lm_eval_regex,
                           strict_final_number)
from tasks.base import Task, load_hub, read_jsonl

INSTRUCTION = ("Solve the following math word problem. Reason step by step, then give the final "
               "answer as a number on the last line in the form '#### <number>'.\n\n")


class GSM8K(Task):
    name = "gsm8k"
    version = "2"  # 2: strict_match / flexible_match are lm-eval's rules exactly (were lenient)
    data_dir = "gsm8k"
    secondary_metrics = ("strict_match", "flexible_match")

    def __init__(self, limit=None, path=None, config: str = "main", split: str = "test", prompting=None):
        super().__init__(limit, path, prompting=prompting)
        self.config, self.split = config, split

    def hub_source(self):
        return f"openai/gsm8k:{self.config}:{self.split}"

    def raw_rows(self, split: str | None = None) -> list[dict]:
        split = split or self.split
        local = self.local_dir()
        if local is None:
            return load_hub(self.name, "openai/gsm8k", self.config, split)
        if not local.is_dir():  # an explicit file is the test split; its train split is not known
            if split != self.split:
                raise ConfigError(f"task {self.name}: task.path is one file; few-shot needs the folder with "
                                  f"train.jsonl")
            return read_jsonl(local, ("question", "answer"), self.name)
        fname = {"main": f"{split}.jsonl", "socratic": f"{split}_socratic.jsonl"}[self.config]
        if not (local / fname).exists():
            raise ConfigError(f"task {self.name}: {local / fname} not found")
        return read_jsonl(local / fname, ("question", "answer"), self.name)

    def fewshot_pool(self) -> list[dict]:
        """GSM8K train problems, their full worked answers as the few-shot targets (lm-eval's gsm8k:
        train split, first_n, target = the answer field with its '#### N' line)."""
        return [{"id": f"{self.name}-train-{i:04d}", "question": r["question"], "answer": r["answer"],
                 "gold": strict_final_number(r["answer"])} for i, r in enumerate(self.raw_rows("train"))]

    def fewshot_target(self, example):
        return example["answer"]

    def load(self) -> list[dict]:
        out = []
        for i, r in enumerate(self.raw_rows()):
            gold = strict_final_number(r["answer"])
            if gold is None:
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
        """quality: the harness's lenient extraction (the last '####' number, '$', ',' and '.00'
        normalised, else the last number). strict_match / flexible_match: EXACTLY lm-eval's gsm8k
        filters and exact_match (tasks.answers.lm_eval_*): the first '#### N' with one space and
        no '$'; the last number-like run; compared after its regexes_to_ignore (',', '$', a
        trailing '.') as strings, so '18.00' != '18'. The reference after those regexes equals
        `gold` on every GSM8K train and test row (checked in tests/test_gsm8k_metrics.py)."""
        extracted = self.extract_answer(output)
        ref = example["gold"]
        strict = lm_eval_regex(output, LM_EVAL_STRICT, 0)
        flexible = lm_eval_regex(output, LM_EVAL_FLEXIBLE, -1)
        return {"extracted": extracted, "quality": float(extracted == ref),
                "strict_match": lm_eval_exact_match(strict, ref), "flexible_match": lm_eval_exact_match(flexible, ref),
                "lm_eval_strict": strict, "lm_eval_flexible": flexible}
