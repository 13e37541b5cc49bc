"""Step scorers (process reward models and verifiers) for test-time search.

    scorer.bind(policy)                                   # once, after the models load
    scores = scorer.score(question, [steps_a, steps_b])   # per-step scores in [0, 1], one list per candidate
    value  = aggregate(scores[0], "min")                  # last | min | prod | mean

A candidate solution is a list of reasoning steps (strings; a step ends at a blank line).
`score` is batched: every candidate's steps are scored, and `calls` counts the scorer's model
forwards (the "PRM calls" in every row). Scorers are built by Hydra from a nested `_target_`
node (`strategy.scorer`), and `describe()` names the scorer in every row.

Adapters for real PRMs (Qwen2.5-Math-PRM, Math-Shepherd, Skywork-PRM) live in
`harness/prm.py`; the default that runs offline here is `LMJudge`: an available packed causal
LM asked, with a fixed prompt, whether the LAST step of a partial solution is correct; the
step's score is P("Yes") / (P("Yes") + P("No")) at the answer position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from harness.errors import ConfigError

AGGREGATES = ("last", "min", "prod", "mean")


def aggregate(step_scores: Sequence[float], how: str) -> float:
    """One value per candidate from its per-step scores (an empty list scores 0)."""
    if how not in AGGREGATES:
        raise ConfigError(f"unknown step-score aggregate '{how}' (choose from {', '.join(AGGREGATES)})")
    if not step_scores:
        return 0.0
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "mean":
        return float(sum(step_scores) / len(step_scores))
    return float(math.prod(step_scores))


class Scorer:
    """Scores each step of each candidate solution; counts its forwards in `calls`."""

    name = "scorer"

    def __init__(self):
        self.calls = 0  # model forwards spent scoring (cumulative; strategies read differences)
        self.tokens = 0  # tokens the scorer processed (cumulative)

    def bind(self, policy) -> None:
        """Load weights / attach to the already-loaded policy engine. Called once by setup()."""

    def score(self, question: str, candidates: Sequence[Sequence[str]]) -> list[list[float]]:
        raise NotImplementedError

    def score_last(self, question: str, candidates: Sequence[Sequence[str]]) -> list[float]:
        """The score of each candidate's last step only (what step-wise search needs). Scorers
        that can score one step without the others override this to save work."""
        return [s[-1] if s else 0.0 for s in self.score(question, candidates)]

    def describe(self) -> dict:
        return {"name": self.name}


class LMJudge(Scorer):
    """An LM asked whether the last step of a partial solution is correct.

    score(step i) = P(Yes) / (P(Yes) + P(No)) after the fixed judge prompt below, computed from
    the judge's next-token logits. The judge is the policy model itself (`model: null`, no extra
    weights: the default that works offline) or any model config (`model: {_target_: ModelSpec ...}`).
    Prompts of a batch are scored in ONE padded forward (`engine.last_logits_batch`).
    """

    name = "lm_judge"
    PROMPT = ("You are checking a solution to a math problem one step at a time.\n\n"
              "Problem:\n{question}\n\nSolution so far:\n{previous}\n\nLatest step:\n{step}\n\n"
              "Is the latest step correct and useful? Answer Yes or No.")

    def __init__(self, model=None, batch_size: int = 8, max_prompt_tokens: int = 1536):
        super().__init__()
        if batch_size < 1 or max_prompt_tokens < 64:
            raise ConfigError("lm_judge: need batch_size >= 1 and max_prompt_tokens >= 64")
        self.model, self.batch_size, self.max_prompt_tokens = model, batch_size, max_prompt_tokens
        self.engine = None
        self.yes_ids: list[int] = []
        self.no_ids: list[int] = []

    def bind(self, policy) -> None:
        self.engine = self.model.load() if self.model is not None else policy
        yes = set(_answer_ids(self.engine, ("Yes", " Yes", "yes", " yes", "YES")))
        no = set(_answer_ids(self.engine, ("No", " No", "no", " no", "NO")))
        self.yes_ids, self.no_ids = sorted(yes - no), sorted(no - yes)  # a shared first token says nothing
        if not self.yes_ids or not self.no_ids:
            raise ConfigError("lm_judge: the judge's tokenizer does not separate Yes from No by their first token")

    def describe(self) -> dict:
        judge = self.model.describe()["name"] if self.model is not None else "policy"
        return {"name": f"{self.name}({judge})", "judge": judge}

    def _prompt_ids(self, question: str, steps: Sequence[str]) -> list[int]:
        previous = "\n\n".join(s.strip() for s in steps[:-1]) or "(none yet)"
        text = self.PROMPT.format(question=question.strip(), previous=previous, step=steps[-1].strip())
        ids = self.engine.render([{"role": "user", "content": text}])
        if len(ids) > self.max_prompt_tokens:  # keep the head (problem) and the tail (latest step)
            head = self.max_prompt_tokens // 3
            ids = ids[:head] + ids[-(self.max_prompt_tokens - head):]
        return ids

    def _p_yes(self, prompts: list[list[int]]) -> list[float]:
        out = []
        for i in range(0, len(prompts), self.batch_size):
            batch = prompts[i:i + self.batch_size]
            logits = self.engine.last_logits_batch(batch, count=False)  # [b, V]
            self.calls += 1
            self.tokens += sum(len(p) for p in batch)
            lp = torch.log_softmax(logits, -1)
            yes = torch.logsumexp(lp[:, self.yes_ids], -1)
            no = torch.logsumexp(lp[:, self.no_ids], -1)
            out += torch.sigmoid(yes - no).tolist()
        return out

    def score(self, question, candidates):
        jobs = [(c, j) for c, steps in enumerate(candidates) for j in range(len(steps))]
        vals = self._p_yes([self._prompt_ids(question, candidates[c][: j + 1]) for c, j in jobs])
        out: list[list[float]] = [[] for _ in candidates]
        for (c, _), v in zip(jobs, vals):
            out[c].append(v)
        return out

    def score_last(self, question, candidates):
        idx = [i for i, s in enumerate(candidates) if s]
        vals = self._p_yes([self._prompt_ids(question, candidates[i]) for i in idx])
        out = [0.0] * len(candidates)
        for i, v in zip(idx, vals):
            out[i] = v
        return out


def _answer_ids(engine, words) -> list[int]:
    """The first token of each answer word's encoding (the whole word in real tokenizers; a
    byte-level tokenizer gives its first byte)."""
    tok, ids = engine.tokenizer, set()
    for w in words:
        enc = tok.encode(w, add_special_tokens=False)
        if len(enc):
            ids.add(int(enc[0]))
    return sorted(ids)
