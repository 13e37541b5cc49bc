"""The Strategy contract.

    strategy.decode(state)        # state: harness.decoding.DecodingState (engines, prompt, budget, rng)
    trace = strategy.generate(target, prompt_ids, max_new_tokens, rng, draft=None)   # the same, direct

A strategy owns its loop and nothing else: it never sees the task or the gold answer, keeps no
state across examples (unless its config says so and `params()` records it), and declares what
it needs from the engines (`needs`: capability names of harness/engines/base.py; `draft`: a
ModelSpec the runner loads). `bind_task` gives it the task's answer functions (never the gold).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from harness.errors import ConfigError
from harness.decoding import DecodingState, Prompt
from harness.trace import Trace
from strategies.core import probs as P
from strategies.core import trees as T


@dataclass
class SamplingParams:
    """How a next token is drawn from logits. temperature 0 = greedy (argmax)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    top_h: float = 0.0  # Top-H's alpha (0 = off): see strategies/core/probs.top_h_keep

    def __post_init__(self):
        from harness.errors import ConfigError

        if self.temperature < 0 or not 0 < self.top_p <= 1 or not 0 <= self.min_p < 1 or self.top_k < 0 \
                or not 0 <= self.top_h <= 1:
            raise ConfigError(f"invalid sampling parameters {asdict(self)}: need temperature >= 0, "
                              f"0 < top_p <= 1, 0 <= min_p < 1, top_k >= 0, 0 <= top_h <= 1")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return P.process(logits, self.temperature, self.top_k, self.top_p, self.min_p, self.top_h)

    def next_token(self, logits: torch.Tensor, rng: torch.Generator) -> int:
        if self.greedy:
            return int(logits.argmax())
        return P.sample(self.probs(logits), rng)


class Strategy:
    name: str = "strategy"
    lossless: bool = True  # output distribution equals the target's (== greedy at T=0)
    search: bool = False  # a test-time search (many candidates): summaries report its cost, not a speedup
    needs: frozenset[str] = frozenset()  # engine capabilities required (see HFEngine.capabilities)
    draft = None  # a harness.models.ModelSpec when the method drafts with another model
    summary_fields: tuple[str, ...] = ()  # summary / per-example extra counters the run summary prints
    # every tensor op on the engines' logits is device-agnostic (tensors made with the logits'
    # device, generators from the runner), so the strategy runs with model.logits_on_device
    # (logits left on a GPU, sampling there); tests/test_device_logits.py runs every strategy
    # under a fake CUDA device. False opts out (refused on that option before models load)
    device_logits: bool = True

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

    def row_labels(self) -> dict:
        """Fields every row carries besides its counters: the draft model and the scorer (None
        when the strategy has none), so that every row has the same columns."""
        return {"draft_model": self.draft.describe().get("name") if self.draft is not None else None,
                "scorer": None}

    ARTIFACT_ATTRS = ("head_path", "ngram_path", "corpus", "step_profile")

    def artifacts(self) -> dict[str, str]:
        """Files this strategy loads (trained heads, n-gram corpora, step profiles): the runner
        hashes their CONTENT into the run identity and records the hashes in meta.json."""
        return {a: str(getattr(self, a)) for a in self.ARTIFACT_ATTRS if getattr(self, a, None)}

    def bind_task(self, task) -> None:
        """Called by the runner before models load. Voting strategies take the task's answer
        functions here (`extract_answer`, `same_answer`), never the gold; the default takes nothing."""

    def check_model(self, model_spec) -> None:
        """Called before any weight loads with the model's ModelSpec: refuse a model this
        strategy's artifacts were not made for (one ConfigError line). Default: accept any."""

    def setup(self, target, draft=None) -> None:
        """Called once by the runner after the models load, outside any example's timing (e.g.
        to profile the machine). Whatever it sets must be recorded in the rows."""

    def decode(self, state: DecodingState) -> None:
        """Decode one example: read state.prompt / state.seq, drive state.target (and state.draft),
        emit tokens with state.emit until state.done. The whole contract of a strategy."""
        raise NotImplementedError

    def generate(self, target, prompt, max_new_tokens: int, rng: torch.Generator, draft=None,
                 messages=None, nbest=None, context=None) -> Trace:
        """Decode one prompt (a Prompt, or token ids) and return its Trace: what the runner does
        for each example, callable directly (tests, benchmarks)."""
        if not isinstance(prompt, Prompt):
            prompt = Prompt(list(prompt), messages, nbest, context)
        state = DecodingState(target, prompt, max_new_tokens, rng, draft)
        self.decode(state)
        return state.finish()

    # ------------------------------------------------------------------ verification (feed, then accept)
    def target_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """What the accept rules compare: the logits themselves at T = 0 (argmax), else p."""
        return logits if self.sampling.greedy else self.sampling.probs(logits)

    def accept(self, state: DecodingState, p: torch.Tensor, drafts: list[int], q: torch.Tensor | None) -> tuple[int, int]:
        """The accept step of chain verification. p: [len(drafts) + 1, V] from `target_probs`,
        row j after drafts[:j]; q: [len(drafts), V] draft probabilities or None (point masses).
        Returns (accepted count, next token: correction or bonus); records the verification."""
        if not drafts:
            return 0, (int(p[0].argmax()) if self.sampling.greedy else P.sample(p[0], state.rng))
        n, nxt = P.verify_chain(p, q, drafts, state.rng, self.sampling.greedy)
        state.verified_chain(len(drafts), n)
        return n, nxt

    def verify_step(self, state: DecodingState, drafts: list[int], q: torch.Tensor | None) -> list[int]:
        """Verify a chain of drafts in ONE target forward (feed + accept) and roll back the rest.

        Invariant: the target's cache holds a strict prefix of state.seq (at the start of an
        example, nothing: the prompt is fed together with the first drafts, saving the prefill
        forward). Returns the new tokens (accepted drafts + correction or bonus token), to emit.
        """
        target, d = state.target, len(drafts)
        logits = target.forward(state.seq[target.length:] + drafts)[-(d + 1):]  # [d+1, V]
        n, nxt = self.accept(state, self.target_probs(logits), drafts, q)
        target.rollback(d - n)
        return drafts[:n] + [nxt]

    def tree_logits(self, state: DecodingState, tokens: list[int], parents: list[int]) -> torch.Tensor:
        """ONE target forward over the uncached tail of state.seq + a token tree: logits [n + 1, V],
        row 0 after the tail (the root context), row i + 1 after node i. The node slots stay
        cached: `target.keep(path, n)` once the accepted path is known."""
        tail = state.seq[state.target.length:]
        return T.tree_forward(state.target, tail, tokens, parents)[len(tail) - 1:]

    def verify_tree_step(self, state: DecodingState, tokens: list[int], parents: list[int],
                         q_by_parent: dict | None) -> list[int]:
        """Verify a draft token tree in ONE target forward and commit the accepted path.

        Recursive rejection sampling over siblings / longest greedy path (probs.verify_tree);
        keeps the accepted path's cache slots (`engine.keep`), drops the rest, returns the new
        tokens (accepted path + correction or bonus token), to emit.
        """
        p = self.target_probs(self.tree_logits(state, tokens, parents))  # [n+1, V]
        path, nxt = P.verify_tree(p, tokens, parents, q_by_parent, state.rng, self.sampling.greedy)
        state.verified_tree(parents, len(path))
        state.target.keep(path, len(tokens))
        return [tokens[i] for i in path] + [nxt]


class TreeSpeculation(Strategy):
    """Base of the draft-model tree methods (DySpec, RSD, RSD-S, SpecTr): each step grows a draft
    tree with the draft engine (`draft_tree`), verifies it in ONE target forward (`step`; by
    default recursive rejection sampling over siblings) and drops the draft's tree slots."""

    needs = frozenset({"rollback", "tree_mask"})
    draft_vocab = 0  # > 0: the draft's LM head over ids < N + the prompt's / output's ids (strategies/core/drafters.py)

    def set_draft_vocab(self, draft_vocab: int) -> None:
        if int(draft_vocab) < 0:
            raise ConfigError(f"{self.name}: draft_vocab must be >= 0 (0 = the full head), got {draft_vocab}")
        self.draft_vocab = int(draft_vocab)

    def params(self) -> dict:
        out = super().params()
        if not self.draft_vocab:  # off: not in the rows (old rows and their config hashes keep theirs)
            out.pop("draft_vocab", None)
        return out

    def decode(self, state: DecodingState) -> None:
        from strategies.core.drafters import ChainDrafter

        tree = T.TreeDrafter(state.draft, self.sampling)
        head = ChainDrafter(state.draft, self.sampling, self.draft_vocab)  # only its restricted head
        head.begin(state)
        try:
            while not state.done:
                new = self.step(state, tree)
                tree.finish()
                if self.draft_vocab:  # tokens the target emitted become proposable
                    state.draft.extend_head(new)
                state.emit(new)
        finally:
            head.end()

    def step(self, state: DecodingState, tree: "T.TreeDrafter") -> list[int]:
        tokens, parents, qmap = self.draft_tree(state, tree)
        return self.verify_tree_step(state, tokens, parents, qmap)

    def draft_tree(self, state: DecodingState, tree: "T.TreeDrafter") -> tuple[list[int], list[int], dict]:
        """(tokens, parents, q_by_parent) of this step's draft tree, grown from state.seq."""
        raise NotImplementedError
