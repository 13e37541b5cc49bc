"""A trained value head (an outcome reward model) as a step scorer (conf/scorer/value_head.yaml).

    r(question, steps[:i]) = sigmoid(w . z + b),  z = (x - mu) / sd,
    x = [h(last token of step i), mean of h over the solution's tokens up to it]

h = the last-layer hidden states (after the final norm) of a frozen trunk reading the question
(as a chat user turn) followed by the solution so far, steps joined by blank lines. The head
(w, b, mu, sd) is trained by `python -m tools.train_value_head` on the POLICY'S OWN sampled
solutions to GSM8K TRAIN problems, every step prefix labelled by whether its solution's final
answer was right: r estimates P(the policy's solution through this prefix ends right), an
outcome-supervised value (no step labels). It is not the policy judging itself: the trunk's
features are read by a head fit to outcome labels.

The trunk is the policy's own weights (`model: null`: no extra weights, one forward per scored
candidate) or any model config. One file holds the head and its provenance (trunk, tokenizer
fingerprint, the sample rows' sha256, problems, held-out AUC); the file's sha256 is part of the
run identity. A head trained on another trunk or tokenizer is refused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from harness.errors import ConfigError
from scorers.base import Scorer

META_KEY = "value_head"
ROOT = Path(__file__).resolve().parent.parent


def resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or p.exists() else ROOT / p


def read_head(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    p = resolve(str(path))
    if not p.is_file():
        raise ConfigError(f"value_head: no head file at {path} (train one: python -m tools.train_value_head)")
    from safetensors import SafetensorError

    try:
        with safe_open(str(p), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[META_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (KeyError, ValueError, OSError, json.JSONDecodeError, SafetensorError) as e:
        raise ConfigError(f"value_head: {path} is not a value-head file ({type(e).__name__}: {e})") from e
    for k in ("w", "b", "mu", "sd"):
        if k not in tensors:
            raise ConfigError(f"value_head: {path} lacks tensor '{k}'")
    return tensors, meta


def save_head(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().float() for k, v in tensors.items()}, str(p), metadata={META_KEY: json.dumps(meta)})
    return p


def solution_ids(engine, question: str, steps: Sequence[str], max_tokens: int) -> tuple[list[int], int, list[int]]:
    """(ids, P, ends): the question as a chat user turn (P tokens), then the steps joined by blank
    lines; ends[i] = the index of step i's last token. A sequence over max_tokens keeps the
    question and the END of the solution (earlier solution tokens dropped; ends shifted; a step
    that lies wholly in the dropped part gets the first kept position)."""
    prompt = engine.render([{"role": "user", "content": question.strip()}])
    sol, ends = [], []
    for i, st in enumerate(steps):
        piece = engine.encode(("\n\n" if i else "") + st.strip())
        sol += piece or engine.encode(" ")
        ends.append(len(sol) - 1)
    room = max(max_tokens - len(prompt), 1)
    cut = max(len(sol) - room, 0)
    P = len(prompt)
    return prompt + sol[cut:], P, [P + max(e - cut, 0) for e in ends]


def features(h: torch.Tensor, P: int, ends: Sequence[int]) -> torch.Tensor:
    """[len(ends), 2d]: the hidden state at each step end beside the running mean of the solution's
    hidden states up to it (h: [len, d] for one sequence whose solution starts at P)."""
    sol = h[P:]
    csum = sol.cumsum(0)
    rows = []
    for e in ends:
        k = e - P
        rows.append(torch.cat([h[e], csum[k] / (k + 1)]))
    return torch.stack(rows)


def trunk_features(engine, question: str, candidates: Sequence[Sequence[str]], max_tokens: int,
                   batch_size: int) -> tuple[list[torch.Tensor], int, int]:
    """Per candidate a [n_steps, 2d] feature matrix; also (forwards, tokens) spent."""
    jobs = [solution_ids(engine, question, steps, max_tokens) for steps in candidates]
    out, calls, tokens = [], 0, 0
    for i in range(0, len(jobs), batch_size):
        part = jobs[i:i + batch_size]
        hs = engine.hidden_batch([ids for ids, _, _ in part], count=False)
        calls += 1
        tokens += sum(len(ids) for ids, _, _ in part)
        out += [features(h, P, ends) for h, (_, P, ends) in zip(hs, part)]
    return out, calls, tokens


class ValueHead(Scorer):
    """Outcome-supervised value head over a frozen trunk (see the module docstring)."""

    name = "value_head"

    def __init__(self, path: str, model=None, batch_size: int = 4, max_tokens: int = 2048):
        super().__init__()
        if batch_size < 1 or max_tokens < 64:
            raise ConfigError("value_head: need batch_size >= 1 and max_tokens >= 64")
        self.path, self.model, self.batch_size, self.max_tokens = str(path), model, batch_size, max_tokens
        self.tensors, self.meta = read_head(self.path)  # a bad file fails before any model loads
        self.trunk = None

    def artifacts(self) -> dict[str, str]:
        return {"path": self.path}

    def bind(self, policy) -> None:
        self.trunk = self.model.load() if self.model is not None else policy
        want_name, want_vocab = self.meta.get("trunk"), self.meta.get("vocabulary")
        if want_name and self.trunk.name != want_name:
            raise ConfigError(f"value_head: {self.path} was trained on trunk {want_name}, not {self.trunk.name} "
                              f"(set scorer.model to that model, or train a head for this one)")
        if want_vocab and self.trunk.vocabulary_fingerprint() != want_vocab:
            raise ConfigError(f"value_head: {self.path} was trained with another tokenizer than {self.trunk.name}'s")
        if self.tensors["w"].numel() != 2 * self.trunk.hidden_size:
            raise ConfigError(f"value_head: {self.path} expects {self.tensors['w'].numel() // 2}-wide hidden states, "
                              f"{self.trunk.name} has {self.trunk.hidden_size}")

    def describe(self) -> dict:
        trunk = self.model.describe()["name"] if self.model is not None else "policy"
        return {"name": f"{self.name}({Path(self.path).stem}; trunk {trunk})", "trunk": trunk,
                "trained_on": self.meta.get("samples_task"), "heldout_auc": self.meta.get("heldout_auc")}

    def values(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tensors
        z = (x - t["mu"]) / t["sd"]
        return torch.sigmoid(z @ t["w"].reshape(-1) + t["b"].reshape(()))

    def score(self, question, candidates):
        idx = [i for i, s in enumerate(candidates) if s]
        feats, calls, tokens = trunk_features(self.trunk, question, [candidates[i] for i in idx],
                                              self.max_tokens, self.batch_size)
        self.calls += calls
        self.tokens += tokens
        out: list[list[float]] = [[] for _ in candidates]
        for i, f in zip(idx, feats):
            out[i] = self.values(f).tolist()
        return out

    def score_last(self, question, candidates):
        return [s[-1] if s else 0.0 for s in self.score(question, candidates)]
