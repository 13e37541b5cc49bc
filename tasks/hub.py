"""A task for any dataset: a hub id (or a local folder / file), a prompt template over its fields,
the answer field, and a metric chosen from the harness's metrics (lm-eval's YAML tasks, as one
config):

    python -m harness task=hub task.dataset=openai/gsm8k task.config=main task.split=test \\
        'task.prompt="Question: {question}\\nAnswer:"' task.answer=answer task.metric=last_number
    python -m harness task=hub task.path=DIR task.split=test task.prompt='{q}' task.answer=a \\
        task.metric=exact_match

Local data: `task.path` is a file (.jsonl / .json / .csv / .parquet) or a folder holding
`<split>.<ext>` (and `train.<ext>` for few-shot). Ids: the `id_field` column when given, else
the row index + a hash of the rendered prompt. The gold is `answer` (a field name or a template
over the fields, e.g. '{answer}'); a list-valued answer field holds several acceptable answers.

Metrics (`metric`): exact_match (SQuAD-normalised equality; max over golds), contains (a gold
appears in the output, normalised), f1 (SQuAD token F1), last_number (the last number in the
output equals the gold's, as GSM8K's flexible extraction), boxed_math (the last \\boxed{} answer,
math-verify equivalence), wer (jiwer word error rate, lower is better), bleu (sentence BLEU,
harness.metrics), rouge_l (rouge_score ROUGE-L F, stemmed), and evaluate:<name> (Hugging Face
`evaluate.load(name)`: needs its module from the hub or the evaluate cache; refused before any
model loads when it cannot be loaded).
"""

from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path

from harness.errors import ConfigError
from tasks.base import Task, load_hub

METRICS = ("exact_match", "contains", "f1", "last_number", "boxed_math", "wer", "bleu", "rouge_l")
EXTS = (".jsonl", ".json", ".csv", ".parquet")


def _fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def read_table(path: Path, task: str) -> list[dict]:
    """Rows of a local .jsonl / .json / .csv / .parquet file."""
    if path.suffix == ".jsonl":
        from tasks.base import read_jsonl

        return read_jsonl(path, (), task)
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):  # {"data": [...]} or {"split": [...]}
            data = next((v for v in data.values() if isinstance(v, list)), [])
        return [dict(r) for r in data]
    import pandas as pd

    df = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    return df.to_dict("records")


class HubTask(Task):
    name = "hub"
    version = "1"

    def __init__(self, limit=None, path=None, dataset: str | None = None, config: str | None = None,
                 split: str = "test", prompt: str = "{question}", answer: str = "answer",
                 metric: str = "exact_match", id_field: str | None = None, fewshot_split: str = "train",
                 name: str | None = None, prompting=None):
        super().__init__(limit, path, prompting=prompting)
        if not dataset and not path:
            raise ConfigError("task hub needs task.dataset=<hub id> or task.path=<local file or folder>")
        if metric not in METRICS and not str(metric).startswith("evaluate:"):
            raise ConfigError(f"task hub: metric '{metric}' is not one of {', '.join(METRICS)}, evaluate:<name>")
        if not _fields(prompt):
            raise ConfigError(f"task hub: the prompt template {prompt!r} names no field (write e.g. '{{question}}')")
        self.dataset, self.config, self.split = dataset, config, split
        self.template, self.answer_spec, self.metric = prompt, answer, metric
        self.id_field, self.fewshot_split = id_field, fewshot_split
        if name:
            self.name = str(name)
        self.quality_metric = metric.split(":", 1)[-1]
        self.directions = {self.quality_metric: "lower"} if metric == "wer" else {}
        self._evaluate = None

    # ------------------------------------------------------------------ data
    def hub_source(self):
        return f"{self.dataset}:{self.config}:{self.split}"

    def check_data(self) -> None:
        if self.path:
            self._local_file(self.split)
        if self.metric.startswith("evaluate:"):
            self._evaluate_module()

    def _local_file(self, split: str) -> Path:
        p = self.local_dir()
        if p.is_file():
            if split != self.split:
                raise ConfigError(f"task {self.name}: task.path is one file; few-shot needs a folder with "
                                  f"{self.fewshot_split}.<ext>")
            return p
        for ext in EXTS:
            if (p / f"{split}{ext}").exists():
                return p / f"{split}{ext}"
        raise ConfigError(f"task {self.name}: no {split}{{{','.join(EXTS)}}} in {p}")

    def _rows(self, split: str) -> list[dict]:
        if self.path:
            return read_table(self._local_file(split), self.name)
        return load_hub(self.name, self.dataset, self.config, split)

    def _examples(self, rows: list[dict], split: str) -> list[dict]:
        need = set(_fields(self.template)) | (set(_fields(self.answer_spec)) or {self.answer_spec})
        out = []
        for i, r in enumerate(rows):
            missing = sorted(k for k in need if k not in r)
            if missing:
                raise ConfigError(f"task {self.name}: {split} row {i} has no field(s) {', '.join(missing)}; "
                                  f"it has {', '.join(map(str, r))}")
            text = self.template.format(**r).replace("\\n", "\n")
            gold = self.answer_spec.format(**r) if _fields(self.answer_spec) else r[self.answer_spec]
            golds = [str(g) for g in gold] if isinstance(gold, (list, tuple)) else [str(gold)]
            rid = str(r[self.id_field]) if self.id_field else \
                f"{split}-{i:05d}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
            out.append({"id": rid, "text": text, "golds": golds})
        return out

    def load(self) -> list[dict]:
        ex = self._examples(self._rows(self.split), self.split)
        return ex[: self.limit] if self.limit else ex

    def fewshot_pool(self) -> list[dict]:
        return self._examples(self._rows(self.fewshot_split), self.fewshot_split)

    # ------------------------------------------------------------------ prompt / score
    def prompt(self, example):
        return [{"role": "user", "content": example["text"]}]

    def gold_output(self, example):
        g = example["golds"][0]
        return f"\\boxed{{{g}}}" if self.metric == "boxed_math" else g

    def _evaluate_module(self):
        if self._evaluate is None:
            name = self.metric.split(":", 1)[1]
            try:
                import evaluate

                self._evaluate = evaluate.load(name)
            except Exception as e:
                raise ConfigError(f"task {self.name}: evaluate.load('{name}') failed ({e.__class__.__name__}: "
                                  f"{str(e).splitlines()[0][:120]}); it needs the hub or the evaluate cache, "
                                  f"or choose one of {', '.join(METRICS)}") from None
        return self._evaluate

    def score(self, example, output):
        from tasks import qa_metrics as Q

        golds, m = example["golds"], self.metric
        if m == "exact_match":
            q = Q.max_over_golds(Q.squad_em, output, golds)
            return {"extracted": output.strip(), "quality": q}
        if m == "contains":
            return {"extracted": None, "quality": Q.substring_em(output, golds)}
        if m == "f1":
            return {"extracted": output.strip(), "quality": Q.max_over_golds(Q.squad_f1, output, golds)}
        if m == "last_number":
            from tasks.answers import last_number, normalize_number

            got = last_number(output)
            return {"extracted": got, "quality": float(any(got is not None and got == (normalize_number(g)
                                                               or last_number(g)) for g in golds))}
        if m == "boxed_math":
            from tasks.answers import last_boxed, math_equal

            got = last_boxed(output)
            return {"extracted": got, "quality": float(any(math_equal(g, got) for g in golds))}
        if m == "wer":
            import jiwer

            return {"extracted": output.strip(), "quality": min(jiwer.wer(g, output.strip() or "<empty>") for g in golds)}
        if m == "bleu":
            from harness.metrics import sentence_bleu

            return {"extracted": output.strip(), "quality": sentence_bleu(output.strip(), golds)}
        if m == "rouge_l":
            try:
                from rouge_score import rouge_scorer
            except ImportError:
                return {"extracted": None, "quality": None, "unavailable": "rouge_score is not installed"}
            sc = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
            return {"extracted": output.strip(),
                    "quality": max(sc.score(g, output)["rougeL"].fmeasure for g in golds)}
        res = self._evaluate_module().compute(predictions=[output.strip()], references=[golds])
        key = next(iter(res))
        return {"extracted": output.strip(), "quality": float(res[key]), "evaluate": res}
