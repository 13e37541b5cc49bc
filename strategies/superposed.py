"""Superposed Decoding: Shen et al. 2024, "Superposed Decoding: Multiple Generations from a
Single Autoregressive Inference Pass" (NeurIPS 2024). docs/strategies.md. LOSSY.

k drafts from ONE forward per step; the KV cache holds a single superposed sequence:
  1. prefill the prompt (an ordinary forward); the k best-scoring first tokens start the k drafts.
  2. each step: feed ONE input vector, the superposition sum_i gamma_i E(last token of draft i)
     of the drafts' last-token input embeddings, gamma = the drafts' normalised probabilities
     (softmax of their cumulative scores); one forward -> one distribution p_LM.   # [V]
  3. every draft i extends with each of the top `top_tokens` (9) tokens y of p_LM, scored
       score_i + (1 - alpha) log p_LM(y) + alpha log p_ngram(y | draft i's last <= 5 tokens)
     (alpha = 0.54; order weights 0.01, 0.04, 0.15, 0.18, 0.12 for orders 2..6), k * top_tokens
     candidates; keep the k best (cumulative score). top_tokens = k gives the abstract's "k^2".
  4. a draft that emits EOS is finished: it keeps its score, competes as itself (no extension)
     and leaves the superposition; stop when every kept draft is finished or at the budget.
`scoring` says what p_LM and p_ngram are in step 3 (and step 1):
  "paper" (default; the paper's public code, read for this): p_LM = softmax(logits / 0.06) (its
     parameter files' `temp`, `lm_temperature` here) restricted to the top 9 tokens and
     renormalised there; p_ngram(y) = the weighted SUM over the orders whose context occurs in the
     corpus, with no unigram backoff and no renormalisation by the weights used; log 0 = -inf
     drops a candidate that no seen order ever saw; a draft none of whose candidates has any
     n-gram evidence is scored (1 - alpha) log p_LM - `penalty` (200). The first tokens are
     chosen with the same score from the prompt's context.
  "interpolated" (the variant this harness had first): raw log-softmax (temperature 1, no
     renormalisation); p_ngram = the normalised interpolation of strategies/core/ngram.py with a
     smoothed unigram (weight `unigram_weight`), always finite; the first k tokens by p_LM alone.
Not reproduced from the code: its separate finished / alive draft pools (here one pool of k).
The trace's tokens are the best draft; trace.candidates holds all k, best first (the runner
stores their text in the row). Cost: prefill + one 1-position forward per step (forwards per
token = 1, whatever k), plus k * top_tokens n-gram look-ups per step (numpy binary searches).

The n-gram model comes from `ngram_path` (built by `python -m tools.build_ngram_lm build`) or is
counted from `corpus` on first use in the target's vocabulary and cached (not per example).
The paper builds its n-grams from a large web corpus; none ships here, so the default YAML uses
GSM8K's TRAIN split (questions and solutions; never test rows): name your own corpus for other
domains.
Temperature 0 (the paper): deterministic top-k selection over the scores above. T > 0 (our
extension): p_LM is tempered / top-k / top-p / min-p truncated, the first k tokens are drawn
without replacement and the k survivors of each step by Gumbel-top-k on their cumulative
scores (sampling k sequences without replacement in proportion to exp(score)).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from harness.errors import ConfigError
from strategies.core.base import Strategy
from strategies.core.ngram import NGramLM, cached_build

PAPER_WEIGHTS = (0.01, 0.04, 0.15, 0.18, 0.12)  # orders 2, 3, 4, 5, 6
SCORINGS = ("paper", "interpolated")


class Superposed(Strategy):
    name = "superposed"
    lossless = False

    def __init__(self, k: int = 3, top_tokens: int = 9, alpha: float = 0.54, ngram_weights=PAPER_WEIGHTS,
                 unigram_weight: float = 0.5, ngram_path: str | None = None, corpus: str | None = None,
                 corpus_fields=(), scoring: str = "paper", lm_temperature: float = 0.06, penalty: float = 200.0,
                 sampling=None):
        super().__init__(sampling)
        if scoring not in SCORINGS:
            raise ConfigError(f"superposed: scoring must be one of {', '.join(SCORINGS)} (got {scoring!r})")
        if lm_temperature <= 0 or penalty < 0:
            raise ConfigError(f"superposed: need lm_temperature > 0 and penalty >= 0 (got {lm_temperature}, {penalty})")
        self.scoring, self.lm_temperature, self.penalty = scoring, float(lm_temperature), float(penalty)
        weights = tuple(float(w) for w in ngram_weights)
        if k < 1 or top_tokens < 1 or not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"superposed: need k >= 1, top_tokens >= 1, 0 <= alpha <= 1 (got {k}, {top_tokens}, {alpha})")
        if not weights or any(w < 0 for w in weights) or unigram_weight <= 0:
            raise ConfigError(f"superposed: ngram_weights must be >= 0 (orders 2..) and unigram_weight > 0 "
                              f"(got {list(weights)}, {unigram_weight})")
        if alpha > 0 and bool(ngram_path) == bool(corpus):
            raise ConfigError("superposed: with alpha > 0 set exactly one of ngram_path (a built n-gram file) "
                              "or corpus (a text/jsonl file counted on first use)")
        for f in (ngram_path, corpus):
            if alpha > 0 and f and not Path(f).exists():
                raise ConfigError(f"superposed: file not found: {f}")
        self.k, self.top_tokens, self.alpha, self.ngram_weights = k, top_tokens, float(alpha), weights
        self.unigram_weight = float(unigram_weight)
        self.ngram_path, self.corpus, self.corpus_fields = ngram_path or "", corpus or "", tuple(corpus_fields)
        self._lm: tuple[str, NGramLM] | None = None  # (vocabulary fingerprint, model): derived data, not state

    def params(self) -> dict:
        return {**super().params(), "ngram_weights": list(self.ngram_weights), "corpus_fields": list(self.corpus_fields)}

    def setup(self, target, draft=None) -> None:
        self.ngram(target)

    def ngram(self, target) -> NGramLM | None:
        """The n-gram model for the target's vocabulary (loaded or counted once)."""
        if self.alpha == 0:
            return None
        fp = target.vocabulary_fingerprint()
        if self._lm is None or self._lm[0] != fp:
            if self.ngram_path:
                lm = NGramLM.load(self.ngram_path)
                if lm.meta.get("vocabulary") != fp:
                    raise ConfigError(f"superposed: {self.ngram_path} was built for vocabulary "
                                      f"{lm.meta.get('vocabulary')}, the model's is {fp}")
            else:
                lm = cached_build(self.corpus, target.encode, fp, max(target.vocab_entries, target.vocab_size),
                                  self.corpus_fields, 1 + len(self.ngram_weights))
            if lm.max_order < 1 + len(self.ngram_weights):
                raise ConfigError(f"superposed: {len(self.ngram_weights)} order weights need orders up to "
                                  f"{1 + len(self.ngram_weights)}, the n-gram model has {lm.max_order}")
            self._lm = (fp, lm)
        return self._lm[1]

    def _logp(self, logits: torch.Tensor) -> torch.Tensor:
        """log p_LM [V] as the candidates are scored. T > 0 (our extension): tempered + truncated.
        T = 0, scoring "paper": the paper's code sharpens p_LM with its `temp` (0.06 in every
        parameter file) before the top-`top_tokens` renormalisation (done in `_candidates`);
        scoring "interpolated": the raw log-softmax."""
        if not self.sampling.greedy:
            return torch.log(self.sampling.probs(logits).double())
        if self.scoring == "paper":
            return torch.log_softmax(logits.double() / self.lm_temperature, -1)
        return torch.log_softmax(logits.double(), -1)

    def _candidates(self, logp: torch.Tensor) -> tuple[list[int], torch.Tensor]:
        """The step's candidate tokens (p_LM's top `top_tokens`) and their LM term: renormalised
        over them ("paper") or raw ("interpolated"). Shared by every draft of the step."""
        top_lp, top_ids = torch.topk(logp, min(self.top_tokens, logp.shape[-1]))
        if self.scoring == "paper":
            top_lp = top_lp - torch.logsumexp(top_lp, 0)  # renormalised over the kept tokens
        return top_ids.tolist(), top_lp

    def _increments(self, logp: torch.Tensor, lm, ctx: list[int], top=None) -> tuple[list[int], torch.Tensor]:
        """(candidate tokens, their score increments) for a draft whose n-gram context is ctx.

        "paper" (its public code): p_LM restricted to its top `top_tokens` tokens and renormalised
        there; n-gram score g(y) = sum over the seen orders of lambda_n p_n(y | ctx) (no unigram,
        not renormalised); increment (1 - alpha) log p~(y) + alpha log g(y), so a token that no seen
        order ever followed ctx with scores -inf and is dropped; when that holds for EVERY
        candidate (no n-gram evidence at all), the draft's increments fall back to
        (1 - alpha) log p~(y) - penalty.
        "interpolated" (our earlier variant): raw log p_LM of the top tokens; log of the
        normalised interpolation with a smoothed unigram (NGramLM.prob), always finite.
        `top`: this step's `_candidates(logp)`, computed once for all drafts."""
        ids, top_lp = top if top is not None else self._candidates(logp)
        a = self.alpha
        if self.scoring == "paper":
            lp = top_lp
            if a == 0:
                return ids, lp
            g = torch.from_numpy(lm.weighted_sum(ctx, ids, self.ngram_weights)).to(lp.device)
            if not bool((g > 0).any()):
                return ids, (1 - a) * lp - self.penalty
            with np.errstate(divide="ignore"):
                return ids, (1 - a) * lp + a * torch.log(g)
        if a == 0:
            return ids, top_lp
        ng = np.log(lm.prob(ctx, ids, self.ngram_weights, self.unigram_weight))
        return ids, (1 - a) * top_lp + a * torch.from_numpy(ng).to(top_lp.device)

    def _choose(self, keys: torch.Tensor, n: int, rng: torch.Generator) -> list[int]:
        """Indices of the n kept candidates (of those with a finite score), best first."""
        n = min(n, int(torch.isfinite(keys).sum()))
        if not self.sampling.greedy:
            g = -torch.log(-torch.log(torch.rand(keys.shape, generator=rng, dtype=torch.float64,
                                                 device=rng.device).clamp_min(1e-300)))
            keys = keys.to(g.device) + g  # the draw is made where the generator is
        return torch.topk(keys, n).indices.tolist()

    def decode(self, state):
        target, prompt_ids, rng, trace = state.target, state.prompt.ids, state.rng, state.trace
        lm = self.ngram(target)
        ctx_len = len(self.ngram_weights)  # a draft's n-gram context: its last <= 5 tokens (prompt included)
        eos = target.eos_ids
        # 1. prefill; the k best first tokens start the k drafts ("paper": scored like every later
        #    step, n-gram term included, from the prompt's context; "interpolated": by p_LM alone)
        logp = self._logp(target.forward(prompt_ids, last_only=True))  # [V]
        trace.t_first = time.perf_counter()
        if self.scoring == "paper":
            ids, inc = self._increments(logp, lm, list(prompt_ids[-ctx_len:]))
            pick = self._choose(inc, self.k, rng)
            first, scores = [ids[j] for j in pick], [float(inc[j]) for j in pick]
        else:
            first = self._choose(logp, self.k, rng)
            scores = [float(logp[t]) for t in first]
        drafts = [[t] for t in first]
        done = [t in eos for t in first]
        steps = 0
        while steps + 1 < state.budget and not all(done):  # live drafts hold steps + 1 tokens
            # 2. one forward on the superposition of the active drafts' last-token embeddings
            live = [i for i in range(len(drafts)) if not done[i]]
            emb = target.embed([drafts[i][-1] for i in live]).double()  # [k_live, d], on the model's device
            gamma = torch.softmax(torch.tensor([scores[i] for i in live], dtype=torch.float64, device=emb.device), 0)
            logp = self._logp(target.forward(embeds=(gamma[:, None] * emb).sum(0, keepdim=True), last_only=True))
            steps += 1
            # 3. k * m candidates scored with the LM and each draft's own n-gram context
            top = self._candidates(logp)  # the step's tokens and LM term, shared by the drafts
            cands, keys = [], []
            for i in range(len(drafts)):
                if done[i]:
                    cands.append((i, None))
                    keys.append(scores[i])
                    continue
                ids, inc = self._increments(logp, lm, (list(prompt_ids[-ctx_len:]) + drafts[i])[-ctx_len:], top)
                for j, t in enumerate(ids):
                    cands.append((i, t))
                    keys.append(scores[i] + float(inc[j]))
            keys_t = torch.tensor(keys, dtype=torch.float64)
            keep = self._choose(keys_t, self.k, rng)
            new = []
            for c in keep:
                i, t = cands[c]
                new.append((drafts[i] if t is None else drafts[i] + [t], float(keys_t[c]), done[i] or t in eos))
            drafts, scores, done = [d for d, _, _ in new], [s for _, s, _ in new], [f for _, _, f in new]
        # 4. best draft = the trace; all drafts, best first, as candidates
        order = sorted(range(len(drafts)), key=lambda i: -scores[i])
        state.emit(drafts[order[0]])
        trace.candidates = [drafts[i] for i in order]
        state.extra.update(superposed_steps=steps, drafts=len(drafts))
