"""ParallelBench (Kang, Galim, Oh et al. 2025, "ParallelBench: Understanding the Trade-offs of
Parallel Decoding in Diffusion LLMs", arXiv 2510.04767): 17 tasks (+ the n = 15 Waiting Line
variants and the W2S word-count variants) built so that decoding tokens in parallel hurts.

Data: `<HARNESS_DATA_DIR>/parallelbench/output/test/<subtask>.jsonl` plus that folder's
`task_config.yaml` (see ../shared/data/parallelbench/SOURCE.md), or an explicit `path` (the
parallelbench folder, its output/test folder, or one .jsonl with task_config.yaml beside it).
There is NO hub source for these (paper-era) files: without HARNESS_DATA_DIR or `path` the task
raises a ConfigError. The synthetic files can be regenerated with tools/parallelbench_gen.py.

Prompt: `task_config[subtask]["prompt"].format(**row["input"])` with every literal "\\n" (backslash,
n) replaced by a newline. Chat = for each ICL example [user: its prompt, assistant: its answer (a
string, or answer["example"])], then [user: the row's prompt].

Note (a fact of the data, kept): Sort's gold is Python sorted() of the "First Last" strings, i.e. by
first name, although the prompt asks for "alphabetically by last name".

Scoring (dataset/parallel_bench/metrics.py of furiosa-ai/ParallelBench @72de8f7, per sample):
  list parsing (non-strict)  text after the LAST "[" and before the next "]", split on ",", items
                             whose whitespace-strip is empty dropped, then each stripped of spaces
                             and double quotes (so `""` stays as an empty item, a newline is not
                             stripped). Strict (quality_strict): needs "[" and "]", items joined
                             by ", " and each wrapped in double quotes with none inside.
  list_match_score           parsed prediction == parsed gold list
  list_shuffle_score         sorted(pred) == sorted(input) and pred != input
  list_random_insert_score   pred with the first `word` removed == input (any position)
  list_random_remove_score   len(pred) == len(input)-1, set(input)-set(pred) is one name, and input
                             without that name == pred (order kept)
  list_random_replace_score  same length; writing `word` into input at pred.index(word) gives pred
  latin_square_score         non-empty lines whose comma-separated cells form exactly the symbol
                             set; >= n of them; the first n: every row and (zip) column = the set
  sudoku_score               spaces and commas removed; lines with exactly 4 digits are rows;
                             exactly 4 such rows must equal the solution grid
  sentence_to_words_score    paper: inclusion (every word a substring) AND grammar (LanguageTool)
  summary_score              paper: ROUGE-L F (HF evaluate rouge, use_stemmer) x grammar
  paraphrase_score           paper: (1 - BLEU vs source) x BERTScore-F1 vs source x grammar

Offline parts: LanguageTool grammar and BERTScore cannot run here, so they are None and listed in
the stats' "unavailable"; `quality` is the available component and "quality_definition" says
exactly what it is (W2S: inclusion; samsum: ROUGE-L F1; paraphrase: 1 - BLEU vs source).
"paper_score" is the paper's composite where the available parts already decide it (it is 0
when inclusion / ROUGE-L / 1-BLEU is 0 or the output is empty), else None. BLEU is a
re-implementation of HF evaluate's "bleu" (sacrebleu 13a tokenizer + the tensorflow/nmt
compute_bleu, max order 4, no smoothing). ROUGE uses `rouge_score` with the Porter stemmer
(= HF evaluate's rouge; a declared dependency: without it a summary row is an error row naming
it); `rouge_builtin` (rouge_score's tokenisation, no stemming) is only the tests' cross-check.
Rows written before 2026-12-02 may say rouge_impl "builtin": the row records which.
"""

from __future__ import annotations

import ast
import collections
import json
import math
import re
from functools import lru_cache
from pathlib import Path

from harness.errors import ConfigError
from tasks.base import Task

LIST_METRICS = {"list_match_score", "list_shuffle_score", "list_random_insert_score",
                "list_random_remove_score", "list_random_replace_score"}
METRICS = LIST_METRICS | {"latin_square_score", "sudoku_score", "sentence_to_words_score",
                          "summary_score", "paraphrase_score"}
QUALITY_METRIC = {"sentence_to_words_score": "inclusion", "summary_score": "rougeL_f1",
                  "paraphrase_score": "inv_bleu"}
DEFINITION = {
    "list_match_score": "paper metric: exact list match (non-strict list parsing)",
    "list_shuffle_score": "paper metric: same names as the input in a different order",
    "list_random_insert_score": "paper metric: input plus the new name at any position",
    "list_random_remove_score": "paper metric: input minus exactly one name, order kept",
    "list_random_replace_score": "paper metric: input with exactly one position replaced by the new name",
    "latin_square_score": "paper metric: any valid Latin square over the given symbols",
    "sudoku_score": "paper metric: the 4x4 grid equals the unique solution",
    "sentence_to_words_score": "inclusion only (every required word is a substring of the output); "
                               "paper score = inclusion AND grammar, grammar (LanguageTool) unavailable offline",
    "paraphrase_score": "1 - BLEU of the output vs the source sentence (HF evaluate bleu: 13a tokens, "
                        "order 4, no smoothing) only; paper score = (1 - BLEU) x BERTScore-F1 x grammar, "
                        "BERTScore and grammar (LanguageTool) unavailable offline",
}
UNAVAILABLE = {"sentence_to_words_score": ["grammar"], "summary_score": ["grammar"],
               "paraphrase_score": ["bertscore", "grammar"]}


# ---------------------------------------------------------------------------------- list metrics
def parse_list(text: str, strict: bool = False) -> list[str] | None:
    """The list in a model output (see the module docstring); None when strict parsing fails."""
    if "[" in text:
        text = text.rsplit("[", 1)[1]
    elif strict:
        return None
    if "]" in text:
        text = text.split("]", 1)[0]
    elif strict:
        return None
    if not strict:
        return [item.strip('" ') for item in text.strip("[]").split(",") if item.strip()]
    items = []
    for item in text.split(", "):
        if not (item.startswith('"') and item.endswith('"')) or '"' in item[1:-1]:
            return None
        items.append(item[1:-1])
    return items


def list_match(pred: list[str] | None, gold: list[str]) -> float:
    return float(pred is not None and pred == gold)


def list_shuffle(pred: list[str] | None, inp: list[str]) -> float:
    return float(pred is not None and sorted(pred) == sorted(inp) and pred != inp)


def list_random_insert(pred: list[str] | None, inp: list[str], word: str) -> float:
    if pred is None or word not in pred:
        return 0.0
    rest = list(pred)
    rest.remove(word)
    return float(rest == inp)


def list_random_remove(pred: list[str] | None, inp: list[str]) -> float:
    if pred is None or len(pred) != len(inp) - 1:
        return 0.0
    gone = set(inp) - set(pred)
    if len(gone) != 1:
        return 0.0
    rest = list(inp)
    rest.remove(gone.pop())
    return float(rest == pred)


def list_random_replace(pred: list[str] | None, inp: list[str], word: str) -> float:
    if pred is None or len(pred) != len(inp) or word not in pred:
        return 0.0
    expect = list(inp)
    expect[pred.index(word)] = word
    return float(pred == expect)


# ------------------------------------------------------------------------------- puzzle metrics
def latin_rows(text: str, symbols: list[str]) -> list[list[str]] | None:
    """The first n lines whose cells form exactly the symbol set (None when fewer than n)."""
    want, n = set(symbols), len(set(symbols))
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    lines = [ln for ln in lines if {c.strip() for c in ln.split(",")} == want]
    if len(lines) < n:
        return None
    return [[c.strip() for c in ln.split(",")] for ln in lines[:n]]


def latin_square(text: str, symbols: list[str], first_row: list[str] | None = None) -> float:
    rows, want = latin_rows(text, symbols), set(symbols)
    if rows is None:
        return 0.0
    if any(set(r) != want for r in rows) or any(set(c) != want for c in zip(*rows)):
        return 0.0
    return float(first_row is None or rows[0] == first_row)


def parse_sudoku(text: str, n: int = 4, strict: bool = False) -> list[list[int]] | None:
    text = text.strip()
    if strict:
        lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
        if len(lines) != n or any(len(ln) != n for ln in lines):
            return None
        try:
            return [[int(ch) for ch in ln] for ln in lines]
        except ValueError:
            return None
    text = text.replace(" ", "").replace(",", "")
    grid = []
    for ln in (ln.strip() for ln in text.split("\n")):
        digits = [int(d) for d in re.findall(r"\d", ln)]
        if ln and len(digits) == n:
            grid.append(digits)
    return grid if len(grid) == n else None


# --------------------------------------------------------------------------------- text metrics
class _Tokenizer13a:
    """sacrebleu's 13a tokenizer as vendored in HF evaluate's bleu metric (returns tokens)."""

    _re = [(re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),
           (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),
           (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),
           (re.compile(r"([0-9])(-)"), r"\1 \2 ")]

    def __call__(self, line: str) -> list[str]:
        line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
        if "&" in line:
            line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
        line = f" {line} "
        for rx, repl in self._re:
            line = rx.sub(repl, line)
        return line.split()


_tok13a = _Tokenizer13a()


def _ngrams(tokens: list[str], max_order: int) -> collections.Counter:
    c: collections.Counter = collections.Counter()
    for k in range(1, max_order + 1):
        for i in range(len(tokens) - k + 1):
            c[tuple(tokens[i:i + k])] += 1
    return c


def sentence_bleu(prediction: str, references: list[str], max_order: int = 4) -> float:
    """HF evaluate `bleu` on one prediction (corpus BLEU of a one-sentence corpus, no smoothing)."""
    pred = _tok13a(prediction)
    refs = [_tok13a(r) for r in references]
    ref_counts: collections.Counter = collections.Counter()
    for r in refs:
        ref_counts |= _ngrams(r, max_order)
    overlap = _ngrams(pred, max_order) & ref_counts
    matches, possible = [0] * max_order, [0] * max_order
    for g, c in overlap.items():
        matches[len(g) - 1] += c
    for k in range(1, max_order + 1):
        possible[k - 1] = max(len(pred) - k + 1, 0)
    prec = [m / p if p > 0 else 0.0 for m, p in zip(matches, possible)]
    geo = math.exp(sum(math.log(p) / max_order for p in prec)) if min(prec) > 0 else 0.0
    ref_len = min(len(r) for r in refs)
    if not pred or not ref_len:
        return 0.0
    ratio = len(pred) / ref_len
    bp = 1.0 if ratio > 1.0 else math.exp(1 - 1 / ratio)
    return geo * bp


def _rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokenisation without the stemmer."""
    return [t for t in re.split(r"\s+", re.sub(r"[^a-z0-9]+", " ", text.lower())) if re.fullmatch(r"[a-z0-9]+", t)]


def _f(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_builtin(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measures (rouge_score's formulas and tokenisation, no stemming)."""
    p, t = _rouge_tokens(prediction), _rouge_tokens(reference)
    out = {}
    for n in (1, 2):
        pc = collections.Counter(tuple(p[i:i + n]) for i in range(len(p) - n + 1))
        tc = collections.Counter(tuple(t[i:i + n]) for i in range(len(t) - n + 1))
        ov = sum((pc & tc).values())
        out[f"rouge{n}"] = _f(ov / max(sum(pc.values()), 1), ov / max(sum(tc.values()), 1))
    if not p or not t:
        out["rougeL"] = 0.0
    else:
        lcs = _lcs(t, p)
        out["rougeL"] = _f(lcs / len(p), lcs / len(t))
    return out


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer  # noqa: PLC0415  (a declared dependency)

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge(prediction: str, reference: str) -> tuple[dict[str, float], str]:
    """ROUGE-1/2/L F as HF evaluate's rouge computes it (rouge_score, Porter stemmer). Without
    rouge_score the row is an error row naming it, never a silently different metric
    (`rouge_builtin` stays as the unstemmed cross-check the tests use)."""
    try:
        scorer = _rouge_scorer()
    except ImportError:
        raise RuntimeError("ROUGE unavailable: rouge_score is not installed (pip install rouge-score)") from None
    s = scorer.score(reference, prediction)
    return {k: float(v.fmeasure) for k, v in s.items()}, "rouge_score (use_stemmer=True)"


# ------------------------------------------------------------------------------------- the task
class ParallelBench(Task):
    name = "parallelbench"
    version = "1"
    data_dir = "parallelbench"
    secondary_metrics = ("quality_strict",)  # list and sudoku tasks: strict output format

    def __init__(self, limit=None, path=None, subtask: str = "waiting_line/copy", prompting=None):
        super().__init__(limit, path, prompting=prompting)
        self.subtask = str(subtask).strip().removesuffix(".jsonl")
        self._config: dict | None = None
        self.quality_metric = "accuracy"

    # ---------------------------------------------------------------- locating the files
    def hub_source(self):
        return ""

    def _root(self) -> Path:
        local = self.local_dir()
        if local is None:
            raise ConfigError(f"task {self.name}: these files have no hub source (the paper-era ParallelBench "
                              f"data ship only in github.com/furiosa-ai/ParallelBench); set HARNESS_DATA_DIR "
                              f"to a folder holding parallelbench/ or give task.path")
        return local

    def _file(self) -> Path:
        root = self._root()
        if root.is_file():
            return root
        for base in (root / "output" / "test", root):
            f = base / f"{self.subtask}.jsonl"
            if f.is_file() and (f.parent / "task_config.yaml").is_file():
                return f
        choices = self.choices(root)
        raise ConfigError(f"task {self.name}: unknown subtask '{self.subtask}' under {root} "
                          f"(choose from: {', '.join(choices) if choices else 'none found'})")

    @staticmethod
    def choices(root: Path) -> list[str]:
        """Subtasks with both a .jsonl file and an entry in their folder's task_config.yaml."""
        import yaml

        base = root / "output" / "test" if (root / "output" / "test").is_dir() else root
        out = []
        for cfg in sorted(base.glob("*/task_config.yaml")):
            try:
                keys = yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError:
                continue
            out += [k for k in keys if isinstance(k, str) and (base / f"{k}.jsonl").is_file()]
        return sorted(out)

    def config(self) -> dict:
        if self._config is None:
            import yaml

            f = self._file()
            cfg_file = f.parent / "task_config.yaml"
            if not cfg_file.is_file():
                raise ConfigError(f"task {self.name}: {cfg_file} not found (needed beside {f.name})")
            try:
                cfgs = yaml.safe_load(cfg_file.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as e:
                raise ConfigError(f"task {self.name}: {cfg_file}: not valid YAML ({e.__class__.__name__})") from None
            key = self.subtask if self.subtask in cfgs else f"{f.parent.name}/{f.stem}"
            cfg = cfgs.get(key)
            if not isinstance(cfg, dict) or not isinstance(cfg.get("prompt"), str):
                raise ConfigError(f"task {self.name}: {cfg_file} has no entry '{key}' with a prompt")
            if cfg.get("metric") not in METRICS:
                raise ConfigError(f"task {self.name}: {cfg_file}: '{key}' uses metric {cfg.get('metric')!r}, "
                                  f"not one of {', '.join(sorted(METRICS))}")
            self._config = cfg
            self.quality_metric = QUALITY_METRIC.get(cfg["metric"], "accuracy")
        return self._config

    def check_data(self):
        self.config()

    def describe(self):
        return {"name": self.name, "version": self.version, "subtask": self.subtask, "source": str(self._file())}

    # --------------------------------------------------------------------------- loading
    def load(self) -> list[dict]:
        cfg, f = self.config(), self._file()
        metric, slug = cfg["metric"], self.subtask.replace("/", "-")
        out = []
        with open(f, encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"task {self.name}: {f}:{i}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{where}: not valid JSON ({e.msg})") from None
                problem = _check_row(row, metric, cfg["prompt"])
                if problem:
                    raise ConfigError(f"{where}: {problem}")
                out.append({"id": f"{self.name}-{slug}-{len(out):04d}", "subtask": self.subtask, "metric": metric,
                            "input": row["input"], "answer": row["answer"], "metadata": row.get("metadata") or {}})
                if self.limit and len(out) >= self.limit:
                    break
        return out

    # ---------------------------------------------------------------------------- prompts
    def render(self, inp: dict) -> str:
        return self.config()["prompt"].format(**inp).replace("\\n", "\n")

    def prompt(self, example):
        msgs = []
        for icl in example["input"].get("icl_examples") or []:
            ans = icl["answer"]
            msgs += [{"role": "user", "content": self.render(icl["input"])},
                     {"role": "assistant", "content": ans if isinstance(ans, str) else ans["example"]}]
        msgs.append({"role": "user", "content": self.render(example["input"])})
        return msgs

    # ---------------------------------------------------------------------------- scoring
    def gold_output(self, example):
        return example["answer"] if isinstance(example["answer"], str) else str(example["answer"])

    def score(self, example, output):
        metric, ans, out = example["metric"], example["answer"], output or ""
        stats: dict = {"metric": metric, "quality_definition": DEFINITION.get(metric, "")}
        if metric in LIST_METRICS:
            pred, strict = parse_list(out), parse_list(out, strict=True)
            if metric == "list_match_score":
                gold = parse_list(ans)
                q, qs = list_match(pred, gold), list_match(strict, gold)
            elif metric == "list_shuffle_score":
                q, qs = list_shuffle(pred, ans["input"]), list_shuffle(strict, ans["input"])
            elif metric == "list_random_insert_score":
                q, qs = (list_random_insert(p, ans["input"], ans["word"]) for p in (pred, strict))
            elif metric == "list_random_remove_score":
                q, qs = list_random_remove(pred, ans["input"]), list_random_remove(strict, ans["input"])
            else:
                q, qs = (list_random_replace(p, ans["input"], ans["word"]) for p in (pred, strict))
            stats.update(quality=q, extracted=pred, quality_strict=qs)
        elif metric == "latin_square_score":
            rows = latin_rows(out, ans["symbols"])
            stats.update(quality=latin_square(out, ans["symbols"], ans.get("first_row")),
                         extracted="\n".join(",".join(r) for r in rows) if rows else None)
        elif metric == "sudoku_score":
            gold, grid, strict = parse_sudoku(ans, strict=True), parse_sudoku(out), parse_sudoku(out, strict=True)
            stats.update(quality=float(grid is not None and grid == gold),
                         quality_strict=float(strict is not None and strict == gold),
                         extracted="\n".join("".join(map(str, r)) for r in grid) if grid else None)
        elif metric == "sentence_to_words_score":
            missing = [w for w in ans["words"] if w not in out]
            inclusion = float(not missing)
            stats.update(quality=inclusion, extracted=out.strip(), inclusion_score=inclusion, missing_words=missing,
                         grammar_score=None, paper_score=0.0 if not inclusion else None)
        elif metric == "summary_score":
            pred = out.strip()
            r, impl = rouge(pred, ans["summary"].strip())
            stats.update(quality=r["rougeL"], extracted=pred, rouge1_score=r["rouge1"], rouge2_score=r["rouge2"],
                         rougeL_score=r["rougeL"], rouge_impl=impl, grammar_score=None,
                         paper_score=0.0 if (not pred or r["rougeL"] == 0) else None,
                         quality_definition=f"ROUGE-L F1 vs the reference summary only ({impl}); paper score = "
                                            f"ROUGE-L (HF evaluate rouge, use_stemmer) x grammar, grammar "
                                            f"(LanguageTool) unavailable offline")
        elif metric == "paraphrase_score":
            pred = out.strip()
            inv = 1.0 - sentence_bleu(pred, [ans["text"]]) if pred else 0.0
            stats.update(quality=inv, extracted=pred, inv_bleu_score=inv, bertscore_score=None, grammar_score=None,
                         paper_score=0.0 if inv == 0 else None)
        else:  # pragma: no cover (config() refuses unknown metrics)
            raise ConfigError(f"task {self.name}: no scorer for metric {metric}")
        if metric in UNAVAILABLE:
            stats["unavailable"] = list(UNAVAILABLE[metric])
        return stats


def _check_row(row, metric: str, prompt: str) -> str | None:
    """Why a row cannot be used (None when it is fine)."""
    if not isinstance(row, dict):
        return "a row must be a JSON object"
    missing = [k for k in ("input", "answer") if k not in row]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    inp, ans = row["input"], row["answer"]
    if not isinstance(inp, dict):
        return "'input' must be an object"
    try:
        prompt.format(**inp)
    except (KeyError, IndexError, ValueError) as e:
        return f"the prompt cannot be filled from 'input' ({e.__class__.__name__}: {e})"
    need = {"list_shuffle_score": ("input",), "list_random_insert_score": ("input", "word"),
            "list_random_remove_score": ("input",), "list_random_replace_score": ("input", "word"),
            "latin_square_score": ("symbols",), "sentence_to_words_score": ("words",),
            "summary_score": ("summary",), "paraphrase_score": ("text",)}.get(metric)
    if need is None:
        if not isinstance(ans, str):
            return f"'answer' must be a string for {metric}"
        if metric == "sudoku_score" and parse_sudoku(ans, strict=True) is None:
            return "'answer' is not a 4x4 digit grid"
    else:
        if not isinstance(ans, dict) or any(k not in ans for k in need):
            return f"'answer' must be an object with {', '.join(need)} for {metric}"
        for k in ("input", "symbols", "words"):
            if k in need and not (isinstance(ans[k], list) and all(isinstance(x, str) for x in ans[k])):
                return f"answer.{k} must be a list of strings"
        for k in ("word", "summary", "text"):
            if k in need and not isinstance(ans[k], str):
                return f"answer.{k} must be a string"
    icl = inp.get("icl_examples", [])
    if not isinstance(icl, list):
        return "input.icl_examples must be a list"
    for j, e in enumerate(icl):
        if not (isinstance(e, dict) and isinstance(e.get("input"), dict) and "answer" in e):
            return f"icl_examples[{j}] needs 'input' (object) and 'answer'"
        a = e["answer"]
        if not (isinstance(a, str) or (isinstance(a, dict) and isinstance(a.get("example"), str))):
            return f"icl_examples[{j}].answer must be a string or have a string 'example'"
        try:
            prompt.format(**e["input"])
        except (KeyError, IndexError, ValueError) as err:
            return f"icl_examples[{j}]: the prompt cannot be filled ({err.__class__.__name__}: {err})"
    return None


def reference_paraphrases(answer: dict) -> list[str]:
    """The 5 reference paraphrases of a chatgpt-paraphrases row (stored as a Python-repr string)."""
    ex = answer.get("examples", [])
    return list(ast.literal_eval(ex)) if isinstance(ex, str) else list(ex)
