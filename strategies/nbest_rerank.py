"""N-best reranking by the target LM: emit the hypothesis the model finds most likely.

The N-best list comes from the prompt (see nbest_first: decoded and parsed, no task, no
reference). Each distinct hypothesis h is scored as log p(h + end | prefix) under the target,
in ONE engine forward over the tokens of `prefix + h + end` (cache reset before each; the
forwards are counted in the Trace like any other). The scored tokens are those after the
longest common start of that encoding and the prefix's own (BOS included when the model's
encoding adds one), so every hypothesis is scored with its natural encoding. `end` (default a
newline) is scored too: without it the empty or shortest hypothesis wins by having fewer
factors. `length_norm` divides by the number of scored tokens. Ties go to the earlier (higher
ASR-ranked) hypothesis. The winner is re-encoded and emitted, then an EOS. Not lossless.
"""

from __future__ import annotations

import torch

from harness.errors import ConfigError
from strategies.core.base import Strategy
from strategies.nbest_first import emit_text, hypotheses


class NBestRerank(Strategy):
    name = "nbest_rerank"
    lossless = False  # picks a hypothesis; never equal to greedy decoding

    def __init__(self, prefix: str = "Transcript of English speech:\n", end: str = "\n", length_norm: bool = False):
        super().__init__()
        if not prefix:
            raise ConfigError("nbest_rerank: prefix must be non-empty (the first hypothesis token needs a context)")
        self.prefix, self.end_text, self.length_norm = prefix, end, bool(length_norm)

    def log_likelihood(self, target, text: str) -> tuple[float, int]:
        """(log p(text + end | prefix), scored tokens) in one target forward."""
        pre = target.encode(self.prefix, special=True)
        full = target.encode(self.prefix + text + self.end_text, special=True)
        k = 0
        while k < min(len(pre), len(full)) and pre[k] == full[k]:
            k += 1
        k = max(k, 1)  # at least one context token
        if k >= len(full):
            return 0.0, 0
        target.reset()
        logits = target.forward(full)  # [n, V] float32 CPU
        logp = torch.log_softmax(logits[k - 1:-1], dim=-1)
        ids = torch.tensor(full[k:], dtype=torch.long, device=logp.device)
        return float(logp.gather(1, ids[:, None]).sum()), len(full) - k

    def decode(self, state):
        target = state.target
        nbest = hypotheses(state)
        seen: dict[str, float] = {}
        scored = 0
        for h in nbest:
            if h not in seen:
                ll, n = self.log_likelihood(target, h)
                seen[h] = ll / max(n, 1) if self.length_norm else ll
                scored += n
        best = max(range(len(nbest)), key=lambda i: (seen[nbest[i]], -i))
        target.reset()
        emit_text(state, nbest[best])
        state.extra.update({"candidates": len(nbest), "scored_hypotheses": len(seen), "scored_tokens": scored,
                            "chosen_rank": best})
