"""Short-answer QA metrics, shared by the QA tasks (pure functions, no task state).

Two families:

* SQuAD (Rajpurkar et al. 2016, the official v1.1/v2.0 evaluation script): normalise both strings
  (lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace), then
  exact match, or bag-of-tokens F1. With several gold answers (aliases) the score is the maximum.
* Substring EM of Huang et al. (ACL 2025, "Masking in Multi-hop QA", compute_metrics.py): delete
  every character outside ``[a-zA-Z0-9\\s]``, lower-case, and score 1 when a normalised gold answer
  (or any alias) is a *substring* of the normalised prediction. Whitespace is not collapsed and
  articles are kept, exactly as in the paper's code.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Callable, Iterable

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_NOT_ALNUM_SPACE = re.compile(r"[^a-zA-Z0-9\s]")


def normalize_squad(text: str) -> str:
    """SQuAD answer normalisation: lower, remove punctuation, remove a/an/the, collapse spaces.

    The order is the official script's: lower -> punctuation -> articles -> whitespace, so
    "The Eiffel-Tower!" becomes "eiffeltower" (punctuation is deleted, not replaced by a space).
    """
    text = (text or "").lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_tokens(text: str) -> list[str]:
    """Whitespace tokens of the SQuAD-normalised text."""
    return normalize_squad(text).split()


def squad_em(prediction: str, gold: str) -> float:
    """1.0 when prediction and gold are equal after SQuAD normalisation, else 0.0."""
    return float(normalize_squad(prediction) == normalize_squad(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """Token-level F1 between the SQuAD-normalised prediction and gold (multiset overlap).

    precision = overlap / len(prediction tokens), recall = overlap / len(gold tokens),
    F1 = 2PR / (P + R). When either side normalises to no tokens, F1 is 1.0 if both are empty and
    0.0 otherwise (the SQuAD v2.0 script's rule; v1.1 gives 0.0 for both-empty).
    """
    pred, ref = squad_tokens(prediction), squad_tokens(gold)
    if not pred or not ref:
        return float(pred == ref)
    overlap = sum((Counter(pred) & Counter(ref)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def max_over_golds(metric: Callable[[str, str], float], prediction: str, golds: Iterable[str]) -> float:
    """The best score of `prediction` against any of the gold answers (0.0 when there are none)."""
    return max((metric(prediction, g) for g in golds), default=0.0)


def normalize_substring(text: str) -> str:
    """Huang et al.'s normalisation: delete chars outside [a-zA-Z0-9\\s], then lower-case."""
    return _NOT_ALNUM_SPACE.sub("", text or "").lower()


def substring_em(prediction: str, golds: Iterable[str]) -> float:
    """1.0 when any normalised gold answer is a substring of the normalised prediction.

    Faithful to the paper, including its edge case: a gold that normalises to "" (e.g. an answer
    written only in non-ASCII letters) is a substring of every prediction.
    """
    pred = normalize_substring(prediction)
    return float(any(normalize_substring(g) in pred for g in golds))


def qa_scores(prediction: str, golds: Iterable[str]) -> dict:
    """All three metrics of one prediction against a list of gold answers (answer + aliases)."""
    golds = list(golds)
    return {"substring_em": substring_em(prediction, golds),
            "squad_em": max_over_golds(squad_em, prediction, golds),
            "squad_f1": max_over_golds(squad_f1, prediction, golds)}
