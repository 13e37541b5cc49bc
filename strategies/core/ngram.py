"""A compact token n-gram model (orders 1..6) built from a text corpus, for Superposed Decoding.

    python -m tools.build_ngram_lm build --corpus FILE ... --out lm.npz   (the CLI: tools/build_ngram_lm.py)

Corpus: a .jsonl / .jsonl.gz file (one document per row: the string fields named by --fields,
all string fields by default, joined by newlines) or a text file (documents separated by blank
lines). Each document is encoded into the model's token ids (no special tokens); n-grams never
cross documents; the file records the fingerprint of the token <-> id map it was counted with.

Representation (numpy, no Python dict per n-gram): for each order n >= 2, the sorted 64-bit
hashes of the distinct n-grams with their counts, and the sorted hashes of the distinct
(n-1)-token contexts that are followed by a token, with their counts (so p_n(y | c) =
count(c y) / count(c) is two binary searches); plus unigram counts [V]. Hash of a token
sequence: h = fold(h * P + (t + 1)) mod 2^64 (P a fixed odd constant), one table per order, so
a collision needs two distinct n-grams of the same order with equal 64-bit hashes (probability
~ M^2 / 2^65 for M distinct n-grams: ~1e-8 at a million). Memory: 12 bytes per distinct n-gram
and per distinct context (uint64 key + uint32 count), 8 bytes per vocabulary entry. Measured:
GSM8K test questions + solutions in the tiny models' byte vocabulary (0.70M tokens) 6.3 MB, built
in ~1 s; the GSM8K questions in SmolLM2's vocabulary (82k tokens) 6.7 MB (0.4 MB of it unigrams).

Probability (`prob`), for a context c and candidate tokens y, with order weights lambda_n
(n = 2..6) and a unigram weight lambda_1:
    p(y | c) = [sum_{n in S(c)} lambda_n p_n(y | c_{-(n-1):}) + lambda_1 p_1(y)]
               / [sum_{n in S(c)} lambda_n + lambda_1]
S(c) = the orders whose (n-1)-token context occurs in the corpus (an unseen context carries no
information and its weight is dropped, not counted as probability 0); p_1 = add-one smoothed
unigram (count + 1) / (N + V), so p > 0 for every token and log p is finite. The result is a
proper distribution over the vocabulary for every context.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

MULT = 0x9E3779B97F4A7C15  # odd 64-bit multiplier of the rolling hash
MASK = (1 << 64) - 1
FORMAT = 1


def fold(tokens: Sequence[int]) -> int:
    """64-bit hash of a token sequence (the same function the tables are built with)."""
    h = 0
    for t in tokens:
        h = (h * MULT + int(t) + 1) & MASK
    return h


def _lookup(keys: np.ndarray, counts: np.ndarray, q: np.ndarray) -> np.ndarray:
    """counts of the hashes q in the sorted table (0 where absent)."""
    if len(keys) == 0:
        return np.zeros(q.shape, dtype=np.int64)
    i = np.searchsorted(keys, q)
    i = np.minimum(i, len(keys) - 1)
    return np.where(keys[i] == q, counts[i], 0).astype(np.int64)


class NGramLM:
    """Counts of token n-grams, orders 1..max_order, from a tokenised corpus."""

    def __init__(self, tables: dict, contexts: dict, unigram: np.ndarray, meta: dict):
        self.tables = tables  # n -> (sorted uint64 hashes of n-grams, uint32 counts)
        self.contexts = contexts  # n -> (sorted uint64 hashes of (n-1)-grams followed by a token, counts)
        self.unigram = unigram.astype(np.int64)  # [V]
        self.meta = meta
        self.max_order = int(meta["max_order"])
        self.vocab_size = len(unigram)
        self.total = int(self.unigram.sum())

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, docs: Iterable[Sequence[int]], vocab_size: int, max_order: int = 6,
              meta: dict | None = None) -> "NGramLM":
        docs = [np.asarray(d, dtype=np.int64) for d in docs if len(d)]
        if not docs:
            raise ValueError("n-gram corpus is empty")
        T = np.concatenate(docs)
        if T.min() < 0 or T.max() >= vocab_size:
            raise ValueError(f"corpus token ids outside 0..{vocab_size - 1}")
        D = np.repeat(np.arange(len(docs)), [len(d) for d in docs])  # document of each token
        x = (T + 1).astype(np.uint64)
        h = x.copy()  # h[i] = hash of the (n-1)-gram starting at i (n-1 = 1 here)
        tables, contexts = {}, {}
        with np.errstate(over="ignore"):
            for n in range(2, max_order + 1):
                ctx = h[:len(T) - n + 1]
                h = ctx * np.uint64(MULT) + x[n - 1:]  # n-grams starting at 0..L-n
                ok = D[:len(T) - n + 1] == D[n - 1:]  # inside one document
                k, c = np.unique(h[ok], return_counts=True)
                tables[n] = (k, c.astype(np.uint32))
                k, c = np.unique(ctx[ok], return_counts=True)
                contexts[n] = (k, c.astype(np.uint32))
        unigram = np.bincount(T, minlength=vocab_size)
        meta = {"format": FORMAT, "max_order": max_order, "tokens": int(len(T)), "documents": len(docs),
                "vocab_size": vocab_size, **(meta or {})}
        return cls(tables, contexts, unigram, meta)

    # ------------------------------------------------------------------ files
    def save(self, path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"unigram": self.unigram, "meta": np.array(json.dumps(self.meta))}
        for n, (k, c) in self.tables.items():
            arrays[f"keys_{n}"], arrays[f"counts_{n}"] = k, c
        for n, (k, c) in self.contexts.items():
            arrays[f"ctx_keys_{n}"], arrays[f"ctx_counts_{n}"] = k, c
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file

    @classmethod
    def load(cls, path) -> "NGramLM":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path}: n-gram file format {meta.get('format')} (expected {FORMAT})")
            n_max = int(meta["max_order"])
            tables = {n: (z[f"keys_{n}"], z[f"counts_{n}"]) for n in range(2, n_max + 1)}
            contexts = {n: (z[f"ctx_keys_{n}"], z[f"ctx_counts_{n}"]) for n in range(2, n_max + 1)}
            return cls(tables, contexts, z["unigram"], meta)

    def nbytes(self) -> int:
        return int(self.unigram.nbytes + sum(k.nbytes + c.nbytes for t in (self.tables, self.contexts)
                                             for k, c in t.values()))

    # ------------------------------------------------------------------ probabilities
    def order_probs(self, context: Sequence[int], tokens: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """p_n(y | last n-1 tokens of context) for n = 2..max_order and each y in tokens.

        Returns (probs [max_order - 1, len(tokens)], seen [max_order - 1] bool: the order's
        context occurs in the corpus; probs are 0 where it does not)."""
        y = np.asarray(tokens, dtype=np.uint64) + np.uint64(1)
        orders = range(2, self.max_order + 1)
        probs = np.zeros((len(orders), len(y)))
        seen = np.zeros(len(orders), dtype=bool)
        for j, n in enumerate(orders):
            if len(context) < n - 1:
                continue
            c = fold(context[len(context) - (n - 1):])
            (cnt,) = _lookup(*self.contexts[n], np.array([c], dtype=np.uint64))
            if cnt == 0:
                continue
            seen[j] = True
            with np.errstate(over="ignore"):
                keys = np.uint64((c * MULT) & MASK) + y
            probs[j] = _lookup(*self.tables[n], keys) / cnt
        return probs, seen

    def unigram_probs(self, tokens: Sequence[int]) -> np.ndarray:
        """Add-one smoothed unigram probabilities (count + 1) / (N + V)."""
        t = np.asarray(tokens, dtype=np.int64)
        counts = np.where(t < self.vocab_size, self.unigram[np.minimum(t, self.vocab_size - 1)], 0)
        return (counts + 1) / (self.total + self.vocab_size)

    def weighted_sum(self, context: Sequence[int], tokens: Sequence[int], weights: Sequence[float]) -> np.ndarray:
        """Superposed Decoding's own n-gram score (its public code): sum over the orders n whose
        (n-1)-token context occurs in the corpus of weights[n-2] * p_n(y | context), for each y.
        Not renormalised by the weights that applied and no unigram backoff: 0 where no seen
        order ever saw y after its context (the caller decides what log 0 means)."""
        if len(weights) > self.max_order - 1:
            raise ValueError(f"{len(weights)} order weights but the n-gram file has orders 2..{self.max_order}")
        probs, seen = self.order_probs(context, tokens)
        w = np.zeros(self.max_order - 1)
        w[:len(weights)] = weights
        return np.where(seen, w, 0.0) @ probs

    def prob(self, context: Sequence[int], tokens: Sequence[int], weights: Sequence[float],
             unigram_weight: float) -> np.ndarray:
        """Interpolated p(y | context) for each y in tokens (module docstring). weights[i] is the
        weight of order i + 2."""
        if len(weights) > self.max_order - 1:
            raise ValueError(f"{len(weights)} order weights but the n-gram file has orders 2..{self.max_order}")
        probs, seen = self.order_probs(context, tokens)
        w = np.zeros(self.max_order - 1)
        w[:len(weights)] = weights
        w = np.where(seen, w, 0.0)
        num = w @ probs + unigram_weight * self.unigram_probs(tokens)
        return num / (w.sum() + unigram_weight)


# --------------------------------------------------------------------------- corpora
def read_documents(path, fields: Sequence[str] = ()) -> list[str]:
    """Documents of a corpus file: .jsonl(.gz) rows (the named string fields joined by newlines)
    or a text file split on blank lines."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        docs = []
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            row = json.loads(line)
            if fields:
                missing = [k for k in fields if k not in row]
                if missing:
                    raise ValueError(f"{path} row {i}: no field(s) {', '.join(missing)}")
                docs.append("\n".join(str(row[k]) for k in fields))
            else:
                docs.append("\n".join(v for v in row.values() if isinstance(v, str)))
        return docs
    return [d.strip() for d in text.split("\n\n") if d.strip()]


def build_from_corpus(path, encode, vocabulary: str, vocab_size: int, fields: Sequence[str] = (),
                      max_order: int = 6) -> NGramLM:
    """Count the n-grams of a corpus file. encode: text -> token ids (no special tokens);
    vocabulary: the fingerprint of that token <-> id map (recorded, checked on load)."""
    docs = read_documents(path, fields)
    ids = [encode(d) for d in docs]
    meta = {"corpus": str(path), "fields": list(fields), "vocabulary": vocabulary}
    return NGramLM.build(ids, vocab_size, max_order, meta)


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def cached_build(path, encode, vocabulary: str, vocab_size: int, fields: Sequence[str] = (),
                 max_order: int = 6) -> NGramLM:
    """build_from_corpus, cached under <harness cache>/ngram/ by (corpus bytes, fields, vocabulary,
    orders): the corpus is encoded and counted once."""
    from harness.models import cache_root

    key = hashlib.sha256(json.dumps([file_sha256(path), list(fields), vocabulary, max_order, vocab_size,
                                     FORMAT]).encode()).hexdigest()[:21]
    out = cache_root() / "ngram" / f"{key}.npz"
    if out.exists():
        return NGramLM.load(out)
    lm = build_from_corpus(path, encode, vocabulary, vocab_size, fields, max_order)
    lm.save(out)
    return lm
