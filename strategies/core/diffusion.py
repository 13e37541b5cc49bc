"""Masked-diffusion decoding: the canvas, the unmasking scores, and the base of the dLLM strategies.

A canvas is the prompt followed by `length` answer positions, all masked at the start. Each step
runs ONE bidirectional forward over the canvas (engine.canvas_logits), predicts a token at every
masked position (the argmax at temperature 0) and decides which positions to fix; fixed positions
never change again (no remasking of decided tokens: LLaDA's low-confidence remasking in its own
words is "keep the most confident predictions, re-mask the rest", which is the same thing).

Semi-autoregressive blocks (LLaDA's block_length): the answer is cut into blocks of
`block_length` positions, decoded left to right; a step only fixes positions of the first block
that still holds masks.

Scores (which masked positions go first; higher = earlier), as ParallelBench compares them:
  confidence   p(argmax)                                (LLaDA "low_confidence" remasking)
  margin       p(top-1) - p(top-2)                      ("topk_margin")
  entropy      -H(p)                                    ("entropy")
  random       uniform draws from the example's RNG     ("random")

End-of-text: once an EOS is fixed at position j, the answer ends there. With `eos_stop` (Learn2PD's
End-of-Text Prediction) the positions after j are filled with EOS without further forwards and
decoding stops as soon as no masked position precedes the first EOS; without it every position is
decoded (the plain dLLM samplers), and the output is cut at the first EOS either way.
"""

from __future__ import annotations

import torch

from harness.trace import Trace

SCORES = ("confidence", "margin", "entropy", "random")


def position_scores(logits: torch.Tensor, rule: str, rng: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(argmax tokens [n], scores [n]) of logits [n, V] under an unmasking rule."""
    p = torch.softmax(logits.float(), -1)
    top = p.topk(2, dim=-1)
    tokens = top.indices[:, 0]
    if rule == "confidence":
        s = top.values[:, 0]
    elif rule == "margin":
        s = top.values[:, 0] - top.values[:, 1]
    elif rule == "entropy":
        s = (p * torch.log(p.clamp_min(1e-30))).sum(-1)  # -H
    elif rule == "random":
        s = torch.rand(logits.shape[0], generator=rng)
    else:
        raise ValueError(f"unknown unmasking rule '{rule}' (one of {', '.join(SCORES)})")
    return tokens, s


class Canvas:
    """One example's canvas: prompt ids + `length` answer slots, counters of every forward."""

    def __init__(self, engine, prompt_ids: list[int], length: int, block_length: int = 0, eos_stop: bool = False):
        if length < 1:
            raise ValueError("a canvas needs at least one answer position")
        self.engine = engine
        self.P, self.L = len(prompt_ids), int(length)
        self.block = int(block_length) if block_length and block_length < length else self.L
        self.mask_id = engine.mask_id
        self.eos_ids = engine.eos_ids
        self.eos_fill = min(self.eos_ids) if self.eos_ids else None
        self.eos_stop = bool(eos_stop) and self.eos_fill is not None
        self._eos_t = torch.tensor(sorted(self.eos_ids), dtype=torch.long)
        self.ids = torch.tensor(list(prompt_ids) + [self.mask_id] * self.L, dtype=torch.long)
        self.trace = Trace()
        self.trace.budget = self.L
        self.per_forward: list[int] = []  # positions fixed after each forward
        self.fixed_at: list[int] = [-1] * self.L  # forward index at which each answer position was fixed
        self.filled_by_eos = 0  # positions set to EOS by the end-of-text rule (no forward)
        self._f0 = (engine.forwards, engine.tokens_fed, getattr(engine, "canvases_fed", 0))

    # ------------------------------------------------------------------ reading (this canvas, or a variant's ids)
    @property
    def answer(self) -> torch.Tensor:
        return self.ids[self.P:]

    def masked(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Bool [L]: answer positions still masked."""
        return (self.ids if ids is None else ids)[self.P:] == self.mask_id

    def active(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Answer positions (indices) a step may fix now: the masked ones of the first unfinished block."""
        idx = torch.nonzero(self.masked(ids)).flatten()
        if idx.numel() == 0:
            return idx
        b = int(idx[0]) // self.block
        return idx[(idx >= b * self.block) & (idx < (b + 1) * self.block)]

    def _first_eos(self, ids: torch.Tensor) -> int | None:
        hit = torch.nonzero(torch.isin(ids[self.P:], self._eos_t)).flatten()
        return int(hit[0]) if hit.numel() else None

    def is_done(self, ids: torch.Tensor | None = None) -> bool:
        ids = self.ids if ids is None else ids
        m = self.masked(ids)
        if not bool(m.any()):
            return True
        if self.eos_stop:
            j = self._first_eos(ids)
            if j is not None and not bool(m[:j].any()):
                return True
        return False

    @property
    def done(self) -> bool:
        return self.is_done()

    def with_fixed(self, ids: torch.Tensor, positions, tokens) -> torch.Tensor:
        """A copy of `ids` with answer positions fixed (and, with eos_stop, the end-of-text fill)."""
        out = ids.clone()
        for j, t in zip(positions, tokens):
            out[self.P + int(j)] = int(t)
        if self.eos_stop:
            out, _ = self._eos_filled(out)
        return out

    def _eos_filled(self, ids: torch.Tensor) -> tuple[torch.Tensor, int]:
        j = self._first_eos(ids)
        if j is None:
            return ids, 0
        after = self.masked(ids).clone()
        after[: j + 1] = False
        ids[self.P:][after] = self.eos_fill
        return ids, int(after.sum())

    # ------------------------------------------------------------------ compute / writing
    def logits(self, canvases: torch.Tensor | None = None) -> torch.Tensor:
        """Answer-region logits: [L, V] of this canvas, or [B, L, V] of B variants of it (one forward)."""
        if canvases is None:
            return self.engine.canvas_logits(self.ids[None], self.L)[0]
        return self.engine.canvas_logits(canvases, self.L)

    def fix(self, positions, tokens) -> None:
        """Fix answer positions (indices into the answer) to tokens; counted against this forward."""
        positions = [int(j) for j in positions]
        tokens = [int(t) for t in tokens]
        step = self.engine.forwards - self._f0[0] - 1
        for j, t in zip(positions, tokens):
            if int(self.answer[j]) != self.mask_id:
                raise ValueError(f"answer position {j} is already fixed")
            self.ids[self.P + j] = t
            self.fixed_at[j] = step
        self.per_forward.append(len(positions))
        if self.eos_stop:
            self.ids, n = self._eos_filled(self.ids)
            self.filled_by_eos += n

    def finish(self) -> Trace:
        """The example's Trace: the answer cut at its first EOS; forwards and positions per forward."""
        e, t = self.engine, self.trace
        f0, n0, c0 = self._f0
        ans = [int(x) for x in self.answer]
        t.emit([x for x in ans if x != self.mask_id])
        t.target_forwards = e.forwards - f0
        t.target_tokens_fed = e.tokens_fed - n0
        decided = sum(self.per_forward)
        t.extra.update({"canvas": self.L, "positions_decoded": decided, "eos_filled": self.filled_by_eos,
                        # the parallelism axis (ParallelBench's tokens per step, AUP's TPF): canvas
                        # positions settled per forward, the end-of-text fill included
                        "positions_per_forward": (decided + self.filled_by_eos) / max(t.target_forwards, 1),
                        "canvases_fed": getattr(e, "canvases_fed", 0) - c0})
        t.finish_with(self.eos_ids, self.L)
        t.extra["tokens_per_forward"] = len(t.tokens) / max(t.target_forwards, 1)
        return t


class DiffusionStrategy:
    """Base of the dLLM strategies: `paradigm = "diffusion"` (the runner refuses them on an
    autoregressive model, and autoregressive strategies on a diffusion model, before loading)."""

    name = "diffusion"
    paradigm = "diffusion"
    lossless = False
    needs = frozenset({"canvas"})
    draft = None
    summary_fields = ("positions_per_forward", "tokens_per_forward")
    ARTIFACT_ATTRS = ("filter_path",)

    def __init__(self, block_length: int = 0, eos_stop: bool = False):
        if block_length < 0:
            from harness.errors import ConfigError

            raise ConfigError(f"{self.name}: block_length must be >= 0 (0 = one block)")
        self.block_length = int(block_length)
        self.eos_stop = bool(eos_stop)

    # the Strategy contract the runner uses
    def params(self) -> dict:
        out = {"name": self.name, "lossless": self.lossless, "paradigm": self.paradigm}
        out.update({k: v for k, v in vars(self).items() if isinstance(v, (int, float, str, bool)) and k != "name"})
        return out

    def row_labels(self) -> dict:
        return {"draft_model": None, "scorer": None}

    def artifacts(self) -> dict[str, str]:
        return {a: str(getattr(self, a)) for a in self.ARTIFACT_ATTRS if getattr(self, a, None)}

    def bind_task(self, task) -> None:
        pass

    def check_model(self, model_spec) -> None:
        """Before weights load (the Strategy contract): accept any diffusion model."""

    def setup(self, target, draft=None) -> None:
        pass

    def generate(self, target, prompt, max_new_tokens: int, rng: torch.Generator, draft=None, **_) -> Trace:
        """Decode one prompt on a canvas of `max_new_tokens` answer positions."""
        ids = list(prompt.ids) if hasattr(prompt, "ids") else list(prompt)
        target.reset()
        canvas = Canvas(target, ids, max_new_tokens, self.block_length, self.eos_stop)
        self.decode(canvas, rng)
        return canvas.finish()

    def decode(self, canvas: Canvas, rng: torch.Generator) -> None:
        raise NotImplementedError


def ranked(scores: torch.Tensor) -> torch.Tensor:
    """Indices by score, best first; ties go to the earlier position (one order for every rule
    and strategy, so that k = 1 top-k, FreeDave's drafts and its verification agree on ties)."""
    return torch.sort(scores, descending=True, stable=True).indices


def next_fix(canvas: Canvas, logits: torch.Tensor, ids: torch.Tensor | None = None, rule: str = "confidence",
             rng=None) -> tuple[int, int]:
    """One-token-per-step decoding's next decision on a canvas state: (answer position, token)."""
    act = canvas.active(ids)
    toks, s = position_scores(logits[act], rule, rng)
    i = int(ranked(s)[0])
    return int(act[i]), int(toks[i])
