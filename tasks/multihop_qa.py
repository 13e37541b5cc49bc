"""Multi-hop QA with context permutation (Huang et al., ACL 2025, "Masking in Multi-hop QA: An
Analysis of How Language Models Perform with Context Permutation", arXiv 2505.11754).

Data (see ../shared/data/multihop_qa/SOURCE.md): `<HARNESS_DATA_DIR>/multihop_qa/` holds the
200-question subsets `musique.json` (MuSiQue-Ans v1.0 dev), `hotpot.json` (HotpotQA distractor dev)
and `wikihop.json` (2WikiMultihopQA dev), all JSON lines. Without HARNESS_DATA_DIR the full dev
sets come from the hub: `dgslibisey/MuSiQue` (validation), `hotpotqa/hotpot_qa` (distractor,
validation) and `ohjoonhee/2WikiMultihopQA` (validation); the hub's column-oriented `context` /
`supporting_facts` are converted to the row format of the local files.

Every question comes with its documents (20 for MuSiQue, 10 for the others). The gold documents
in reasoning order ("hop order") are MuSiQue's `question_decomposition[*].paragraph_support_idx`
(as the paper does), and for HotpotQA / 2Wiki the titles of `supporting_facts` in order of first
appearance (2Wiki lists them in its evidence-chain order; HotpotQA has no annotated chain, so its
"reasoning order" is only the annotation order). The documents are shown in one of the paper's
orders (`document_order` below), rendered as in the paper's utils.py:
`Document [i](Title: {title}) {text}` with i = 0.. the position in the shown order.

Scoring: `quality` = the paper's substring EM (tasks/qa_metrics.py) of the extracted answer
against the answer and its aliases (MuSiQue `answer_aliases`); SQuAD EM and F1 are stored too.
Prompts (`prompt_style`): `paper_answer_only` (default) and `paper_cot` are the paper's own
(its public code: utils.py, inference.py, compute_metrics.py): a system prompt asking for the
answer within `\\boxed{}` (answer-only: "You are {persona} and are now helping answer question
based on some search result. ...", persona Qwen or Llama as in its two model families; CoT:
"Please reason step by step, ..."), the user turn = the documents and the question, and for
answer-only the assistant turn prefilled with `\\boxed{` (`Task.assistant_prefix`). Extraction as
its compute_metrics.py: answer-only = the output's last line (the closing brace dropped), CoT =
the FIRST `\\boxed{...}` (no nested braces; "" if none). `answer_only` / `cot` are this
harness's earlier prompts, kept as named options: no system prompt, an instruction line;
answer_only = the last non-empty line (a `\\boxed{}` wrapper or an `Answer:` prefix removed), cot
= the text after the last `Answer:` ("" if there is none).
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

from harness.errors import ConfigError
from tasks.base import Task, load_hub, read_jsonl
from tasks.qa_metrics import qa_scores

DATASETS = {  # name -> local file, hub (id, config, split), required fields of a local row
    "musique": ("musique.json", ("dgslibisey/MuSiQue", None, "validation"),
                ("id", "question", "answer", "paragraphs", "question_decomposition")),
    "hotpotqa": ("hotpot.json", ("hotpotqa/hotpot_qa", "distractor", "validation"),
                 ("_id", "question", "answer", "context", "supporting_facts")),
    "2wikimultihopqa": ("wikihop.json", ("ohjoonhee/2WikiMultihopQA", None, "validation"),
                        ("_id", "question", "answer", "supporting_facts")),
}
ORDERS = ("original", "forward", "backward", "forward_0", "forward_k", "gold", "rm_first", "random")
# paper_*: the paper's own prompts (hwy9855/MultiHopQA-Reasoning utils.py SYSTEM_PROMPTS / PROMPTS["raw"],
# inference.py: system + user turn, the assistant turn prefilled with "\boxed{" for answer-only;
# compute_metrics.py: answer-only = the last line of the output, CoT = the first \boxed{...}).
# answer_only / cot: this harness's earlier prompts (no system prompt, an instruction line, "Answer:").
PROMPT_STYLES = ("paper_answer_only", "paper_cot", "answer_only", "cot")
PAPER_SYSTEM = {
    "paper_answer_only": ("You are {persona} and are now helping answer question based on some search result. "
                          "Only provide the exact final answer and put it within \\boxed{{}}."),
    "paper_cot": "Please reason step by step, and put your final answer within \\boxed{{}}.",
}
PAPER_PREFILL = {"paper_answer_only": "\\boxed{"}
_FIRST_BOX = re.compile(r"\\boxed{([^}]+)}")

PROMPT = ("Answer the question using only the provided search results (some of which might be "
          "irrelevant). \n\n{docs}\n\nQuestion: {question}\n.")
INSTRUCTIONS = {
    "answer_only": "Only provide the exact final answer.",
    "cot": ("Please reason step by step, then give the final answer on the last line in the form "
            "'Answer: <answer>'."),
}
MARKER = "Answer:"


# ---------------------------------------------------------------------- document orders
def document_order(order: str, n_docs: int, gold: list[int], k: int = 1,
                   rng: random.Random | None = None) -> list[int]:
    """Indices (into the stored document list) of the documents to show, in showing order.

    `gold` = the gold documents' stored indices in reasoning (hop) order, no repeats.
      original  : 0..n-1 as stored.
      forward   : distractors stay in place; the slots the gold documents occupy (ascending) are
                  refilled with the gold documents in reasoning order.
      backward  : the same slots refilled in reverse reasoning order.
      forward_0 : all distractors (stored order), then the gold documents in reasoning order.
      forward_k : the distractors (stored order, m of them); the gold documents are inserted from
                  the end, last hop first, the j-th from the end (j = 0..) at position m - j*k of the
                  growing list, so the last hop is the last document and k distractors separate
                  consecutive hops; gold hop i (0-based of n) ends at position max(0, m-(n-1-i)*k) + i.
                  The paper (k = 1..5 on MuSiQue) never reaches a negative position; here it is
                  clamped to 0 (Python's insert would count it from the end). k = 0 equals forward_0.
      gold      : the gold documents only, in stored order.
      rm_first  : every document except the first hop's gold document, stored order.
      random    : a uniformly random permutation of all documents (the paper's best_order.py
                  candidates); `rng` must be given.
    """
    if order not in ORDERS:
        raise ConfigError(f"unknown document order {order!r}; one of {', '.join(ORDERS)}")
    gold_set = set(gold)
    if len(gold_set) != len(gold) or not all(0 <= g < n_docs for g in gold):
        raise ValueError(f"gold indices {gold} are not distinct indices into {n_docs} documents")
    distractors = [i for i in range(n_docs) if i not in gold_set]
    if order == "original":
        return list(range(n_docs))
    if order in ("forward", "backward"):
        out = list(range(n_docs))
        for slot, g in zip(sorted(gold), gold if order == "forward" else gold[::-1]):
            out[slot] = g
        return out
    if order == "forward_0":
        return distractors + list(gold)
    if order == "forward_k":
        if not isinstance(k, int) or k < 0:
            raise ConfigError(f"forward_k needs an integer k >= 0, got {k!r}")
        out, m = list(distractors), len(distractors)
        for j, g in enumerate(reversed(gold)):
            out.insert(max(0, m - j * k), g)
        return out
    if order == "gold":
        return sorted(gold)
    if order == "rm_first":
        return [i for i in range(n_docs) if not gold or i != gold[0]]
    if rng is None:
        raise ValueError("the random order needs an rng")
    out = list(range(n_docs))
    rng.shuffle(out)
    return out


def example_rng(seed: int, example_id: str) -> random.Random:
    """A generator that depends only on (seed, example id): same order in every call and process."""
    digest = hashlib.sha256(f"{seed}:{example_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# ---------------------------------------------------------------------- answer extraction
_BOXED = re.compile(r"\\boxed\{(.*)\}", re.DOTALL)


def _clean(ans: str) -> str:
    ans = ans.strip()
    m = _BOXED.search(ans)
    if m:
        ans = m.group(1)
    return ans.strip().strip("*").strip()


def extract_answer(output: str, style: str) -> str:
    """The answer string in a model output (see the module docstring)."""
    text = (output or "").strip()
    if style == "paper_cot":  # the paper's get_cot_ans: the FIRST \boxed{...} without nested braces
        m = _FIRST_BOX.findall(text)
        return m[0] if m else ""
    if style == "paper_answer_only":  # the paper: prediction.strip().split("\n")[-1]; the prefilled
        last = text.split("\n")[-1] if text else ""  # "\boxed{" leaves the closing brace in it
        return last[:-1] if last.endswith("}") else last
    if style == "cot":
        pos = text.rfind(MARKER)
        if pos < 0:
            return ""
        rest = text[pos + len(MARKER):].lstrip(" \t*")
        lines = [ln for ln in rest.split("\n") if ln.strip()]
        return _clean(lines[0]) if lines else ""
    last = text.split("\n")[-1] if text else ""
    if MARKER in last:
        last = last[last.rfind(MARKER) + len(MARKER):]
    return _clean(last)


# ---------------------------------------------------------------------- row conversion
def _pairs(value, text_keys: tuple[str, ...]):
    """[[title, x], ...] from either that or the hub's column form {title: [...], <text_key>: [...]}."""
    if isinstance(value, dict) and "title" in value:
        for key in text_keys:
            if key in value:
                if len(value["title"]) != len(value[key]):
                    raise ValueError(f"columns title/{key} differ in length")
                return [[t, x] for t, x in zip(value["title"], value[key])]
        raise ValueError(f"column form without any of {', '.join(text_keys)}")
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {type(value).__name__}")
    return value


def _musique(row: dict) -> dict:
    if row.get("answerable", True) is False:
        raise ValueError("unanswerable question (use the MuSiQue-Ans file)")
    paras = row["paragraphs"]
    if not isinstance(paras, list) or not paras:
        raise ValueError("'paragraphs' is not a non-empty list")
    docs, pos_of_idx = [], {}
    for p, para in enumerate(paras):
        if not isinstance(para, dict) or not {"title", "paragraph_text"} <= para.keys():
            raise ValueError(f"paragraph {p} lacks title/paragraph_text")
        pos_of_idx[int(para.get("idx", p))] = p
        docs.append({"title": str(para["title"]), "text": str(para["paragraph_text"])})
    steps = row["question_decomposition"]
    if not isinstance(steps, list) or not steps:
        raise ValueError("'question_decomposition' is not a non-empty list")
    gold = []
    for s, step in enumerate(steps):
        idx = step.get("paragraph_support_idx") if isinstance(step, dict) else None
        if idx is None or int(idx) not in pos_of_idx:
            raise ValueError(f"decomposition step {s}: paragraph_support_idx {idx!r} names no paragraph")
        if pos_of_idx[int(idx)] not in gold:
            gold.append(pos_of_idx[int(idx)])
    aliases = row.get("answer_aliases") or []
    if not isinstance(aliases, list):
        raise ValueError("'answer_aliases' is not a list")
    qtype = str(row["id"]).split("__")[0]
    return {"id": str(row["id"]), "docs": docs, "gold": gold,
            "answers": [str(row["answer"])] + [str(a) for a in aliases], "qtype": qtype}


def _titled(row: dict, id_key: str) -> dict:
    """HotpotQA / 2Wiki: context [[title, [sentences]]], supporting_facts [[title, sent_idx]]."""
    context = _pairs(row["context"], ("sentences", "content"))
    facts = _pairs(row["supporting_facts"], ("sent_id",))
    docs, first_pos = [], {}
    for p, item in enumerate(context):
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], list)):
            raise ValueError(f"context item {p} is not [title, [sentences]]")
        title = str(item[0])
        first_pos.setdefault(title, p)  # a repeated title: the first copy is the gold one
        docs.append({"title": title, "text": " ".join(str(s).strip() for s in item[1] if str(s).strip())})
    gold = []
    for f, fact in enumerate(facts):
        if not (isinstance(fact, (list, tuple)) and len(fact) == 2):
            raise ValueError(f"supporting fact {f} is not [title, sentence index]")
        if str(fact[0]) not in first_pos:
            raise ValueError(f"supporting fact title {fact[0]!r} is not in the context")
        if first_pos[str(fact[0])] not in gold:
            gold.append(first_pos[str(fact[0])])
    if not gold:
        raise ValueError("no supporting facts")
    return {"id": str(row[id_key]), "docs": docs, "gold": gold, "answers": [str(row["answer"])],
            "qtype": str(row.get("type", ""))}


class MultiHopQA(Task):
    name = "multihop_qa"
    version = "2"  # 2: the paper's prompts are the default (were ours, now prompt_style answer_only / cot)
    data_dir = "multihop_qa"
    quality_metric = "substring_em"
    secondary_metrics = ("squad_em", "squad_f1")

    def __init__(self, limit=None, path=None, dataset: str = "musique", order: str = "original",
                 k: int = 1, prompt_style: str = "paper_answer_only", seed: int = 0,
                 skip_no_context: bool = True, persona: str = "Qwen", prompting=None):
        super().__init__(limit, path, prompting=prompting)
        self.persona = str(persona)
        if prompt_style in PAPER_SYSTEM and self.prompting["system_prompt"]:
            raise ConfigError(f"task {self.name}: prompt_style {prompt_style} brings the paper's system prompt; "
                              f"leave prompting.system_prompt null (or use prompt_style answer_only / cot)")
        if dataset not in DATASETS:
            raise ConfigError(f"task {self.name}: dataset {dataset!r} is not one of {', '.join(DATASETS)}")
        if order not in ORDERS:
            raise ConfigError(f"task {self.name}: order {order!r} is not one of {', '.join(ORDERS)}")
        if prompt_style not in PROMPT_STYLES:
            raise ConfigError(f"task {self.name}: prompt_style {prompt_style!r} is not one of "
                              f"{', '.join(PROMPT_STYLES)}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ConfigError(f"task {self.name}: k must be an integer >= 0, got {k!r}")
        self.dataset, self.order, self.k = dataset, order, k
        self.prompt_style, self.seed, self.skip_no_context = prompt_style, int(seed), bool(skip_no_context)
        self.skipped = 0  # rows without documents (2Wiki subset), counted by load()

    # ------------------------------------------------------------------ data
    def hub_source(self):
        hub_id, config, split = DATASETS[self.dataset][1]
        return f"{hub_id}:{config or 'default'}:{split}"

    def describe(self):
        return {**super().describe(), "dataset": self.dataset, "order": self.order,
                "k": self.k if self.order == "forward_k" else None, "prompt_style": self.prompt_style,
                "persona": self.persona if self.prompt_style == "paper_answer_only" else None}

    def _file(self) -> Path | None:
        local = self.local_dir()
        if local is None:
            return None
        f = local / DATASETS[self.dataset][0] if local.is_dir() else local
        if not f.is_file():
            raise ConfigError(f"task {self.name}: data file '{f}' not found")
        return f

    def check_data(self):
        self._file()

    def raw_rows(self) -> tuple[str, list[dict]]:
        """(source name for messages, rows as stored)."""
        fname, (hub_id, config, split), required = DATASETS[self.dataset]
        f = self._file()
        if f is None:
            return f"hub {hub_id}", load_hub(self.name, hub_id, config, split)
        return str(f), read_jsonl(f, required, self.name)

    def load(self) -> list[dict]:
        source, rows = self.raw_rows()
        out, seen, self.skipped = [], set(), 0
        for i, row in enumerate(rows, 1):
            where = f"task {self.name}: {source}: row {i}"
            if self.dataset == "hotpotqa" and "_id" not in row and "id" in row:
                row = {**row, "_id": row["id"]}  # the hub's name for it
            if self.dataset == "2wikimultihopqa" and "context" not in row and self.skip_no_context:
                self.skipped += 1  # MIGRES rows carrying qa_pairs/explanation instead of documents
                continue
            try:
                ex = _musique(row) if self.dataset == "musique" else _titled(row, "_id")
                ex["question"] = str(row["question"])
            except (KeyError, TypeError, ValueError) as e:
                detail = f"missing field {e}" if isinstance(e, KeyError) else str(e)
                raise ConfigError(f"{where}: {detail}") from None
            if ex["id"] in seen:
                raise ConfigError(f"{where}: duplicate id {ex['id']!r}")
            seen.add(ex["id"])
            rng = example_rng(self.seed, ex["id"]) if self.order == "random" else None
            ex.update(dataset=self.dataset,
                      doc_order=document_order(self.order, len(ex["docs"]), ex["gold"], self.k, rng))
            out.append(ex)
        return out[: self.limit] if self.limit else out

    # ------------------------------------------------------------------ prompt / score
    def render_documents(self, example: dict) -> str:
        docs = example["docs"]
        return "\n".join(f"Document [{n}](Title: {docs[d]['title']}) {docs[d]['text']}"
                         for n, d in enumerate(example["doc_order"]))

    def prompt(self, example):
        body = PROMPT.format(docs=self.render_documents(example), question=example["question"])
        if self.prompt_style in PAPER_SYSTEM:
            return [{"role": "system", "content": PAPER_SYSTEM[self.prompt_style].format(persona=self.persona)},
                    {"role": "user", "content": body}]
        return [{"role": "user", "content": body + "\n\n" + INSTRUCTIONS[self.prompt_style]}]

    def assistant_prefix(self, example) -> str:
        return PAPER_PREFILL.get(self.prompt_style, "")

    def gold_output(self, example):
        return example["answers"][0]

    def prompt_structure(self, example) -> dict:
        """The shown documents (titles and texts, in showing order): what extractive strategies
        (exact_extract, copy_constrained) take spans from."""
        docs = example["docs"]
        return {"context": [x for d in example["doc_order"] for x in (docs[d]["title"], docs[d]["text"])]}

    def score(self, example, output):
        extracted = extract_answer(output, self.prompt_style)
        scores = qa_scores(extracted, example["answers"])
        return {"quality": scores["substring_em"], "extracted": extracted, **scores,
                "qtype": example["qtype"], "n_hops": len(example["gold"])}
