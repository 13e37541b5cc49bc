"""AdaDec: uncertainty-guided adaptive decoding for code ("Towards Better Code Generation: Adaptive
Decoding with Uncertainty Guidance", He et al. 2025, arXiv 2506.08980).

Greedy decoding goes wrong at a few uncertain tokens. AdaDec decodes greedily, except when the
next-token entropy H (nats, the model's own distribution at T = 1) reaches a threshold tau:
there it PAUSES and reranks the top-k (3) candidates by a lookahead: each candidate is extended
greedily by L (5) tokens, and its score is the mean log-probability of the candidate and its
lookahead tokens; the best-scoring candidate is emitted (only that token: decoding then goes
on from it, greedily or with another pause).

tau is learned per model (tools/learn_adadec_threshold.py): the model reads reference solutions
of calibration problems (never the evaluated ones), and at every reference position a logistic
regression of "the greedy token differs from the reference" on H gives tau at its decision
boundary (class-balanced). The artifact records the model, its vocabulary, the data and the
fit; a missing artifact is refused when the strategy is built, one for another model at setup
(before any example). `threshold` may instead be given as a number (recorded in the rows).

The k lookahead branches grow as one token tree on the target (one forward per lookahead
depth, L forwards per pause; the branches' cache slots are dropped after the choice).
Rows: extra.pauses, changed (pauses whose choice differs from greedy), lookahead_forwards.
Lossy (it is not the model's distribution); at tau = infinity it is greedy.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.errors import ConfigError
from strategies.core.base import Strategy
from strategies.core.trees import TreeDrafter

ROOT = Path(__file__).resolve().parent.parent


def identity(engine) -> dict:
    """What a threshold is tied to: the model's name, depth and vocabulary."""
    return {"name": engine.name, "num_layers": int(engine.num_layers), "vocabulary": engine.vocabulary_fingerprint()}


def entropy(logits: torch.Tensor) -> float:
    lp = torch.log_softmax(logits.float(), -1)
    return float(-(lp.exp() * lp).sum())


class AdaDec(Strategy):
    name = "adadec"
    lossless = False
    deterministic = True
    needs_artifact = True  # the shipped threshold belongs to one model: the YAML-wide tiny-model tests skip it
    needs = frozenset({"rollback", "tree_mask"})
    summary_fields = ("pauses", "changed", "lookahead_forwards")
    ARTIFACT_ATTRS = Strategy.ARTIFACT_ATTRS + ("threshold_path",)

    def __init__(self, threshold_path: str | None = None, threshold: float | None = None, top_k: int = 3,
                 lookahead: int = 5, sampling=None):
        super().__init__(sampling)
        if not self.sampling.greedy:
            raise ConfigError(f"{self.name}: AdaDec is greedy decoding with reranking; set strategy.sampling.temperature=0")
        if (threshold_path is None) == (threshold is None):
            raise ConfigError(f"{self.name}: give exactly one of threshold_path (a learned threshold, "
                              f"tools/learn_adadec_threshold.py) and threshold (a number)")
        if top_k < 2 or lookahead < 1:
            raise ConfigError(f"{self.name}: top_k must be >= 2 and lookahead >= 1")
        self.top_k, self.lookahead = int(top_k), int(lookahead)
        self.meta = None
        if threshold_path is not None:
            p = Path(threshold_path)
            p = p if p.is_absolute() else ROOT / p
            if not p.exists():
                raise ConfigError(f"{self.name}: threshold artifact {p} does not exist; learn one with "
                                  f"python -m tools.learn_adadec_threshold --model <model> --out {threshold_path}")
            self.meta = json.loads(p.read_text())
            threshold = self.meta["threshold"]
            self.threshold_path = str(p)
        self.threshold = float(threshold)

    def setup(self, target, draft=None) -> None:
        if self.meta is not None:
            want, got = self.meta["model"], identity(target)
            if want != got:
                raise ConfigError(f"{self.name}: threshold {self.threshold_path} was learned for {want['name']} "
                                  f"({want['num_layers']} layers, vocabulary {want['vocabulary']}), not for "
                                  f"{got['name']} ({got['num_layers']} layers, vocabulary {got['vocabulary']})")

    def decode(self, state) -> None:
        target, L = state.target, self.lookahead
        tree = TreeDrafter(target, self.sampling)
        pauses = changed = look = 0
        while not state.done:
            logits = tree.begin(state.seq)
            tok = int(logits.argmax())
            if entropy(logits) >= self.threshold and state.remaining > 1:
                pauses += 1
                lp0 = torch.log_softmax(logits.float(), -1)
                cands = torch.topk(logits, min(self.top_k, logits.shape[-1])).indices.tolist()
                score = torch.tensor([float(lp0[c]) for c in cands], device=lp0.device)
                nodes = [tree.add(c, -1) for c in cands]
                for j in range(L):
                    lg = tree.expand(nodes)
                    look += 1
                    lps = torch.log_softmax(lg.float(), -1)
                    nxt = lps.argmax(-1)
                    score += lps[torch.arange(len(nodes)), nxt]
                    if j + 1 < L:
                        nodes = [tree.add(int(nxt[r]), nodes[r]) for r in range(len(nodes))]
                tree.finish()  # drop the branches' slots
                best = int(torch.argmax(score / (1 + L)))
                changed += int(cands[best] != tok)
                tok = cands[best]
            state.emit([tok])
        state.extra.update({"pauses": pauses, "changed": changed, "lookahead_forwards": look})
