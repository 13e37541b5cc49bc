"""GRAD: graph-retrieved adaptive decoding (Nguyen et al., "GRAD: Graph-Retrieved Adaptive Decoding
for Hallucination Mitigation", 2025, arXiv 2511.03900).

A sparse token-transition graph is built from a small corpus with ONE forward of the model per
sequence: for every consecutive pair (c_i, c_i+1) of a sequence, the model's logit of the actual
next token c_i+1 (at position i) is added to the edge weight E(c_i, c_i+1). Weights are kept
non-negative (a negative accumulated logit counts as no evidence). At decode time the graph's row
of the last token is max-normalised, g = E(c, .) / max E(c, .) in [0, 1], and fused with the
model's logits z:

    z' = z + strength x (1 - p_max) x spread x g

where p_max is the model's top probability (the fusion is ADAPTIVE: strong where the model is
unsure, nearly off where it is confident, preserving fluency) and spread = the range of the
model's top-50 logits (so g = 1 with strength x (1 - p_max) = 1 can lift a token from the bottom
of the top 50 to the top). The paper's own adaptive coefficient is not reproduced here (its text
was not available to us); this rule is our reading of "max-normalised and adaptively fused" and
is named as such in the rows (params.fusion = "uncertainty").

Corpus (`graph_path`): a graph built by tools/build_grad_graph.py from a train split (GSM8K
train question + solution pairs), tied to one model's identity; or null = the example's own
sources (Prompt.context: multi-hop QA's retrieved documents), built at the start of each
example (those forwards are the example's, counted in extra.graph_forwards).
Rows: extra.fused (steps whose last token has a graph row), changed (steps where the fused
choice differs from the model's), graph_edges, graph_forwards. Lossy.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.errors import ConfigError
from strategies.adadec import identity
from strategies.core.base import Strategy

ROOT = Path(__file__).resolve().parent.parent
MAX_SEQ = 1024  # tokens of one corpus sequence fed in one forward (longer ones are cut)


class Graph:
    """Sparse token-transition graph: rows[c][d] = sum of the model's logit of d after c."""

    def __init__(self, rows=None, meta=None):
        self.rows: dict[int, dict[int, float]] = rows or {}
        self.meta = meta or {}

    @classmethod
    def build(cls, engine, sequences, progress: bool = False) -> "Graph":
        from tqdm import tqdm

        g = cls()
        for seq in tqdm(sequences, desc="graph forwards", unit="seq", disable=not progress):
            seq = [int(t) for t in seq][:MAX_SEQ]
            if len(seq) < 2:
                continue
            engine.reset()
            logits = engine.forward(seq)  # [n, V]: row i predicts seq[i + 1]
            nxt = torch.as_tensor(seq[1:])
            vals = logits[torch.arange(len(seq) - 1), nxt].tolist()
            for c, d, v in zip(seq[:-1], seq[1:], vals):
                row = g.rows.setdefault(c, {})
                row[d] = row.get(d, 0.0) + v
        engine.reset()
        return g

    @property
    def edges(self) -> int:
        return sum(len(r) for r in self.rows.values())

    def row(self, c: int, V: int) -> torch.Tensor | None:
        """g = max-normalised non-negative weights of c's out-edges [V], or None (no evidence)."""
        r = self.rows.get(int(c))
        if not r:
            return None
        g = torch.zeros(V)
        idx = torch.as_tensor([d for d in r if d < V], dtype=torch.long)
        if not len(idx):
            return None
        g[idx] = torch.as_tensor([r[int(d)] for d in idx], dtype=torch.float32).clamp_min(0)
        m = g.max()
        return g / m if m > 0 else None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"rows": self.rows, "meta": self.meta}, path)

    @classmethod
    def load(cls, path: Path) -> "Graph":
        d = torch.load(path, weights_only=True)
        return cls({int(k): {int(a): float(b) for a, b in v.items()} for k, v in d["rows"].items()}, d["meta"])


def fuse(logits: torch.Tensor, g: torch.Tensor, strength: float, top: int = 50) -> torch.Tensor:
    """z' = z + strength x (1 - p_max) x spread(top-`top` logits) x g."""
    z = logits.float()
    p_max = float(torch.softmax(z, -1).max())
    t = torch.topk(z, min(top, z.shape[-1])).values
    return z + strength * (1 - p_max) * float(t[0] - t[-1]) * g.to(z.device)


class GRAD(Strategy):
    name = "grad"
    lossless = False
    summary_fields = ("fused", "changed", "graph_edges")
    ARTIFACT_ATTRS = Strategy.ARTIFACT_ATTRS + ("graph_path",)

    def __init__(self, graph_path: str | None = None, strength: float = 1.0, top: int = 50, sampling=None):
        super().__init__(sampling)
        if strength < 0 or top < 2:
            raise ConfigError(f"{self.name}: strength must be >= 0 and top >= 2")
        self.strength, self.top, self.fusion = float(strength), int(top), "uncertainty"
        self.graph = None
        if graph_path is not None:
            p = Path(graph_path)
            p = p if p.is_absolute() else ROOT / p
            if not p.exists():
                raise ConfigError(f"{self.name}: graph {p} does not exist; build one with python -m "
                                  f"tools.build_grad_graph --model <model> --out {graph_path} (or graph_path=null "
                                  f"to build it from each example's context)")
            self.graph = Graph.load(p)
            self.graph_path = str(p)

    def setup(self, target, draft=None) -> None:
        if self.graph is not None and self.graph.meta.get("model") != identity(target):
            want = self.graph.meta.get("model") or {}
            raise ConfigError(f"{self.name}: graph {self.graph_path} was built with {want.get('name')}, not "
                              f"{target.name}: its edges are that model's logits")

    def decode(self, state) -> None:
        target = state.target
        graph, built = self.graph, 0
        if graph is None:
            sources = state.prompt.sources
            if not sources:
                raise ConfigError(f"{self.name}: graph_path=null builds the graph from the example's context, "
                                  f"but this task gives none (Prompt.context / nbest)")
            f0 = target.forwards
            graph = Graph.build(target, [target.encode(s) for s in sources])
            built = target.forwards - f0
        fused = changed = 0
        logits = target.forward(state.seq, last_only=True)
        while True:
            g = graph.row(state.seq[-1], logits.shape[-1])
            z = logits
            if g is not None and self.strength > 0:
                z = fuse(logits, g, self.strength, self.top)
                fused += 1
            tok = self.sampling.next_token(z, state.rng)
            changed += int(tok != int(logits.argmax()))
            state.emit([tok])
            if state.done:
                break
            logits = target.forward([tok], last_only=True)
        state.extra.update({"fused": fused, "changed": changed, "graph_edges": graph.edges, "graph_forwards": built})
