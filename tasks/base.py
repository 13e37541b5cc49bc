"""The Task contract: load -> prompt -> score. Tasks never see the engine.

    examples = task.load(limit)           # list of dicts, each with a unique string "id"
    messages = task.prompt(example)       # chat messages (the engine applies the template)
    stats    = task.score(example, text)  # {"quality": float, "extracted": ..., other sums}

Data comes from the Hugging Face hub id by default, or from `<HARNESS_DATA_DIR>/<data_dir>`
(or an explicit `path`) when set. Every task has a `version` that goes into every row.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from harness.errors import ConfigError


# prompting controls every task takes (`task.prompting.<key>`); all of them are part of the run identity
PROMPTING = {
    "chat_template": True,     # apply the model's chat template (false: plain text, lm-eval's layout)
    "system_prompt": None,     # a system message before everything else (null = none)
    "num_fewshot": 0,          # train-split exemplars before the question (first n, lm-eval's first_n)
    "stop": [],                # stop strings (lm-eval's `until`): the output ends where one appears
}


class Task:
    name = "task"
    version = "0"
    quality_metric = "accuracy"  # what "quality" means in this task's rows
    # secondary metrics in summaries / leaderboard CSV: a score key to average, or
    # "name=numerator/denominator" for a ratio of summed score keys (see harness.metrics)
    secondary_metrics: tuple[str, ...] = ()
    # which way each metric is better, declared by the task: {metric: "higher" | "lower"};
    # a metric not listed is higher-is-better. Recorded in meta.json; plots and labels follow it.
    directions: dict[str, str] = {}

    def __init__(self, limit: int | None = None, path: str | None = None, prompting: dict | None = None):
        self.limit = limit
        self.path = path
        unknown = set(prompting or {}) - set(PROMPTING)
        if unknown:
            raise ConfigError(f"task {self.name}: unknown prompting key(s) {', '.join(sorted(unknown))}; "
                              f"valid: {', '.join(PROMPTING)}")
        self.prompting = {**PROMPTING, **(prompting or {})}
        n = self.prompting["num_fewshot"]
        if not isinstance(n, int) or n < 0:
            raise ConfigError(f"task {self.name}: prompting.num_fewshot must be an integer >= 0, got {n!r}")
        stop = self.prompting["stop"]
        stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, Sequence) or not all(isinstance(x, str) and x for x in stop):  # a ListConfig too
            raise ConfigError(f"task {self.name}: prompting.stop must be a list of non-empty strings, got {stop!r}")
        self.prompting["stop"] = list(stop)
        self._shots = None

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """The stop strings every prompt carries (`task.prompting.stop`; empty = none)."""
        return tuple(self.prompting["stop"])

    def load(self) -> list[dict]:
        raise NotImplementedError

    def prompt(self, example: dict) -> list[dict]:
        raise NotImplementedError

    def score(self, example: dict, output: str) -> dict:
        raise NotImplementedError

    # ------------------------------------------------------------------ prompting (chat, system, few-shot)
    def messages(self, example: dict) -> list[dict]:
        """The whole chat the model reads: the system prompt, the few-shot turns (train-split
        examples, each a user turn and its answer as the assistant turn), then `prompt(example)`."""
        p = self.prompting
        msgs = [{"role": "system", "content": p["system_prompt"]}] if p["system_prompt"] else []
        for shot in self.fewshot_examples():
            msgs += [*self.prompt(shot), {"role": "assistant", "content": self.fewshot_target(shot)}]
        return msgs + self.prompt(example)

    def prompt_ids(self, engine, example: dict) -> tuple[list[int], list[dict]]:
        """(prompt token ids, the messages they came from) under this task's prompting settings."""
        msgs = self.messages(example)
        prefix = self.assistant_prefix(example)
        if self.prompting["chat_template"]:
            return engine.render(msgs) + (engine.encode(prefix) if prefix else []), msgs
        return engine.encode(self.plain_text(msgs) + prefix, special=True), msgs

    def assistant_prefix(self, example: dict) -> str:
        """Text the assistant turn starts with (prefilled after the generation prompt, e.g. the
        multi-hop paper's "\\boxed{"); the model's output is what follows it. Default: none."""
        return ""

    def plain_text(self, messages: list[dict]) -> str:
        """The prompt as plain text for `chat_template: false` (lm-eval's layout without a chat
        template): turns joined by a newline, each question-answer pair closed by a blank line."""
        out = ""
        for m in messages:
            if m["role"] == "system":
                out += m["content"] + "\n\n"
            elif m["role"] == "user":
                out += m["content"] + "\n"
            else:
                out += m["content"] + "\n\n"
        return out

    def fewshot_examples(self) -> list[dict]:
        """The first `num_fewshot` examples of the task's train split (lm-eval's first_n sampler:
        the same exemplars for every test example, so rows do not depend on the order)."""
        n = self.prompting["num_fewshot"]
        if not n:
            return []
        if self._shots is None:
            pool = self.fewshot_pool()
            if len(pool) < n:
                raise ConfigError(f"task {self.name}: num_fewshot={n} but the train split has {len(pool)} examples")
            self._shots = pool[:n]
        return self._shots

    def fewshot_pool(self) -> list[dict]:
        """Train-split examples (never test rows) in the shape `load()` returns."""
        raise ConfigError(f"task {self.name} has no train split to draw few-shot examples from "
                          f"(set task.prompting.num_fewshot=0)")

    def fewshot_target(self, example: dict) -> str:
        """The assistant turn of a few-shot example (default: the task's gold output)."""
        return self.gold_output(example)

    def gold_output(self, example: dict) -> str:
        """A model output this task scores as correct (the contract test checks that it scores
        best and that an empty output scores worst)."""
        raise NotImplementedError

    def prompt_structure(self, example: dict) -> dict:
        """Task-provided structure the strategies may read besides the prompt (keys of
        harness.decoding.Prompt, e.g. {"nbest": [...]}); never the gold answer."""
        return {}

    def direction(self, metric: str | None = None) -> str:
        """'higher' or 'lower': which way `metric` (default: the quality metric) is better."""
        d = self.directions.get(metric or self.quality_metric, "higher")
        if d not in ("higher", "lower"):
            raise ConfigError(f"task {self.name}: direction of {metric} must be 'higher' or 'lower', got {d!r}")
        return d

    # ------------------------------------------------------------------ answers (for voting / search)
    # Strategies that vote or search over answers get these two functions (never the gold).
    votes = False  # True when extract_answer / same_answer are meaningful for this task

    def extract_answer(self, output: str):
        """The final answer in a model output (hashable; None when there is none)."""
        raise ConfigError(f"task {self.name} defines no final answer to vote on")

    def same_answer(self, a, b) -> bool:
        """Whether two extracted answers are equivalent (exact equality unless overridden)."""
        return a == b

    def check_data(self) -> None:
        """Fail early (before any model loads) when the configured data cannot be found."""
        self.local_dir()

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "source": str(self.local_dir() or self.hub_source())}

    def hub_source(self) -> str:
        return ""

    # ------------------------------------------------------------------ data location
    data_dir = ""  # folder name under HARNESS_DATA_DIR

    def local_dir(self) -> Path | None:
        """The local data folder in use, or None to use the hub."""
        if self.path:
            p = Path(self.path)
            if not p.exists():
                raise ConfigError(f"task {self.name}: data path '{p}' does not exist")
            return p
        root = os.environ.get("HARNESS_DATA_DIR")
        if root and self.data_dir:
            p = Path(root) / self.data_dir
            if not p.is_dir():
                raise ConfigError(f"task {self.name}: data folder '{p}' not found "
                                  f"(HARNESS_DATA_DIR={root}); unset it to load from the hub")
            return p
        return None


def read_jsonl(path: Path, required: tuple[str, ...], task: str) -> list[dict]:
    """Read a JSON-lines file; a malformed row raises a ConfigError naming file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"task {task}: {path}:{i}: not valid JSON ({e.msg})") from None
            missing = [k for k in required if k not in row]
            if missing:
                raise ConfigError(f"task {task}: {path}:{i}: missing field(s) {', '.join(missing)}")
            rows.append(row)
    return rows


def load_hub(task: str, hub_id: str, config: str | None, split: str) -> list[dict]:
    """Rows of a hub dataset split; a clear error when the hub cannot be reached."""
    try:
        import datasets

        ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as e:  # offline, unknown id, ...: one line, with the way out
        raise ConfigError(f"task {task}: cannot load {hub_id} ({config}, {split}) from the hub: "
                          f"{e.__class__.__name__}; set HARNESS_DATA_DIR to a local copy") from None
    return [dict(r) for r in ds]
