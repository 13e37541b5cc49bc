"""The Strategy contract.

    trace = strategy.generate(target, prompt_ids, max_new_tokens, rng, draft=None)

A strategy owns its loop and nothing else: it never sees the task or the gold answer, keeps no
state across examples (unless its config says so and `params()` records it), and declares what
it needs from the engines (`needs`: capability names; `draft`: a ModelSpec the runner loads).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from harness.trace import Trace
from strategies import probs as P


@dataclass
class SamplingParams:
    """How a next token is drawn from logits. temperature 0 = greedy (argmax)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0

    def __post_init__(self):
        from harness.errors import ConfigError

        if self.temperature < 0 or not 0 < self.top_p <= 1 or not 0 <= self.min_p < 1 or self.top_k < 0:
            raise ConfigError(f"invalid sampling parameters {asdict(self)}: need temperature >= 0, "
                              f"0 < top_p <= 1, 0 <= min_p < 1, top_k >= 0")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return P.process(logits, self.temperature, self.top_k, self.top_p, self.min_p)

    def next_token(self, logits: torch.Tensor, rng: torch.Generator) -> int:
        if self.greedy:
            return int(logits.argmax())
        return P.sample(self.probs(logits), rng)


class Strategy:
    name: str = "strategy"
    lossless: bool = True  # output distribution equals the target's (== greedy at T=0)
    needs: frozenset[str] = frozenset()  # engine capabilities required (see HFEngine.capabilities)
    draft = None  # a harness.models.ModelSpec when the method drafts with another model

    def __init__(self, sampling: SamplingParams | dict | None = None):
        if sampling is None:
            sampling = SamplingParams()
        elif not isinstance(sampling, SamplingParams):
            sampling = SamplingParams(**dict(sampling))
        self.sampling = sampling

    def params(self) -> dict:
        """Every behaviour-changing parameter, for the rows."""
        out = {"name": self.name, "lossless": self.lossless, **asdict(self.sampling)}
        out.update({k: v for k, v in vars(self).items() if isinstance(v, (int, float, str, bool)) and k != "name"})
        if self.draft is not None:
            out["draft"] = self.draft.describe()
        return out

    ARTIFACT_ATTRS = ("head_path", "ngram_path", "corpus", "step_profile")

    def artifacts(self) -> dict[str, str]:
        """Files this strategy loads (trained heads, n-gram corpora, step profiles): the runner
        hashes their CONTENT into the run identity and records the hashes in meta.json."""
        return {a: str(getattr(self, a)) for a in self.ARTIFACT_ATTRS if getattr(self, a, None)}

    def setup(self, target, draft=None) -> None:
        """Called once by the runner after the models load, outside any example's timing (e.g.
        to profile the machine). Whatever it sets must be recorded in the rows."""

    def generate(self, target, prompt_ids: list[int], max_new_tokens: int, rng: torch.Generator,
                 draft=None) -> Trace:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers for subclasses
    @staticmethod
    def begin(*engines) -> tuple[Trace, list[tuple[int, int]]]:
        """Reset the engines' caches; remember their counters to attribute this example's work."""
        for e in engines:
            if e is not None:
                e.reset()
        return Trace(), [e.counters() if e is not None else (0, 0) for e in engines]

    @staticmethod
    def end(trace: Trace, snap, target, max_new_tokens: int, draft=None) -> Trace:
        trace.target_forwards = target.forwards - snap[0][0]
        trace.target_tokens_fed = target.tokens_fed - snap[0][1]
        if draft is not None:
            trace.draft_forwards = draft.forwards - snap[1][0]
        return trace.finish_with(target.eos_ids, max_new_tokens)

    def verify_step(self, target, seq: list[int], drafts: list[int], q: torch.Tensor | None,
                    rng: torch.Generator, trace: Trace) -> list[int]:
        """Verify a chain of drafts in ONE target forward and commit the result.

        Invariant: the target's cache holds a strict prefix of seq (at the start of an example,
        nothing: the prompt is fed together with the first drafts, saving the prefill forward).
        Feeds the uncached tail of seq + drafts, keeps the accepted prefix, rolls back the rest
        and returns the new tokens (accepted drafts + correction or bonus token).
        q: [len(drafts), V] draft probabilities, or None for deterministic drafts (point mass).
        """
        d = len(drafts)
        logits = target.forward(seq[target.length:] + drafts)[-(d + 1):]  # [d+1, V]
        if not drafts:
            return [self.sampling.next_token(logits[0], rng)]
        p = logits if self.sampling.greedy else self.sampling.probs(logits)
        n, nxt = P.verify_chain(p, q, drafts, rng, self.sampling.greedy)
        trace.record_verification(d, n)
        target.rollback(d - n)
        return drafts[:n] + [nxt]

    def tree_logits(self, target, seq: list[int], tokens: list[int], parents: list[int]) -> torch.Tensor:
        """ONE target forward over the uncached tail of seq (a chain) + a token tree.

        Same cache invariant as `verify_step`. Each node attends to the tail and to its own
        ancestors, at position = depth. Returns logits [n + 1, V]: row 0 after the tail (the
        root context), row i + 1 after node i. The n node slots stay cached: call
        `target.keep(path, n)` once the accepted path is known.
        """
        tail = seq[target.length:]
        t = len(tail)
        allowed, depth = self.tree_layout(t, parents)
        depths = list(range(t)) + [t + d for d in depth]
        return target.forward(tail + tokens, tree=allowed, depths=torch.tensor(depths))[t - 1:]

    @staticmethod
    def tree_layout(t: int, parents: list[int]) -> tuple[torch.Tensor, list[int]]:
        """The attention pattern of a chain of t tokens followed by a token tree, and each node's
        depth: allowed[i, j] = position i may attend to j ([t + n, t + n], causal over the chain,
        every node sees the chain, its ancestors and itself)."""
        if any(not -1 <= par < i for i, par in enumerate(parents)):
            raise ValueError("tree nodes must come after their parents (parents[i] < i)")
        n = len(parents)
        depth = []
        for par in parents:
            depth.append(0 if par < 0 else depth[par] + 1)
        allowed = torch.zeros(t + n, t + n, dtype=torch.bool)
        allowed[:t, :t] = torch.tril(torch.ones(t, t, dtype=torch.bool))
        allowed[t:, :t] = True
        for i, par in enumerate(parents):
            allowed[t + i, t + i] = True
            if par >= 0:
                allowed[t + i, t:] |= allowed[t + par, t:]
        return allowed, depth

    def verify_tree_step(self, target, seq: list[int], tokens: list[int], parents: list[int],
                         q_by_parent: dict | None, rng: torch.Generator, trace: Trace) -> list[int]:
        """Verify a draft token tree in ONE target forward and commit the accepted path.

        Recursive rejection sampling over siblings / longest greedy path (probs.verify_tree);
        keeps the accepted path's cache slots (`engine.keep`), drops the rest, returns the new
        tokens (accepted path + correction or bonus token).
        """
        n = len(tokens)
        logits = self.tree_logits(target, seq, tokens, parents)  # [n+1, V]
        p = logits if self.sampling.greedy else self.sampling.probs(logits)
        path, nxt = P.verify_tree(p, tokens, parents, q_by_parent, rng, self.sampling.greedy)
        trace.record_tree_verification(parents, len(path))
        target.keep(path, n)
        return [tokens[i] for i in path] + [nxt]
