"""HyPoradise (Chen et al., NeurIPS 2023 D&B, arXiv 2309.15701): 5-best ASR hypotheses -> transcription.

Data: `<HARNESS_DATA_DIR>/hyporadise/test_<set>.json` (11 JSON arrays, see
../shared/data/hyporadise/SOURCE.md), or `path` (a folder of such files, or one file when one set
is selected), or the hub dataset `PeacefulData/HyPoradise-v0` (`test/test_<set>.json`, downloaded
with huggingface_hub; the hub copy has no `wsj`, only `wsj_score`). `sets` selects any of SETS.

WSJ appears twice: `wsj` and `wsj_score` hold the same 836 utterances and references (the same
1-best; the other hypotheses are re-ordered by ASR score in 194 rows). Only `wsj_score` is still
on the hub, so it is the default WSJ; selecting both at once is refused (it would count WSJ
twice). Ids are `<set>-<row:04d>-<hash>`, unique across all 11 sets.

Example: {"id", "set", "index", "nbest": 5 hypotheses (outer spaces stripped; the two
LibriSpeech files hold one empty hypothesis each), "reference", ["asr_scores"], ["demos"]}.

Prompt: the H2T prompt of the paper's code (Hypo2Trans H2T-LoRA template `prompt_h2t_nbest`),
with two changes: (1) one hypothesis per line instead of joined by ". " (hypotheses contain "."
tokens, so ". " cannot be split back), which makes the block parseable: `parse_nbest(text)`
recovers the N-best list from the (decoded) prompt, and is how the non-generative strategies
(nbest_first, nbest_rerank) read it -- strategies never see the example or the reference;
(2) one added sentence asking for the transcription alone on one line (zero-shot chat models).
`shots: k` adds k demonstrations as earlier user/assistant turns: the first k rows of
`shot_set` (default null = the example's own set) whose reference differs from the current
example's (this excludes the example itself and, in CHiME-4, the same sentence read again).
The `shots` demonstrations are TEST rows with their references: an in-context-learning setup,
not a held-out one. Held-out exemplars: `task.prompting.num_fewshot=k` takes the first k rows of
the ATIS train split (train_atis.json, the one train file of the offline copy; `fewshot_pool`),
and `train_examples("atis")` is what tools/train_h2t_lora.py fine-tunes the correction adapter on.

Scoring (`normalize`):
- "paper" (default): the normalisation of H2T-LoRA/inference.py, applied to output and reference
  alike: lower-case; delete every character matching [^\\w\\s] or a digit (so "twenty-eight" ->
  "twentyeight", "don't" -> "dont"; digits are dropped, not spelled out); keep the first
  non-empty line; split on whitespace.
- "none": whitespace tokens as they are (the data files are already normalised by Whisper's
  EnglishTextNormalizer + num2words); this is the WER of the data-generation script and the one
  that reproduces the README's o_nb column.
Per row: `quality` = `wer` = utterance WER = word edits / reference words (lower is better;
`quality_metric = "wer"`), plus `edits` and `ref_words` (summable: corpus WER = sum edits / sum
ref_words) and `set`. A run's mean quality is the paper's utterance-averaged WER;
`wer_by_set(rows)` gives both per set, `corpus_wer(refs, hyps)` computes it with jiwer.

Oracles are analysis, not strategies: an oracle needs the reference by definition, and a
strategy must never see it (it only gets the prompt). `oracle_report()` / the CLI
`python -m tasks.hyporadise oracle --set wsj_score [--normalize paper|none] [--limit N]` (default
`paper`, the task's own default, so a run's 1-best WER equals the oracle's 1-best column) compute
per set: 1-best, o_nb (best hypothesis of the list), o_cp (compositional oracle: best word
sequence through a ROVER-style confusion network of the 5 hypotheses, see `cn_oracle_edits`)
and a bag-of-words bound (a reference word is free if any hypothesis has that word anywhere;
<= any word-level composition). With normalize "none", o_nb matches the README within 0.1 on all
8 sets. The README's o_cp cannot be reproduced from these 5-best lists at the word level: even
the bag-of-words bound is above it (e.g. WSJ 3.2 vs 1.2), so the README's numbers must come from
longer lists or sub-word composition.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

from harness.errors import ConfigError
from harness.nbest import BEST, OTHER, RESPONSE, format_nbest, parse_nbest  # noqa: F401 (re-exported)
from tasks.base import Task

HUB_ID = "PeacefulData/HyPoradise-v0"
SETS = ("atis", "chime4", "coraal", "cv", "lrs2", "ls_clean", "ls_other", "swbd", "td3", "wsj", "wsj_score")
DEFAULT_SETS = ("wsj_score", "atis", "chime4", "td3", "cv", "swbd", "lrs2", "coraal", "ls_clean", "ls_other")
NOT_ON_HUB = frozenset({"wsj"})
ROWS = {"atis": 809, "chime4": 1320, "coraal": 170, "cv": 2000, "lrs2": 2259, "ls_clean": 2620, "ls_other": 2939,
        "swbd": 2000, "td3": 1155, "wsj": 836, "wsj_score": 836}  # per SOURCE.md
# Hypo2Trans README (@27824d9), WER %: (o_nb, o_cp); WSJ's row applies to both WSJ files.
README_ORACLES = {"wsj": (4.1, 1.2), "wsj_score": (4.1, 1.2), "atis": (5.2, 1.1), "chime4": (9.1, 2.8),
                  "td3": (3.0, 0.7), "cv": (11.4, 7.9), "swbd": (12.6, 4.2), "lrs2": (6.9, 2.6),
                  "coraal": (21.8, 10.7)}
NORMALIZE = ("paper", "none")
TRAIN_SETS = ("atis",)  # train files in the offline copy (SOURCE.md); the hub has more

INSTRUCTION = ("Below is the best-hypotheses transcribed from speech recognition system. Please try to revise it "
               "using the words which are only included into other-hypothesis, and write the response for the "
               "true transcription. Reply with the true transcription only, on a single line.\n\n")


# ---------------------------------------------------------------------------------- normalisation, WER
_PAPER_DROP = re.compile(r"[^\w\s]|\d")


def words(text: str, normalize: str = "paper") -> list[str]:
    """Word tokens for WER under `normalize` ("paper" or "none"; see the module docstring)."""
    if normalize == "none":
        return text.split()
    text = _PAPER_DROP.sub("", text.lower())
    for line in text.split("\n"):
        if line.strip():
            return line.split()
    return []


def edit_distance(hyp: list[str], ref: list[str]) -> int:
    """Word-level Levenshtein distance (rapidfuzz, the engine jiwer uses)."""
    from rapidfuzz.distance import Levenshtein

    return int(Levenshtein.distance(hyp, ref))


def corpus_wer(references: list[str], hypotheses: list[str], normalize: str = "paper") -> float:
    """Corpus WER with jiwer: total edits / total reference words, after `normalize`."""
    import jiwer

    refs = [" ".join(words(r, normalize)) for r in references]
    hyps = [" ".join(words(h, normalize)) for h in hypotheses]
    return float(jiwer.wer(refs, hyps))


def wer_by_set(rows: list[dict]) -> dict[str, dict]:
    """Utterance-averaged and corpus WER per set (and "all") from a run's rows (error rows skipped)."""
    acc: dict[str, list] = {}
    for r in rows:
        s = r.get("score") or {}
        if r.get("error") or "edits" not in s:
            continue
        for key in (s.get("set", "?"), "all"):
            a = acc.setdefault(key, [0, 0.0, 0, 0])
            a[0] += 1
            a[1] += s["edits"] / s["ref_words"]
            a[2] += s["edits"]
            a[3] += s["ref_words"]
    return {k: {"n": n, "utt_wer": u / n, "corpus_wer": e / w} for k, (n, u, e, w) in acc.items()}


# ---------------------------------------------------------------------------------- data
def _row_problem(r) -> str | None:
    if not isinstance(r, dict):
        return "not a JSON object"
    missing = [k for k in ("input", "output") if k not in r]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    hyps = r["input"]
    if not isinstance(hyps, list) or not hyps or not all(isinstance(h, str) for h in hyps):
        return "'input' must be a non-empty list of strings (the N-best hypotheses)"
    if any("\n" in h for h in hyps):
        return "a hypothesis contains a newline"
    if not isinstance(r["output"], str) or not r["output"].strip():
        return "'output' (the reference) must be a non-empty string"
    for key in ("score", "am_score"):
        if key in r and (not isinstance(r[key], list) or len(r[key]) != len(hyps)
                         or not all(isinstance(x, (int, float)) for x in r[key])):
            return f"'{key}' must be a list of {len(hyps)} numbers"
    return None


def read_set_file(path: Path, task: str = "hyporadise") -> list[dict]:
    """One HyPoradise file (a JSON array); a malformed row raises a ConfigError naming file and row."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"task {task}: {path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(data, list):
        raise ConfigError(f"task {task}: {path}: expected a JSON array of rows")
    for i, r in enumerate(data):
        problem = _row_problem(r)
        if problem:
            raise ConfigError(f"task {task}: {path}: row {i}: {problem}")
    return data


class HyPoradise(Task):
    name = "hyporadise"
    version = "1"
    data_dir = "hyporadise"
    quality_metric = "wer"  # per-row quality = utterance WER: LOWER is better
    directions = {"wer": "lower", "edits": "lower", "corpus_wer": "lower"}
    secondary_metrics = ("corpus_wer=edits/ref_words",)

    def __init__(self, limit=None, path=None, sets=DEFAULT_SETS, shots: int = 0, shot_set: str | None = None,
                 normalize: str = "paper", prompting=None):
        super().__init__(limit, path, prompting=prompting)
        sets = [sets] if isinstance(sets, str) else list(sets or [])
        bad = [s for s in sets if s not in SETS]
        if not sets or bad:
            raise ConfigError(f"task {self.name}: unknown set(s) {bad or '(none given)'}; choose from {', '.join(SETS)}")
        if len(set(sets)) != len(sets):
            raise ConfigError(f"task {self.name}: a set is listed twice in sets={sets}")
        if "wsj" in sets and "wsj_score" in sets:
            raise ConfigError(f"task {self.name}: 'wsj' and 'wsj_score' are the same 836 WSJ utterances "
                              f"(hypotheses re-ordered); select one")
        if not isinstance(shots, int) or shots < 0:
            raise ConfigError(f"task {self.name}: shots must be an integer >= 0 (got {shots!r})")
        if shot_set is not None and shot_set not in SETS:
            raise ConfigError(f"task {self.name}: unknown shot_set '{shot_set}'; choose from {', '.join(SETS)}")
        if normalize not in NORMALIZE:
            raise ConfigError(f"task {self.name}: normalize must be one of {', '.join(NORMALIZE)}")
        self.sets, self.shots, self.shot_set, self.normalize = sets, shots, shot_set, normalize
        self._cache: dict[str, list[dict]] = {}

    def hub_source(self):
        return f"{HUB_ID}:test:{','.join(self.sets)}"

    def describe(self) -> dict:
        return {**super().describe(), "sets": self.sets, "shots": self.shots, "normalize": self.normalize}

    # ------------------------------------------------------------------ files
    def _needed_sets(self) -> list[str]:
        extra = [self.shot_set] if self.shots and self.shot_set and self.shot_set not in self.sets else []
        return self.sets + extra

    def set_file(self, s: str) -> Path:
        local = self.local_dir()
        if local is None:
            return self._hub_file(s)
        if local.is_file():
            if len(self._needed_sets()) != 1:
                raise ConfigError(f"task {self.name}: path {local} is one file but sets={self._needed_sets()}; "
                                  f"give a folder of test_<set>.json files")
            return local
        f = local / f"test_{s}.json"
        if not f.is_file():
            raise ConfigError(f"task {self.name}: set '{s}': file {f} not found")
        return f

    def _hub_file(self, s: str, split: str = "test") -> Path:
        if s in NOT_ON_HUB:
            raise ConfigError(f"task {self.name}: set '{s}' is not on the hub copy {HUB_ID} (use wsj_score, or set "
                              f"HARNESS_DATA_DIR to a local copy)")
        rel = f"{split}/{split}_{s}.json"
        try:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(HUB_ID, rel, repo_type="dataset"))
        except Exception as e:  # offline, missing file, ...: one line with the way out
            raise ConfigError(f"task {self.name}: cannot download {rel} from {HUB_ID}: "
                              f"{e.__class__.__name__}; set HARNESS_DATA_DIR to a local copy") from None

    def check_data(self) -> None:
        if self.local_dir() is not None:
            for s in self._needed_sets():
                self.set_file(s)

    def raw_rows(self, s: str) -> list[dict]:
        """The validated rows of one set's file (cached)."""
        if s not in self._cache:
            self._cache[s] = read_set_file(self.set_file(s), self.name)
        return self._cache[s]

    # ------------------------------------------------------------------ contract
    def load(self) -> list[dict]:
        """Every selected set in order; `limit` = first N rows of EACH set."""
        out = []
        for s in self.sets:
            rows = self.raw_rows(s)
            for i, r in enumerate(rows[: self.limit] if self.limit else rows):
                if not words(r["output"], self.normalize):
                    raise ConfigError(f"task {self.name}: {self.set_file(s)}: row {i}: the reference has no words "
                                      f"after normalisation '{self.normalize}'")
                h = hashlib.sha1(json.dumps([r["input"], r["output"]]).encode()).hexdigest()[:8]
                ex = {"id": f"{s}-{i:04d}-{h}", "set": s, "index": i, "nbest": [x.strip() for x in r["input"]],
                      "reference": r["output"]}
                scores = r.get("score", r.get("am_score"))
                if scores is not None:
                    ex["asr_scores"] = [float(x) for x in scores]
                if self.shots:
                    ex["demos"] = self._demos(s, r["output"])
                out.append(ex)
        return out

    # ------------------------------------------------------------------ train split (ATIS only here)
    def train_file(self, s: str = "atis") -> Path:
        """`train_<set>.json` beside the test files (only ATIS's is in the offline copy), or the hub's."""
        if s not in TRAIN_SETS:
            raise ConfigError(f"task {self.name}: no train split for set '{s}' here (have: {', '.join(TRAIN_SETS)})")
        local = self.local_dir()
        if local is not None:
            f = (local.parent if local.is_file() else local) / f"train_{s}.json"
            if not f.is_file():
                raise ConfigError(f"task {self.name}: train file {f} not found")
            return f
        return self._hub_file(s, "train")

    def train_examples(self, s: str = "atis") -> list[dict]:
        """The train split of set `s` in `load()`'s shape (ids `train-<set>-<row>-<hash>`)."""
        key = f"train:{s}"
        if key not in self._cache:
            self._cache[key] = read_set_file(self.train_file(s), self.name)
        out = []
        for i, r in enumerate(self._cache[key]):
            h = hashlib.sha1(json.dumps([r["input"], r["output"]]).encode()).hexdigest()[:8]
            out.append({"id": f"train-{s}-{i:04d}-{h}", "set": s, "index": i,
                        "nbest": [x.strip() for x in r["input"]], "reference": r["output"]})
        return out

    def fewshot_pool(self) -> list[dict]:
        """`task.prompting.num_fewshot` exemplars: the ATIS train split (the only train file here),
        whatever the test set."""
        return self.train_examples("atis")

    def _demos(self, s: str, reference: str) -> list[dict]:
        src = self.shot_set or s
        demos = []
        for r in self.raw_rows(src):
            if r["output"].strip() == reference.strip():
                continue
            demos.append({"nbest": [x.strip() for x in r["input"]], "reference": r["output"].strip()})
            if len(demos) == self.shots:
                return demos
        raise ConfigError(f"task {self.name}: set '{src}' has fewer than {self.shots} usable demonstrations")

    def prompt(self, example):
        msgs, first = [], True
        for d in example.get("demos", ()):
            msgs += [{"role": "user", "content": (INSTRUCTION if first else "") + format_nbest(d["nbest"])},
                     {"role": "assistant", "content": d["reference"]}]
            first = False
        msgs.append({"role": "user", "content": (INSTRUCTION if first else "") + format_nbest(example["nbest"])})
        return msgs

    def gold_output(self, example):
        return example["reference"]

    def prompt_structure(self, example) -> dict:
        """The N-best list the strategies are given (as the prompt block shows it)."""
        return {"nbest": parse_nbest(format_nbest(example["nbest"]))}

    def score(self, example, output):
        ref = words(example["reference"], self.normalize)
        hyp = words(output, self.normalize)
        edits = edit_distance(hyp, ref)
        wer = edits / len(ref)
        return {"quality": wer, "wer": wer, "extracted": " ".join(hyp), "edits": edits, "ref_words": len(ref),
                "hyp_words": len(hyp), "set": example["set"]}


# ---------------------------------------------------------------------------------- oracles (analysis)
EPS = None  # the empty word in a confusion-network slot


def confusion_network(hyps: list[list[str]]) -> list[set]:
    """ROVER-style confusion network: align each hypothesis to the network built so far.

    Slots are sets of words (EPS = skip). Alignment cost: 0 for a word already in the slot or a
    skip of a slot that already allows EPS, else 1 (insertion = a new slot {word, EPS}). Every
    input hypothesis stays a path through the network (its words in its slots, EPS elsewhere).
    """
    uniq = []
    for h in hyps:  # a repeated hypothesis is already a path: it would change nothing
        if h not in uniq:
            uniq.append(h)
    slots: list[set] = [{w} for w in uniq[0]]
    for h in uniq[1:]:
        n, m = len(slots), len(h)
        INF = float("inf")
        D = [[INF] * (m + 1) for _ in range(n + 1)]
        B = [[0] * (m + 1) for _ in range(n + 1)]  # 1 = align slot/word, 2 = skip slot, 3 = insert word
        D[0][0] = 0
        for i in range(n + 1):
            for j in range(m + 1):
                if i and j:
                    c = D[i - 1][j - 1] + (h[j - 1] not in slots[i - 1])
                    if c < D[i][j]:
                        D[i][j], B[i][j] = c, 1
                if i:
                    c = D[i - 1][j] + (EPS not in slots[i - 1])
                    if c < D[i][j]:
                        D[i][j], B[i][j] = c, 2
                if j:
                    c = D[i][j - 1] + 1
                    if c < D[i][j]:
                        D[i][j], B[i][j] = c, 3
        new: list[set] = []
        i, j = n, m
        while i or j:
            b = B[i][j]
            if b == 1:
                new.append(slots[i - 1] | {h[j - 1]})
                i, j = i - 1, j - 1
            elif b == 2:
                new.append(slots[i - 1] | {EPS})
                i -= 1
            else:
                new.append({h[j - 1], EPS})
                j -= 1
        slots = new[::-1]
    return slots


def cn_oracle_edits(slots: list[set], ref: list[str]) -> int:
    """Fewest word edits between `ref` and any path through the confusion network."""
    m = len(ref)
    prev = list(range(m + 1))
    for s in slots:
        skip = 0 if EPS in s else 1
        cur = [prev[0] + skip] + [0] * m
        for j in range(1, m + 1):
            cur[j] = min(prev[j] + skip, prev[j - 1] + (ref[j - 1] not in s), cur[j - 1] + 1)
        prev = cur
    return prev[m]


def bag_oracle_edits(hyps: list[list[str]], ref: list[str]) -> int:
    """Reference words whose word type occurs in no hypothesis (a lower bound of any composition)."""
    have = {w for h in hyps for w in h}
    return sum(w not in have for w in ref)


def oracle_stats(rows: list[dict], normalize: str = "paper", compositional: bool = True) -> dict:
    """1-best, o_nb, o_cp and bag bound of raw rows, as utterance-averaged and corpus WER fractions."""
    tot = {k: [0.0, 0] for k in ("onebest", "onb", "ocp", "bag")}  # [sum of utterance WERs, sum of edits]
    ref_words, refs, onebest, onb = 0, [], [], []
    for r in rows:
        ref = words(r["output"], normalize)
        hyps = [words(h, normalize) for h in r["input"]]
        e = [edit_distance(h, ref) for h in hyps]
        best = min(range(len(e)), key=e.__getitem__)
        got = {"onebest": e[0], "onb": e[best], "bag": bag_oracle_edits(hyps, ref)}
        if compositional:
            got["ocp"] = 0 if e[best] == 0 else cn_oracle_edits(confusion_network(hyps), ref)
        for k, v in got.items():
            tot[k][0] += v / len(ref)
            tot[k][1] += v
        ref_words += len(ref)
        refs.append(" ".join(ref))
        onebest.append(" ".join(hyps[0]))
        onb.append(" ".join(hyps[best]))
    n = len(rows)
    out = {"n": n, "ref_words": ref_words}
    for k, (u, e) in tot.items():
        if k == "ocp" and not compositional:
            continue
        out[f"{k}_utt"], out[f"{k}_corpus"] = u / n, e / ref_words
    out["jiwer_onebest_corpus"] = corpus_wer(refs, onebest, "none")  # cross-check of the sums with jiwer
    out["jiwer_onb_corpus"] = corpus_wer(refs, onb, "none")
    return out


def oracle_report(sets=DEFAULT_SETS, normalize: str = "paper", limit: int | None = None, path: str | None = None,
                  compositional: bool = True) -> list[dict]:
    """Per set: oracle_stats (fractions) + the README's o_nb / o_cp (percent) where it has them."""
    out = []
    for s in sets:
        task = HyPoradise(path=path, sets=[s], normalize=normalize)
        rows = task.raw_rows(s)
        rows = rows[:limit] if limit else rows
        readme = README_ORACLES.get(s, (None, None))
        out.append({"set": s, **oracle_stats(rows, normalize, compositional),
                    "readme_onb": readme[0], "readme_ocp": readme[1]})
    return out


def _fmt(x) -> str:
    return "   -" if x is None else f"{x:5.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tasks.hyporadise", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("oracle", help="1-best / o_nb / o_cp WER per set (WER %%)")
    o.add_argument("--set", action="append", choices=SETS, help="repeatable; default: the 10 distinct sets")
    o.add_argument("--normalize", choices=NORMALIZE, default="paper",
                   help="'paper' = the task's default scoring (default); 'none' = the dataset README's protocol")
    o.add_argument("--limit", type=int, default=None, help="first N rows of each set")
    o.add_argument("--path", default=None, help="folder of test_<set>.json (default: HARNESS_DATA_DIR or the hub)")
    o.add_argument("--no-cp", action="store_true", help="skip the compositional oracle (the slow part)")
    a = p.parse_args(argv)
    try:
        rep = oracle_report(a.set or DEFAULT_SETS, a.normalize, a.limit, a.path, not a.no_cp)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"WER % (normalize={a.normalize}; utt = mean of utterance WERs as in the paper, corpus = sum edits / "
          f"sum ref words)")
    print(f"{'':16} | {'utterance-averaged':^23} | {'README':^11} | {'corpus':^17}")
    print(f"{'set':10} {'n':>5} | {'1best':>5} {'o_nb':>5} {'o_cp':>5} {'bag':>5} | {'o_nb':>5} {'o_cp':>5} | "
          f"{'1best':>5} {'o_nb':>5} {'o_cp':>5}")
    for r in rep:
        pc = lambda k: None if k not in r else 100 * r[k]  # noqa: E731
        print(f"{r['set']:10} {r['n']:5d} | {_fmt(pc('onebest_utt'))} {_fmt(pc('onb_utt'))} {_fmt(pc('ocp_utt'))} "
              f"{_fmt(pc('bag_utt'))} | {_fmt(r['readme_onb'])} {_fmt(r['readme_ocp'])} | "
              f"{_fmt(pc('onebest_corpus'))} {_fmt(pc('onb_corpus'))} {_fmt(pc('ocp_corpus'))}")
    print("o_cp: best path through a ROVER-style confusion network of the hypotheses; bag: reference words "
          "found in no hypothesis (a bound for any word-level composition)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
