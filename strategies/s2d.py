"""S2D: sorted speculative decoding with nested drafts (docs/strategies.md).

One draft model holds nested sub-models: its first-e-layer prefixes for e in `exits`, all
sharing the draft's final norm + LM head. For every draft token the smallest sub-model runs
first; if its confidence (max softmax probability of its logits) reaches `threshold` it
proposes the token, otherwise the next larger sub-model CONTINUES from the smaller one's hidden
state (the layers are nested: layers [e_j, e_{j+1}) run on top of layer e_j's output, nothing
is recomputed); the deepest exit always proposes. The proposing sub-model's processed
distribution is the q of speculative sampling (the exit choice depends on the context only, not
on the sampled token), and verification is the standard chain rule in one target forward:
lossless at every temperature, token-identical to greedy at T = 0. Draft length k is fixed.

KV consistency inside the draft (the subtle part): a token whose draft stopped at exit e has KV
only in layers < e. The deeper layers are filled LAZILY: each position keeps the hidden state
of the deepest layer it reached; when a later token needs the segment [e_j, e_{j+1}), every
earlier position lacking that segment (always a contiguous suffix, all at depth exactly e_j,
because a deeper run first brings every earlier position to its depth) is run through the
segment together with the current token, in one chunk, before attention reads those layers. So
each layer's KV is computed once per position, exactly as the full draft would compute it, and
only when some token needs it. After verification the draft cache is cut back to the committed
positions (`engine.crop_to`, per layer) and their pending hidden states dropped.

What is and is not the paper: S2D trains the nested draft (SoFT, sorted fine-tuning) so that
every prefix is a good draft. No such model exists here; the runnable variant uses the nested
prefixes of an existing small model (default: SmolLM2's own first 16 layers, exits 4/8/16, or
e.g. Qwen2.5-Coder-0.5B with exits 6/12/24 under the 1.5B). Untrained prefixes of SmolLM2 agree
with the full model rarely (docs/strategies.md records 0.19 top-1 agreement at layer 14), so little
speed is expected from that pairing; exits deeper than the draft are clipped to its depth.
"""

from __future__ import annotations

import torch

from harness.errors import ConfigError
from strategies.core.base import Strategy
from strategies.core.drafters import draw


def pick_exit(confidences: list[float], threshold: float) -> int:
    """Index of the sub-model that proposes: the first whose confidence reaches the threshold,
    else the deepest (the nested chain's order; pure helper for tests)."""
    for j, c in enumerate(confidences):
        if c >= threshold:
            return j
    return len(confidences) - 1


class NestedDraft:
    """Per-example state of the nested draft: drives `engine.forward_layers` segment by segment
    and keeps the pending hidden state of every position whose deeper layers are not computed."""

    def __init__(self, engine, exits: list[int]):
        self.e, self.exits = engine, exits
        self.hid: dict[int, torch.Tensor] = {}  # position -> hidden state at its current depth
        self.layer_tokens = 0  # positions x layers computed (catch-up included)

    @property
    def length(self) -> int:
        return self.e.layer_length(0)

    def next_logits(self, feed: list[int], threshold: float) -> tuple[torch.Tensor, int]:
        """Feed tokens at the next positions; return (logits [V] of the proposing exit, its index)."""
        e, exits = self.e, self.exits
        p0 = e.layer_length(0)
        h, logits = e.forward_layers(feed, 0, exits[0], last_only=True)
        self.layer_tokens += len(feed) * exits[0]
        for i in range(len(feed)):
            self.hid[p0 + i] = h[i]
        cur, j = p0 + len(feed) - 1, 0
        while j + 1 < len(exits) and float(torch.softmax(logits, -1).max()) < threshold:
            a, b = exits[j], exits[j + 1]
            first = e.layer_length(a)  # positions first..cur lack layers [a, b) and sit at depth a
            hs = torch.stack([self.hid[p] for p in range(first, cur + 1)])
            h, logits = e.forward_layers(hs, a, b, last_only=True)
            self.layer_tokens += len(hs) * (b - a)
            for i, p in enumerate(range(first, cur + 1)):
                self.hid[p] = h[i]
            j += 1
        if j == len(exits) - 1:  # the deepest segment ran: every position up to cur is complete
            for p in [p for p in self.hid if p <= cur]:
                del self.hid[p]
        return logits, j

    def truncate_to(self, length: int) -> None:
        self.e.crop_to(length)
        for p in [p for p in self.hid if p >= length]:
            del self.hid[p]


class S2D(Strategy):
    name = "s2d"
    needs = frozenset({"rollback", "early_exit"})

    def __init__(self, draft, exits=(4, 8, 16), threshold: float = 0.6, k: int = 4, sampling=None):
        super().__init__(sampling)
        exits = [int(x) for x in (exits or [])]
        if not exits or any(x < 1 for x in exits):
            raise ConfigError(f"s2d: exits must be a non-empty list of layer counts >= 1 (got {exits})")
        if not 0 <= threshold <= 1 or k < 1:
            raise ConfigError(f"s2d: need 0 <= threshold <= 1 and k >= 1 (got {threshold}, {k})")
        self.draft = draft  # ModelSpec; the runner loads it and passes the engine
        self.exits, self.threshold, self.k = sorted(set(exits)), float(threshold), k

    def params(self) -> dict:
        return {**super().params(), "exits": ",".join(map(str, self.exits))}

    def effective_exits(self, draft) -> list[int]:
        """The configured exits, clipped to the draft's depth (the deepest is then the whole draft)."""
        return sorted({min(x, draft.num_layers) for x in self.exits})

    def decode(self, state):
        exits = self.effective_exits(state.draft)
        state.extra.update({f"s2d_exit_{x}": 0 for x in exits})
        nd = NestedDraft(state.draft, exits)
        while not state.done:  # the first verification forward also prefills the prompt
            drafts, qs, feed = [], [], state.seq[nd.length:]
            for _ in range(min(self.k, state.remaining)):
                q_logits, j = nd.next_logits(feed, self.threshold)
                state.count(f"s2d_exit_{exits[j]}")
                x, q = draw(self.sampling, q_logits, state.rng)
                if q is not None:
                    qs.append(q)
                drafts.append(x)
                feed = [x]
            state.self_draft_forwards += len(drafts)  # one nested-draft pass (1+ segments) per draft token
            new = self.verify_step(state, drafts, torch.stack(qs) if qs else None)
            nd.truncate_to(min(nd.length, len(state.seq) + len(new) - 1))  # keep committed positions only
            state.emit(new)
        state.extra["draft_layer_tokens"] = nd.layer_tokens
