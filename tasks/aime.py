"""AIME 2024 and 2025 (American Invitational Mathematics Examination): 30 problems a year.

Every answer is an integer 0..999. Data, under `<HARNESS_DATA_DIR>/aime/` (see
../shared/data/aime/SOURCE.md):
  aime_2024/test.jsonl                        Qwen2.5-Math's copy (30 rows, I and II; the
                                              part and number come from the AoPS `url`)
  aime_2025/aime_2025_{I,II}/answers.csv      MathArena (`id,answer`) + problems/<id>.tex
or from the hub: `HuggingFaceH4/aime_2024` split `train`, `opencompass/AIME2025` configs
`AIME2025-I` / `AIME2025-II` split `test`. Ids: `aime-2025-I-03`. The model is asked to put
the answer in \\boxed{}; `quality` compares integers (the last boxed answer, or the last
number in the text when nothing is boxed). Zero-padded answers ("033") are integers.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from harness.errors import ConfigError
from tasks.answers import last_boxed, last_number, normalize_aime
from tasks.base import Task, load_hub, read_jsonl

INSTRUCTION = ("\n\nPlease reason step by step, and put your final answer within \\boxed{}.\n"
               "The answer is an integer between 0 and 999 inclusive.")
YEARS = (2024, 2025)
PARTS = ("I", "II")
_URL = re.compile(r"(\d{4})_AIME_(I{1,2})_Problems/Problem_(\d+)")


class AIME(Task):
    name = "aime"
    version = "1"
    data_dir = "aime"

    def __init__(self, limit=None, path=None, years: list = (2024, 2025), parts: list = ("I", "II"), prompting=None):
        super().__init__(limit, path, prompting=prompting)
        self.years = [int(y) for y in ([years] if isinstance(years, (int, str)) else years)]
        self.parts = [str(p) for p in ([parts] if isinstance(parts, str) else parts)]
        bad_y = [y for y in self.years if y not in YEARS]
        bad_p = [p for p in self.parts if p not in PARTS]
        if bad_y or not self.years:
            raise ConfigError(f"task {self.name}: years must be a non-empty subset of {list(YEARS)}, "
                              f"got {list(self.years)}")
        if bad_p or not self.parts:
            raise ConfigError(f"task {self.name}: parts must be a non-empty subset of {list(PARTS)}, "
                              f"got {list(self.parts)}")

    def hub_source(self):
        src = {2024: "HuggingFaceH4/aime_2024:train", 2025: "opencompass/AIME2025:test"}
        return " + ".join(src[y] for y in self.years)

    def describe(self):
        return {**super().describe(), "years": self.years, "parts": self.parts}

    # ------------------------------------------------------------------ data
    def _files(self, root: Path) -> list[Path]:
        files = []
        if 2024 in self.years:
            files.append(root / "aime_2024" / "test.jsonl")
        if 2025 in self.years:
            for p in self.parts:
                d = root / "aime_2025" / f"aime_2025_{p}"
                files += [d / "answers.csv", d / "problems"]
        return files

    def check_data(self):
        root = self.local_dir()
        if root is not None:
            missing = [str(f) for f in self._files(root) if not f.exists()]
            if missing:
                raise ConfigError(f"task {self.name}: missing data: {', '.join(missing)}")

    def _row(self, year, part, number, problem, answer, where) -> dict:
        gold = normalize_aime(answer)
        if gold is None:
            raise ConfigError(f"task {self.name}: {where}: answer {answer!r} is not an integer")
        if not str(problem).strip():
            raise ConfigError(f"task {self.name}: {where}: empty problem")
        return {"id": f"aime-{year}-{part}-{number:02d}", "year": year, "part": part, "number": number,
                "problem": str(problem).strip(), "answer": gold}

    def _load_2024(self, root: Path | None) -> list[dict]:
        if root is None:
            rows = load_hub(self.name, "HuggingFaceH4/aime_2024", None, "train")
            where = [f"HuggingFaceH4/aime_2024 row {i}" for i in range(1, len(rows) + 1)]
        else:
            f = root / "aime_2024" / "test.jsonl"
            if not f.is_file():
                raise ConfigError(f"task {self.name}: data file '{f}' not found")
            rows = read_jsonl(f, ("problem", "answer", "url"), self.name)
            with open(f, encoding="utf-8") as fh:  # line numbers of the non-blank lines
                where = [f"{f}:{n}" for n, line in enumerate(fh, 1) if line.strip()]
        out = []
        for r, w in zip(rows, where):
            m = _URL.search(str(r.get("url", "")))
            if not m or int(m.group(1)) != 2024:
                raise ConfigError(f"task {self.name}: {w}: cannot read year/part/number from url "
                                  f"{r.get('url')!r}")
            if m.group(2) in self.parts:
                out.append(self._row(2024, m.group(2), int(m.group(3)), r["problem"], r["answer"], w))
        return out

    def _load_2025(self, root: Path | None, part: str) -> list[dict]:
        out = []
        if root is None:
            rows = load_hub(self.name, "opencompass/AIME2025", f"AIME2025-{part}", "test")
            for i, r in enumerate(rows, 1):
                out.append(self._row(2025, part, i, r.get("question", ""), r.get("answer"),
                                     f"opencompass/AIME2025 AIME2025-{part} row {i}"))
            return out
        d = root / "aime_2025" / f"aime_2025_{part}"
        f = d / "answers.csv"
        if not f.is_file():
            raise ConfigError(f"task {self.name}: data file '{f}' not found")
        with open(f, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:2]] != ["id", "answer"]:
                raise ConfigError(f"task {self.name}: {f}:1: expected the header 'id,answer', got {header}")
            for row in reader:
                w = f"{f}:{reader.line_num}"
                if not row or not any(c.strip() for c in row):
                    continue
                if len(row) != 2 or not row[0].strip().isdigit():
                    raise ConfigError(f"task {self.name}: {w}: expected '<problem number>,<answer>', got {row}")
                number = int(row[0])
                tex = d / "problems" / f"{number}.tex"
                if not tex.is_file():
                    raise ConfigError(f"task {self.name}: {w}: problem file '{tex}' not found")
                out.append(self._row(2025, part, number, tex.read_text(encoding="utf-8"), row[1], w))
        return out

    def load(self) -> list[dict]:
        root = self.local_dir()
        if root is not None and not root.is_dir():
            raise ConfigError(f"task {self.name}: path '{root}' must be a folder holding aime_2024/ "
                              "and/or aime_2025/")
        out = []
        for year in self.years:
            if year == 2024:
                out += self._load_2024(root)
            else:
                for part in self.parts:
                    out += self._load_2025(root, part)
        out.sort(key=lambda e: (e["year"], PARTS.index(e["part"]), e["number"]))
        ids = [e["id"] for e in out]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ConfigError(f"task {self.name}: duplicate problems {', '.join(dup)}")
        return out[: self.limit] if self.limit else out

    def prompt(self, example):
        return [{"role": "user", "content": example["problem"] + INSTRUCTION}]

    votes = True

    def extract_answer(self, output):
        """As in `score`: the boxed integer, else the last number when nothing is boxed."""
        boxed = last_boxed(output)
        return normalize_aime(boxed) if boxed is not None else normalize_aime(last_number(output or ""))

    def gold_output(self, example):
        return f"The answer is \\boxed{{{example['answer']}}}."

    def score(self, example, output):
        boxed = last_boxed(output)
        strict = normalize_aime(boxed)
        flexible = normalize_aime(last_number(output or ""))
        extracted = strict if boxed is not None else flexible  # a non-integer box is wrong
        gold = example["answer"]
        return {"quality": float(extracted == gold), "extracted": extracted,
                "strict_match": float(strict == gold), "flexible_match": float(flexible == gold),
                "year": example["year"], "part": example["part"]}
