"""Exact-extract: the most probable answer span of the given context (Castel et al., "How Optimal is
Greedy Decoding for Extractive Question Answering?", AKBC 2022, arXiv 2108.05857).

Extractive QA asks for a span of the context; greedy decoding picks the answer token by token
and may leave the span space or miss the span the model itself rates most probable. Exact-extract
scores EVERY candidate span of the context as the model's answer and returns the argmax:

    score(a) = sum_j log p(a_j | prompt, a_<j)  +  log p(end | prompt, a)     (end = any EOS id)
    normalised: score(a) / (len(a) + 1)                                      (length_normalize)

Candidates: within each source text (the task's `Prompt.context`: multi-hop QA's document titles
and texts; else the N-best list), every run of 1..max_words consecutive words (units
\\w+ | one punctuation mark) that starts and ends on a word, as the original text slice. The
answer begins the assistant turn, so a span is tokenised on its own (no leading space).

Cost: spans that start at the same word share one scored row (the longest span's tokens; each
shorter span is a prefix of it whenever its tokenisation is, which word boundaries make the
rule; the rest get their own row). Rows are teacher-forced in batches over the prompt's shared
KV (`engine.score_suffixes`): one forward per `batch` rows, no sampling. Rows: extra.spans
(distinct candidate texts), rows_scored, tokens_scored, best_logp; candidates = the top `keep`
spans, best first (so the runner also reports the oracle quality of the top spans).
Lossy and deterministic. Relation to copy_constrained: greedy decoding restricted to the same
span space; exact-extract is the exhaustive optimum over (word-aligned) spans.
"""

from __future__ import annotations

import re

import torch

from harness.errors import ConfigError
from strategies.core.base import Strategy

UNIT = re.compile(r"\w+|[^\w\s]")


def word_spans(text: str, max_words: int) -> list[list[tuple[int, int]]]:
    """For each start word of `text`: the (start char, end char) of every span of 1..max_words
    units that starts and ends on a word unit, shortest first."""
    units = [(m.start(), m.end(), m.group()[0].isalnum() or m.group()[0] == "_") for m in UNIT.finditer(text)]
    out = []
    for i, (s, _, word) in enumerate(units):
        if not word:
            continue
        ends = [(s, units[j][1]) for j in range(i, min(i + max_words, len(units))) if units[j][2]]
        out.append(ends)
    return out


class ExactExtract(Strategy):
    name = "exact_extract"
    lossless = False
    deterministic = True
    summary_fields = ("spans", "rows_scored", "tokens_scored")

    def __init__(self, max_words: int = 8, length_normalize: bool = False, end: bool = True, keep: int = 5,
                 batch: int = 32, sampling=None):
        super().__init__(sampling)
        if not self.sampling.greedy:
            raise ConfigError(f"{self.name} scores every span exhaustively; set strategy.sampling.temperature=0")
        if max_words < 1 or keep < 1 or batch < 1:
            raise ConfigError(f"{self.name}: max_words, keep and batch must be >= 1")
        self.max_words, self.length_normalize, self.end = int(max_words), bool(length_normalize), bool(end)
        self.keep, self.batch = int(keep), int(batch)

    def candidates(self, target, sources: list[str]) -> tuple[list[str], list[list[int]], list[tuple[int, int]]]:
        """(span texts, scored rows of token ids, (row, token count) of each span)."""
        texts, rows, where = [], [], []
        row_of: dict[tuple, int] = {}
        seen: set[str] = set()

        def row(ids: list[int]) -> int:
            return row_of.setdefault(tuple(ids), len(row_of))

        for src in sources:
            for ends in word_spans(src, self.max_words):
                longest = target.encode(src[ends[-1][0]:ends[-1][1]])
                for s, e in ends:
                    t = src[s:e]
                    if t in seen:
                        continue
                    ids = target.encode(t)
                    if not ids:
                        continue
                    seen.add(t)
                    r = row(longest) if longest[:len(ids)] == ids else row(ids)
                    texts.append(t)
                    where.append((r, len(ids)))
        rows = [list(k) for k in row_of]
        return texts, rows, where

    def decode(self, state) -> None:
        target = state.target
        sources = state.prompt.sources
        if not sources:
            raise ConfigError(f"{self.name} needs a task that gives the context (Prompt.context or nbest)")
        texts, rows, where = self.candidates(target, sources)
        if not texts:
            raise ValueError(f"{self.name}: the context has no word to extract")
        eos = sorted(state.eos_ids)
        scored = target.score_suffixes(state.seq, rows, extra_ids=eos, batch=self.batch)
        cum = [torch.cumsum(tok, 0) for tok, _ in scored]
        end = [torch.logsumexp(e, -1) if eos else torch.zeros(len(e)) for _, e in scored]
        scores = []
        for r, n in where:
            s = float(cum[r][n - 1]) + (float(end[r][n]) if self.end else 0.0)
            scores.append(s / (n + self.end) if self.length_normalize else s)
        order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))
        best = order[0]
        r, n = where[best]
        ids = rows[r][:n]
        state.trace.candidates = [rows[where[i][0]][:where[i][1]] for i in order[:self.keep]]
        state.trace.candidate_scores = [scores[i] for i in order[:self.keep]]
        state.extra.update({"spans": len(texts), "rows_scored": len(rows),
                            "tokens_scored": sum(len(x) for x in rows), "best_logp": scores[best]})
        end_tok = [int(eos[int(torch.argmax(scored[r][1][n]))])] if eos else []
        state.emit(ids + end_tok)
