"""The offline default step scorer: an LM judge (conf/scorer/lm_judge.yaml).

An available packed causal LM (by default the policy itself) is asked, with a fixed prompt,
whether the LAST step of a partial solution is correct; the step's score is
P("Yes") / (P("Yes") + P("No")) at the answer position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from harness.errors import ConfigError
from scorers.base import Scorer


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
