"""MATH-500 (Lightman et al. 2023, "Let's Verify Step by Step"): 500 MATH test problems.

Data: hub `HuggingFaceH4/MATH-500` split `test`, or `<HARNESS_DATA_DIR>/math500/test.jsonl`
(byte-identical to openai/prm800k's math_splits/test.jsonl; see ../shared/data/math500/SOURCE.md).
The model is asked to reason step by step and put its final answer in \\boxed{}; `quality` is
1 when the last boxed answer is mathematically equal to the gold answer (math-verify, gold
first, in a worker process with a timeout; a timeout scores 0 and is counted in `verify`).
Every score keeps `subject` and `level` for breakdowns.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import ConfigError
from tasks.answers import decided_math_equal, last_boxed
from tasks.base import Task, load_hub, read_jsonl

INSTRUCTION = "\n\nPlease reason step by step, and put your final answer within \\boxed{}."
FIELDS = ("problem", "answer", "subject", "level", "unique_id")


class MATH500(Task):
    name = "math500"
    version = "1"
    data_dir = "math500"

    def __init__(self, limit=None, path=None, verify_timeout_s: float = 5.0, prompting=None):
        super().__init__(limit, path, prompting=prompting)
        self.verify_timeout_s = float(verify_timeout_s)

    def hub_source(self):
        return "HuggingFaceH4/MATH-500:test"

    def _file(self) -> Path | None:
        local = self.local_dir()
        if local is None:
            return None
        f = local / "test.jsonl" if local.is_dir() else local
        if not f.is_file():
            raise ConfigError(f"task {self.name}: data file '{f}' not found")
        return f

    def check_data(self):
        self._file()

    def raw_rows(self) -> list[dict]:
        f = self._file()
        if f is None:
            return load_hub(self.name, "HuggingFaceH4/MATH-500", None, "test")
        return read_jsonl(f, FIELDS, self.name)

    def load(self) -> list[dict]:
        out, seen = [], set()
        for i, r in enumerate(self.raw_rows(), 1):
            qid = str(r["unique_id"])
            if qid in seen:
                raise ConfigError(f"task {self.name}: row {i}: duplicate unique_id {qid!r}")
            seen.add(qid)
            out.append({"id": qid, "problem": r["problem"], "answer": str(r["answer"]),
                        "subject": r["subject"], "level": int(r["level"])})
        return out[: self.limit] if self.limit else out

    def prompt(self, example):
        return [{"role": "user", "content": example["problem"] + INSTRUCTION}]

    votes = True

    def extract_answer(self, output):
        return last_boxed(output)

    def same_answer(self, a, b) -> bool:
        """math-verify equivalence (in the worker, with the timeout); a timeout or crash raises
        UndecidableComparison, which voting counts (strategies/core/search.py)."""
        if a is None or b is None:
            return a is b
        return a == b or decided_math_equal(a, b, self.verify_timeout_s)[0]

    def gold_output(self, example):
        return f"The answer is \\boxed{{{example['answer']}}}."

    def score(self, example, output):
        """A timeout or crash of math-verify raises (an error row, never quality 0)."""
        extracted = self.extract_answer(output)
        ok, how = decided_math_equal(example["answer"], extracted, self.verify_timeout_s)
        return {"quality": float(ok), "extracted": extracted, "verify": how,
                "subject": example["subject"], "level": example["level"]}
