"""Beam search, and the group-wise search that Diverse Beam Search builds on (strategies/diverse_beam.py).

B beams grow as B rows of one `Fork` of the target (the prompt is prefilled once and its KV
shared; each step is ONE batched forward over the live beams, and beams that survive a step
take their parent's KV with `Fork.select`). Scores are summed log-probabilities.

One step, per group of w = B / G beams (G = 1 here), groups in order:
  1. every live beam's next-token log-probabilities + its score: w x V candidates; for group
     g > 0 the SELECTION score also subtracts lambda x (how many beams of groups < g chose that
     token at this step): Hamming diversity, Vijayakumar et al. 2016 (0 here);
  2. the best K = max(2, 1 + #EOS) x w candidates by selection score, in order;
  3. candidates among the first w that end (an EOS, or the token budget reached) become
     finished hypotheses scored sum-log-prob / (generated length ** length_penalty); the group
     keeps its best w finished ones;
  4. the first w candidates that do not end are the group's beams for the next step.
A group stops when it holds w finished hypotheses and its best live beam, normalised at its
current length, cannot beat the worst of them (early_stopping=False, transformers' heuristic),
or as soon as it holds w (early_stopping=True), or at the budget. The output is the best
finished hypothesis of all groups; every finished hypothesis is kept in the row
(`candidates`, best first), so the runner reports the top beam's quality, the best beam's
(oracle) quality and the diversity across beams.

With G = 1 this is transformers' `generate(num_beams=B, do_sample=False)` step for step
(tests/test_beam.py checks the tokens). Lossy: the output maximises sequence probability, it
is not a sample of the model.
Rows: extra.beams (hypotheses kept), beam_steps (batched forwards after the prompt),
beam_rows (beam-rows computed, summed over steps), finished_eos (kept hypotheses that end in EOS),
eos_finishes (EOS hypotheses that entered a group's finished set during the search),
best_group (group of the output); row candidate_scores: each hypothesis's normalised score.
"""

from __future__ import annotations

import torch

from harness.errors import ConfigError
from strategies.core.base import Strategy


class Beam(Strategy):
    name = "beam"
    lossless = False
    deterministic = True  # no sampling: T > 0 is refused
    summary_fields = ("beams", "finished_eos", "beam_rows")

    def __init__(self, beams: int = 4, groups: int = 1, diversity: float = 0.0, length_penalty: float = 1.0,
                 early_stopping: bool | str = False, sampling=None):
        super().__init__(sampling)
        if not self.sampling.greedy:
            raise ConfigError(f"{self.name}: beam search is deterministic; set strategy.sampling.temperature=0")
        if beams < 1 or groups < 1 or beams % groups:
            raise ConfigError(f"{self.name}: beams ({beams}) must be a positive multiple of groups ({groups})")
        if diversity < 0:
            raise ConfigError(f"{self.name}: diversity (lambda) must be >= 0, got {diversity}")
        if early_stopping not in (True, False, "never"):
            raise ConfigError(f"{self.name}: early_stopping must be true, false or 'never', got {early_stopping!r}")
        self.beams, self.groups, self.diversity = int(beams), int(groups), float(diversity)
        self.length_penalty, self.early_stopping = float(length_penalty), early_stopping

    def params(self) -> dict:
        return {**super().params(), "early_stopping": self.early_stopping}

    def decode(self, state) -> None:
        target, budget, eos = state.target, state.budget, state.eos_ids
        w, G, lp = self.beams // self.groups, self.groups, self.length_penalty
        K = max(2, 1 + len(eos)) * w
        fork = target.fork(state.seq, [[]])
        # per group: live beams [(score, tokens, fork row)], finished [(normalised score, tokens)], open
        live = [[(0.0, [], 0)] for _ in range(G)]
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(G)]
        open_ = [True] * G
        t = 0  # tokens generated so far by every live beam
        rows_computed = eos_finishes = 0
        while True:
            logp = torch.log_softmax(fork.logits.float(), dim=-1)  # [rows, V]
            V = logp.shape[-1]
            chosen = torch.zeros(V, device=logp.device)  # times each token was chosen by earlier groups at this step
            ends = t + 1 >= budget
            for g in range(G):
                if not open_[g]:
                    live[g] = []
                    continue
                rows = torch.as_tensor([r for _, _, r in live[g]])
                scores = torch.as_tensor([s for s, _, _ in live[g]], dtype=torch.float32, device=logp.device)
                cand = logp[rows] + scores[:, None]  # [beams, V]: sequence log-probabilities
                sel = cand - self.diversity * chosen if g and self.diversity else cand
                k = min(K, sel.numel())
                _, idx = torch.topk(sel.reshape(-1), k)
                new_live = []
                for j, i in enumerate(idx.tolist()):
                    b, tok = divmod(i, V)
                    score, toks, _ = live[g][b]
                    s = float(cand[b, tok])
                    if ends or tok in eos:
                        if j < w:  # only the top w candidates may finish (the rest are reserves)
                            finished[g].append((s / ((t + 1) ** lp), toks + [tok]))
                            eos_finishes += tok in eos
                    elif len(new_live) < w:
                        new_live.append((s, toks + [tok], int(rows[b])))
                finished[g] = sorted(finished[g], key=lambda h: -h[0])[:w]
                live[g] = new_live
                for _, toks, _ in new_live:
                    chosen[toks[-1]] += 1
                open_[g] = bool(new_live) and not ends and self._may_improve(new_live, finished[g], w, t + 1, budget)
            t += 1
            if not any(open_):
                break
            # the next step's rows: every open group's beams, in order
            parents, tokens = [], []
            for g in range(G):
                if open_[g]:
                    for j, (s, toks, r) in enumerate(live[g]):
                        parents.append(r)
                        tokens.append(toks[-1])
                        live[g][j] = (s, toks, len(parents) - 1)
            fork.select(parents)
            fork.step(tokens)
            rows_computed += len(tokens)
        hyps = sorted(((s, toks, g) for g in range(G) for s, toks in finished[g]), key=lambda h: -h[0])
        best = hyps[0]
        state.trace.candidates = [toks for _, toks, _ in hyps]
        state.trace.candidate_scores = [s for s, _, _ in hyps]
        state.extra.update({"beams": len(hyps), "beam_steps": t - 1, "beam_rows": rows_computed,
                            "finished_eos": sum(bool(toks) and toks[-1] in eos for _, toks, _ in hyps),
                            "eos_finishes": eos_finishes,
                            # groups that found the same hypothesis tie up to float noise: report the first
                            "best_group": min(g for _, toks, g in hyps if toks == best[1])})
        state.emit(best[1])

    def _may_improve(self, live, finished, w: int, length: int, budget: int) -> bool:
        """Whether a group should go on (transformers' early-stopping rule)."""
        if len(finished) < w:
            return True
        if self.early_stopping is True:
            return False
        horizon = budget if (self.early_stopping == "never" and self.length_penalty > 0) else length
        best_live = max(s for s, _, _ in live) / (horizon ** self.length_penalty)
        return best_live > min(s for s, _ in finished)
