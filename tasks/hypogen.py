"""HypoGen (Sparks of Science, O'Neill et al. 2025, arXiv 2504.12976): scientific hypothesis
generation as conditional generation over the Bit-Flip-Spark schema.

Bit = the conventional assumption, Flip = the counterproposal, Spark = the key insight. As in the
paper, the model is given only the Bit and writes the Flip (and its Spark). Data: the hub dataset
UniverseTBD/hypogen-dr1 (the id the paper gives) or `$HARNESS_DATA_DIR/hypogen/` (`*.jsonl`,
`*.json` or `*.parquet`) or `task.path`. The data are NOT available offline on this project's
machines: a run needs the hub or a local copy; the tests build a small fixture in the same schema.
Field names are configurable (`fields`), matched case-insensitively; a missing field is one clear
error listing the columns the file has.

Scoring is an LLM judge, as the paper evaluates (pairwise judging of hypotheses for novelty,
feasibility / practicality and overall quality against another hypothesis for the same Bit).
Here the other hypothesis is the paper's reference Flip, and the judge is an offline packed model
(`judge: <conf/model name>`). Each comparison is asked in both orders (generated as Flip A and as
Flip B) to cancel position bias; the judge's verdict is the more probable of the two answer
tokens after "Answer: Flip" (one forward; the paper's judge writes its scores, then its choice).
quality = the share of the two orders in which the generated hypothesis is judged at least as
good as the reference: 1 = preferred in both orders, 0.5 = split, 0 = the reference both times.
An output identical to the reference is a tie (1.0, no judge call); an empty one loses (0.0).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness.errors import ConfigError
from tasks.base import Task, load_hub

HUB_ID = "UniverseTBD/hypogen-dr1"
SYSTEM = ("You help scientists generate hypotheses with the Bit-Flip-Spark schema. The Bit is the "
          "conventional assumption of a research area; the Flip is the counterproposal that overturns it; "
          "the Spark is the key insight that makes the Flip work.")
USER = ("Bit: {bit}\n\nPropose the Flip: the counterproposal to this Bit, in two or three sentences. "
        "Then give the Spark on a last line starting with 'Spark:'.")
JUDGE = ("You compare two research hypotheses (Flips) that answer the same Bit (a conventional assumption).\n\n"
         "Bit: {bit}\n\nFlip A: {a}\n\nFlip B: {b}\n\n"
         "Judge novelty (a new idea?), feasibility (can it be done?) and overall quality. "
         "Which Flip is better overall? Answer with A or B.\nAnswer: Flip")
DEFAULT_FIELDS = {"bit": "bit", "flip": "flip", "spark": "spark", "id": None}


def _flip_of(output: str) -> str:
    """The Flip part of an output (everything before a 'Spark:' line)."""
    lines = output.strip().splitlines()
    keep = []
    for line in lines:
        if line.strip().lower().startswith("spark:"):
            break
        keep.append(line)
    text = " ".join(x.strip() for x in keep).strip()
    return text[len("flip:"):].strip() if text.lower().startswith("flip:") else text


class LMJudge:
    """A packed (or tiny) causal LM asked 'A or B?': verdict by comparing the next-token logits.

    The judge's model is built from its conf/model/ config through harness.models.ModelSpec, as
    the runner builds the policy; the task imports no engine and never sees the policy model."""

    def __init__(self, model: str):
        self.model_name = model
        self._engine = None

    def _load(self):
        if self._engine is None:
            from hydra.utils import instantiate
            from omegaconf import OmegaConf

            path = Path(__file__).resolve().parents[1] / "conf" / "model" / f"{self.model_name}.yaml"
            if not path.exists():
                raise ConfigError(f"task hypogen: judge model config '{self.model_name}' not found in conf/model/")
            self._engine = instantiate(OmegaConf.load(path), _convert_="all").load()
            enc = self._engine.encode
            a, b = enc("Flip A"), enc("Flip B")
            if a[:-1] != b[:-1] or a[-1] == b[-1]:
                raise ConfigError(f"task hypogen: judge {self.model_name}'s tokenizer does not split 'A' / 'B' "
                                  "into single final tokens")
            self._ab = (a[-1], b[-1])
        return self._engine

    def prefers_a(self, bit: str, a: str, b: str) -> bool:
        import torch

        eng = self._load()
        ids = eng.render([{"role": "user", "content": JUDGE.format(bit=bit, a=a, b=b)}])
        with torch.no_grad():
            logits = eng.model(input_ids=torch.tensor([ids], device=eng.model.device)).logits[0, -1]
        return bool(logits[self._ab[0]] >= logits[self._ab[1]])


class HypoGen(Task):
    name = "hypogen"
    version = "1"
    data_dir = "hypogen"
    quality_metric = "judge_win_rate"
    secondary_metrics = ("judge_first", "judge_second")

    def __init__(self, limit=None, path=None, split: str = "test", judge: str = "qwen25_coder_05b",
                 fields: dict | None = None, prompting=None):
        super().__init__(limit, path, prompting=prompting)
        self.split, self.judge_name = split, judge
        self.fields = {**DEFAULT_FIELDS, **(fields or {})}
        self._judge = None

    def hub_source(self):
        return f"{HUB_ID}:{self.split}"

    def describe(self):
        return {**super().describe(), "split": self.split, "judge": self.judge_name, "fields": self.fields}

    def _files(self) -> list[Path] | None:
        local = self.local_dir()
        if local is None:
            return None
        files = [local] if local.is_file() else sorted(
            p for p in local.iterdir() if p.suffix in (".jsonl", ".json", ".parquet") and self.split in p.stem)
        if not files:
            raise ConfigError(f"task {self.name}: no {self.split} file (*.jsonl, *.json, *.parquet with "
                              f"'{self.split}' in its name) in {local}")
        return files

    def check_data(self):
        self._files()

    def _rows(self) -> tuple[str, list[dict]]:
        files = self._files()
        if files is None:
            return f"hub {HUB_ID}", load_hub(self.name, HUB_ID, None, self.split)
        rows = []
        for f in files:
            if f.suffix == ".parquet":
                import pandas as pd

                rows += pd.read_parquet(f).to_dict("records")
            elif f.suffix == ".json":
                data = json.loads(f.read_text())
                rows += data if isinstance(data, list) else data.get("data", [])
            else:
                rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        return ", ".join(map(str, files)), rows

    def load(self) -> list[dict]:
        source, rows = self._rows()
        out, seen = [], set()
        for i, row in enumerate(rows, 1):
            lower = {str(k).lower(): k for k in row}
            ex = {}
            for role, name in self.fields.items():
                if name is None:
                    continue
                key = lower.get(str(name).lower())
                if key is None:
                    if role == "spark":
                        ex[role] = ""
                        continue
                    raise ConfigError(f"task {self.name}: {source}: row {i} has no field '{name}' for the {role} "
                                      f"(columns: {', '.join(map(str, row))}; set task.fields.{role}=...)")
                ex[role] = str(row[key]).strip()
            ex["id"] = ex.pop("id", None) or f"hypogen-{i - 1:05d}-" + hashlib.sha1(ex["bit"].encode()).hexdigest()[:8]
            if ex["id"] in seen:
                raise ConfigError(f"task {self.name}: {source}: duplicate id {ex['id']!r}")
            seen.add(ex["id"])
            out.append(ex)
        return out[: self.limit] if self.limit else out

    def prompt(self, example):
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER.format(bit=example["bit"])}]

    def gold_output(self, example):
        return example["flip"] + (f"\nSpark: {example['spark']}" if example.get("spark") else "")

    def judge(self):
        if self._judge is None:
            self._judge = LMJudge(self.judge_name)
        return self._judge

    def score(self, example, output):
        flip = _flip_of(output)
        ref = example["flip"]
        if not flip:
            return {"quality": 0.0, "extracted": flip, "judge_first": 0.0, "judge_second": 0.0, "judged": False}
        if " ".join(flip.split()) == " ".join(ref.split()):
            return {"quality": 1.0, "extracted": flip, "judge_first": 1.0, "judge_second": 1.0, "judged": False}
        j = self.judge()
        first = 1.0 if j.prefers_a(example["bit"], flip, ref) else 0.0  # generated as Flip A
        second = 0.0 if j.prefers_a(example["bit"], ref, flip) else 1.0  # generated as Flip B
        return {"quality": (first + second) / 2, "extracted": flip, "judge_first": first, "judge_second": second,
                "judged": True}
