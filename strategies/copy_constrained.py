"""Copy-constrained decoding: the pointer-network idea as a decoding rule (Vinyals et al., "Pointer
Networks", NeurIPS 2015, arXiv 1506.03134).

A pointer network's output is a sequence of positions in its input: it can only copy. Here the
model keeps its own next-token distribution but may only choose tokens that continue a copy of
the input. The input is the task's source texts (`Prompt.context`: multi-hop QA's documents;
else `Prompt.nbest`: HyPoradise's N-best hypotheses), each with a leading space, kept apart so
a copy never crosses two of them. The output must be the concatenation of at most `max_spans`
contiguous substrings of the sources (max_spans = 1: one span, extractive QA; larger: N-best
correction that stitches words of several hypotheses).

State: the set of source positions where the current copy may continue, each with the fewest
spans that reach it. At each step the allowed tokens are those whose text continues a copy at
one of those positions, plus (while fewer than max_spans spans are used) every token whose text
occurs anywhere in the sources (starting a new span), plus EOS once something was emitted. The
constraint is checked on token TEXT, so "Paris" and " Paris" both copy "... in Paris" whatever
the tokenisation of the source; tokens whose text is not valid on its own (a partial UTF-8
byte) are never allowed. Then the strategy's sampler picks among the allowed tokens (greedy by
default). One target forward per token.

Rows: extra.spans (spans the output uses), changed (steps where the unconstrained choice
was not allowed), allowed (allowed tokens summed over steps), stuck (1 if no token but EOS
was allowed). Relation to exact_extract: with max_spans = 1 this is greedy search over the span
space that exact_extract searches exhaustively.
"""

from __future__ import annotations

import torch

from harness.errors import ConfigError
from strategies.core.base import Strategy

SEP = "\x00"  # between sources: no token text contains it, so a copy never crosses sources
_TABLES: dict[str, tuple[dict[str, list[int]], int]] = {}  # vocabulary fingerprint -> (text -> ids, max length)


def token_table(engine, cap: int = 32) -> tuple[dict[str, list[int]], int]:
    """text -> token ids for every token whose text decodes on its own (no special tokens,
    no partial UTF-8); cached per vocabulary (a property of the tokenizer, not of an example)."""
    key = engine.vocabulary_fingerprint()
    if key not in _TABLES:
        table: dict[str, list[int]] = {}
        for tok in range(engine.vocab_entries):
            t = engine.token_text(tok)
            if t and "\ufffd" not in t and SEP not in t and len(t) <= cap:
                table.setdefault(t, []).append(tok)
        _TABLES[key] = (table, max((len(t) for t in table), default=1))
    return _TABLES[key]


class CopyConstrained(Strategy):
    name = "copy_constrained"
    lossless = False
    summary_fields = ("spans", "changed", "allowed")

    def __init__(self, max_spans: int = 1, sampling=None):
        super().__init__(sampling)
        if max_spans < 1:
            raise ConfigError(f"{self.name}: max_spans must be >= 1, got {max_spans}")
        self.max_spans = int(max_spans)

    def decode(self, state) -> None:
        target = state.target
        sources = state.prompt.sources
        if not sources:
            raise ConfigError(f"{self.name} needs a task that gives sources to copy from (Prompt.context or nbest)")
        table, K = token_table(target)
        src = SEP.join(" " + s for s in sources)
        occ: dict[int, list[int]] = {}  # token -> source positions right after one of its occurrences
        for c in range(len(src)):
            for k in range(1, K + 1):
                t = src[c:c + k]
                if len(t) < k or SEP in t:
                    break
                for tok in table.get(t, ()):
                    occ.setdefault(tok, []).append(c + k)
        active: dict[int, int] = {}  # position -> fewest spans that reach it
        eos = sorted(state.eos_ids)
        logits = target.forward(state.seq, last_only=True)
        V = logits.shape[-1]
        start_mask = torch.zeros(V, dtype=torch.bool)
        start_mask[[t for t in occ if t < V]] = True
        spans = changed = allowed_sum = 0
        while True:
            used = min(active.values()) if active else 0
            mask = start_mask.clone() if used < self.max_spans else torch.zeros(V, dtype=torch.bool)
            cont: dict[int, None] = {}
            for c in active:
                for k in range(1, K + 1):
                    t = src[c:c + k]
                    if len(t) < k or SEP in t:
                        break
                    for tok in table.get(t, ()):
                        cont[tok] = None
            if cont:
                mask[[t for t in cont if t < V]] = True
            if state.tokens and eos:
                mask[eos] = True
            n_allowed = int(mask.sum())
            if n_allowed == 0:  # nothing can be copied (an empty source): end the answer
                state.count("stuck")
                if eos:
                    state.emit([eos[0]])
                break
            allowed_sum += n_allowed
            masked = logits.masked_fill(~mask.to(logits.device), float("-inf"))
            tok = self.sampling.next_token(masked, state.rng)
            changed += int(not mask[int(logits.argmax())])
            state.emit([tok])
            if state.done:
                break
            text = target.token_text(tok)
            nxt: dict[int, int] = {}
            for c, sp in active.items():
                if src.startswith(text, c):
                    nxt[c + len(text)] = min(nxt.get(c + len(text), 1 << 30), sp)
            if used < self.max_spans:
                for e in occ.get(tok, ()):
                    nxt[e] = min(nxt.get(e, 1 << 30), used + 1)
            active = nxt
            logits = target.forward([tok], last_only=True)
        spans = min(active.values()) if active else spans
        state.extra.update({"spans": spans, "changed": changed, "allowed": allowed_sum})
