"""Shared machinery for test-time scaling and search.

- `StepSampler.extend`: grows many continuations of one prompt in ONE batched forward per
  token, sharing the prompt's KV (`HFEngine.fork`): N samples cost N rows of one batch, not N
  sequential generations. A reasoning step ends at a blank line ("\\n\\n"); a row stops at its
  step end, at EOS, or when its solution reaches the token budget.
- `Candidate`: a partial or finished solution (its steps as token lists and texts).
- `SearchStrategy`: the base of every search/voting strategy: binds the task's answer functions
  (`extract_answer`, `same_answer`: never the gold answer) and the scorer, and turns the chosen
  candidate into a Trace whose `extra` carries the budget counters every row reports:
  generated_tokens (all tokens sampled, over all candidates), prm_calls, prm_tokens,
  candidates, policy_forwards.
- `vote`: answer classes (equivalence from the task) and their weights.

Every search strategy reports accuracy together with these counters so methods compare at
equal budgets (the accuracy-vs-tokens plot: `python -m harness.leaderboard` draws
`<task>_accuracy_vs_tokens.png` from the rows; `benchmarks/tts_sweep.sh` produces them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.decoding import cut_text
from harness.errors import ConfigError, UndecidableComparison
from scorers.base import AGGREGATES, aggregate
from strategies.core import probs as P
from strategies.core.base import Strategy

STEP_END = "\n\n"


@dataclass
class Candidate:
    steps: list[list[int]] = field(default_factory=list)  # token ids of each step
    texts: list[str] = field(default_factory=list)  # decoded text of each step
    finished: bool = False  # EOS emitted or the token budget reached
    eos: bool = False
    scores: list[float] = field(default_factory=list)  # scorer's per-step scores (when scored)

    @property
    def tokens(self) -> list[int]:
        return [t for s in self.steps for t in s]

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def child(self, step: list[int], text: str, eos: bool, finished: bool) -> "Candidate":
        return Candidate(self.steps + [step], self.texts + [text], finished, eos, list(self.scores))


class StepSampler:
    """Batched sampling of next steps (or whole solutions) from shared-prompt forks."""

    def __init__(self, engine, sampling, max_step_tokens: int = 256):
        self.engine, self.sampling, self.max_step_tokens = engine, sampling, max_step_tokens
        self.generated = 0  # tokens sampled so far (all rows)
        self.on_token = None  # progress callback, called once per batched forward
        self.ban_eos = False  # benchmarks: every row runs to the budget (equal tokens vs a peer)
        self.stops: tuple[str, ...] = ()  # stop strings (task.prompting.stop): a row reaching one ends, as at EOS

    def token_text(self, t: int) -> str:
        return self.engine.token_text(t)

    def decode(self, ids: list[int]) -> str:
        return self.engine.decode(ids, skip_special=False)

    def extend(self, prompt_ids: list[int], parents: list[Candidate], rng: torch.Generator,
               max_new_tokens: int, whole: bool = False, stop_first: bool = False) -> list[Candidate]:
        """One new step (or, with whole=True, the rest of the solution) for each parent.

        Parents may repeat (N samples of one prefix). Rows grow in lockstep in one batched
        forward per token; a row leaves the batch when its step ends. stop_first=True ends ALL
        rows as soon as one row emits EOS (first-finish search); unfinished rows come back with
        finished=False and eos=False.
        """
        if not parents:
            return []
        eos_ids = self.engine.eos_ids
        fork = self.engine.fork(prompt_ids, [p.tokens for p in parents])
        rows = list(range(len(parents)))  # live row -> parent index
        toks: list[list[int]] = [[] for _ in parents]
        texts = [""] * len(parents)
        ended = [False] * len(parents)
        eos = [False] * len(parents)
        room = [max_new_tokens - len(p.tokens) for p in parents]
        stops = tuple(self.stops or ())
        back = max((len(x) for x in stops), default=0) + 16
        tails = [p.text[-back:] for p in parents] if stops else None  # a stop string may begin in the parent's text
        if min(room) <= 0:
            raise ValueError("a parent already fills the token budget")
        while rows:
            logits = fork.logits  # [live, V]
            if self.ban_eos:  # in place: this fork's logits are the sampler's own
                with torch.inference_mode():  # (the engine's outputs are inference tensors)
                    logits[:, sorted(eos_ids)] = float("-inf")
            if self.sampling.greedy:
                nxt = logits.argmax(-1)
            else:
                sp = self.sampling
                if sp.temperature != 1.0:  # tempered in place (no [rows, V] copy): the fork's logits are ours
                    with torch.inference_mode():
                        logits.div_(sp.temperature)
                nxt = P.sample_rows(logits, rng, 1.0, sp.top_k, sp.top_p, sp.min_p, sp.top_h)
            chosen = nxt.tolist()
            keep, feed = [], []
            first_eos = False
            for j, r in enumerate(rows):
                t = chosen[j]
                toks[r].append(t)
                self.generated += 1
                if t in eos_ids:
                    eos[r] = ended[r] = first_eos = True
                    continue
                piece = self.token_text(t)
                texts[r] += piece
                if stops and any(x in (tails[r] + texts[r])[-(back + len(piece)):] for x in stops):
                    eos[r] = ended[r] = first_eos = True  # the answer is complete (its text is cut at the stop later)
                    continue
                if len(toks[r]) >= room[r] or len(toks[r]) >= self.max_step_tokens and not whole:
                    ended[r] = True
                    continue
                if not whole and STEP_END in texts[r].lstrip():
                    ended[r] = True
                    continue
                keep.append(j)
                feed.append(t)
            if self.on_token is not None:
                self.on_token()
            if stop_first and first_eos:
                break
            if not keep:
                break
            if len(keep) < len(rows):
                fork.select(keep)
                rows = [rows[j] for j in keep]
            fork.step(feed)
        out = []
        for r, par in enumerate(parents):
            text = self.decode([t for t in toks[r] if t not in eos_ids])
            if stops and eos[r]:
                text = cut_text(text, stops)
            full = len(par.tokens) + len(toks[r]) >= max_new_tokens
            out.append(par.child(toks[r], text, eos[r], eos[r] or full))
        return out


def split_steps(text: str) -> list[str]:
    """A finished solution's steps: the text split at blank lines (empty pieces dropped)."""
    return [s for s in (p.strip() for p in text.split(STEP_END)) if s]


class SearchStrategy(Strategy):
    """Base of the test-time scaling strategies: sampling many candidates, scoring, choosing."""

    lossless = False
    search = True
    summary_fields = ("generated_tokens", "candidates", "prm_calls", "policy_forwards")
    needs_answers = False  # True: the task must define extract_answer / same_answer (voting)
    show_progress = False  # the runner sets it from run.progress: a bar of tokens sampled, expansions, scorer calls
    uses_scorer = False

    def __init__(self, sampling=None, scorer=None, aggregate: str = "last", max_step_tokens: int = 256):
        super().__init__(sampling)
        if aggregate not in AGGREGATES:
            raise ConfigError(f"{self.name}: aggregate must be one of {', '.join(AGGREGATES)}, got '{aggregate}'")
        if max_step_tokens < 1:
            raise ConfigError(f"{self.name}: max_step_tokens must be >= 1")
        if self.uses_scorer and scorer is None:
            raise ConfigError(f"{self.name} needs a scorer (strategy.scorer)")
        self.scorer, self.aggregate, self.max_step_tokens = scorer, aggregate, max_step_tokens
        self.extract_answer = self.same_answer = None

    def params(self) -> dict:
        out = super().params()
        if self.scorer is not None:
            out["scorer"] = self.scorer.describe()["name"]
        return out

    def row_labels(self) -> dict:
        return {**super().row_labels(), "scorer": self.scorer.describe()["name"] if self.scorer is not None else None}

    def artifacts(self) -> dict[str, str]:
        """The strategy's files and its scorer's (a trained value head): both in the run identity."""
        out = super().artifacts()
        if self.scorer is not None:
            out.update({f"scorer.{k}": v for k, v in self.scorer.artifacts().items()})
        return out

    def bind_task(self, task) -> None:
        """Called by the runner before models load: the answer functions, never the gold."""
        if self.needs_answers and not getattr(task, "votes", False):
            raise ConfigError(f"strategy {self.name} votes on final answers, which task {task.name} does not define")
        if getattr(task, "votes", False):
            self.extract_answer, self.same_answer = task.extract_answer, task.same_answer

    def setup(self, target, draft=None) -> None:
        if self.scorer is not None:
            self.scorer.bind(target)

    # ------------------------------------------------------------------ per example
    def decode(self, state) -> None:
        self.undecidable = 0  # answer comparisons the task could not decide (math-verify timeouts)
        s = Search(self, state)
        try:
            choice = self.search(s)
        finally:
            s.close()
        state.emit(choice.candidate.tokens)
        state.extra.update({"generated_tokens": s.generated, "candidates": choice.n_candidates,
                            "policy_forwards": state.target.forwards - s.forwards0})
        if self.scorer is not None:
            state.extra.update({"prm_calls": s.prm_calls, "prm_tokens": self.scorer.tokens - s.scorer0[1]})
        state.extra.update(choice.extra)
        if self.undecidable:
            state.extra["undecidable_comparisons"] = self.undecidable

    def search(self, s: "Search") -> "Choice":
        """Search one example: sample with s.extend, score with s.score, return self.chose(...)."""
        raise NotImplementedError

    @staticmethod
    def chose(candidate: Candidate, n_candidates: int, **extra) -> "Choice":
        """The search's answer, how many candidates it sampled, and its own counters for the row."""
        return Choice(candidate, n_candidates, extra)

    def score(self, question: str, cands: list[Candidate], last_only: bool = False) -> list[float]:
        """Scorer values: the aggregate over every step, or, with last_only or aggregate "last",
        the newest step's score only (kept in cand.scores so later aggregates need no rescoring)."""
        if last_only:  # step-wise search: the steps as sampled; only the newest is new
            vals = self.scorer.score_last(question, [c.texts for c in cands])
            for c, v in zip(cands, vals):
                c.scores = c.scores[: len(c.steps) - 1] + [v]
            return [aggregate(c.scores, self.aggregate) for c in cands]
        steps = [split_steps(c.text) or [c.text] for c in cands]  # whole solutions: split at blank lines
        if self.aggregate == "last":  # only the final step's score is needed
            vals = self.scorer.score_last(question, steps)
            for c, v in zip(cands, vals):
                c.scores = [v]
            return vals
        per_step = self.scorer.score(question, steps)
        for c, s in zip(cands, per_step):
            c.scores = s
        return [aggregate(s, self.aggregate) for s in per_step]

    # ------------------------------------------------------------------ voting
    def answer_classes(self, cands: list[Candidate]) -> list[tuple[object, list[int]]]:
        """Group candidates by equivalent final answers: [(answer, [candidate indices])] in order
        of first appearance. Candidates without an answer form no class. A comparison the task
        cannot decide (math-verify timed out or failed) counts as 'different' and is counted in
        the row's `undecidable_comparisons`."""

        classes: list[tuple[object, list[int]]] = []
        exact: dict = {}
        for i, c in enumerate(cands):
            a = self.extract_answer(c.text)
            if a is None:
                continue
            if a in exact:
                classes[exact[a]][1].append(i)
                continue
            for k, (rep, members) in enumerate(classes):
                try:
                    same = self.same_answer(rep, a)
                except UndecidableComparison:
                    self.undecidable = getattr(self, "undecidable", 0) + 1
                    same = False
                if same:
                    members.append(i)
                    exact[a] = k
                    break
            else:
                exact[a] = len(classes)
                classes.append((a, [i]))
        return classes


def vote(classes: list[tuple[object, list[int]]], weights: list[float] | None = None) -> int | None:
    """The winning class's index: the largest total weight (count when weights is None); ties go to
    the class whose first member came first (i.e. the earliest sample), so the rule is
    deterministic and independent of answer spelling. None when there is no class."""
    best, best_key = None, None
    for k, (_, members) in enumerate(classes):
        w = len(members) if weights is None else sum(weights[i] for i in members)
        key = (w, -min(members))
        if best_key is None or key > best_key:
            best, best_key = k, key
    return best


@dataclass
class Choice:
    candidate: Candidate
    n_candidates: int
    extra: dict = field(default_factory=dict)


class Search:
    """One example's search: the decoding state, the batched sampler over the shared prompt KV,
    the question the scorer judges against, and the counters the row reports."""

    def __init__(self, strategy: SearchStrategy, state):
        self.strategy, self.state = strategy, state
        self.prompt, self.target, self.rng, self.budget = state.prompt, state.target, state.rng, state.budget
        self.question = state.prompt.question
        self.sampler = StepSampler(state.target, strategy.sampling, strategy.max_step_tokens)
        self.sampler.stops = tuple(state.prompt.stop or ())
        sc = strategy.scorer
        self.scorer0 = (sc.calls, sc.tokens) if sc is not None else (0, 0)
        self.forwards0 = state.target_forwards_at_start
        self.bar, self.expansions = None, 0
        if strategy.show_progress:  # a search can take minutes per example: its own bar, under the run's
            from tqdm import tqdm

            total = getattr(strategy, "token_budget", None)
            self.bar = tqdm(total=total, desc=f"  {strategy.name} search", unit="tok", leave=False, position=1,
                            dynamic_ncols=True, mininterval=0.5)
            self.sampler.on_token = self._count  # per batched forward: only the count (tqdm throttles redraws)

    def _count(self) -> None:
        self.bar.update(self.generated - self.bar.n)

    def _progress(self) -> None:
        """After an expansion or a scorer call: the count and the search's counters."""
        if self.bar is not None:
            self._count()
            self.bar.set_postfix(expansions=self.expansions, scorer_calls=self.prm_calls, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    @property
    def generated(self) -> int:
        """Tokens sampled so far, over all candidates."""
        return self.sampler.generated

    @property
    def prm_calls(self) -> int:
        return self.strategy.scorer.calls - self.scorer0[0] if self.strategy.scorer is not None else 0

    def extend(self, parents: list[Candidate], whole: bool = False, stop_first: bool = False,
               prompt: list[int] | None = None) -> list[Candidate]:
        """StepSampler.extend after this prompt (or another one), with this example's RNG and budget."""
        out = self.sampler.extend(self.prompt.ids if prompt is None else prompt, parents, self.rng, self.budget,
                                  whole=whole, stop_first=stop_first)
        self.expansions += 1
        self._progress()
        return out

    def score(self, cands: list[Candidate], last_only: bool = False) -> list[float]:
        out = self.strategy.score(self.question, cands, last_only)
        self._progress()
        return out


class SampleN(SearchStrategy):
    """Base of the methods that draw N whole solutions in one batched generation over the shared
    prompt KV and then choose one (best_of_n by score, self_consistency / weighted_vote by vote)."""

    def __init__(self, n: int = 4, sampling=None, scorer=None, aggregate: str = "last", max_step_tokens: int = 256,
                 record_samples: bool = False):
        super().__init__(sampling, scorer, aggregate, max_step_tokens)
        if n < 1:
            raise ConfigError(f"{self.name}: n must be >= 1, got {n}")
        self.n = n
        self.record_samples = bool(record_samples)  # True: every sample's text in the row (`samples`)

    def params(self):
        return {**super().params(), "budget": f"N={self.n}"}

    def sample(self, s: Search) -> list[Candidate]:
        cands = s.extend([Candidate()] * self.n, whole=True)
        if self.record_samples:  # auditing a vote, or training data for a scorer (tools/train_value_head.py)
            s.state.extra["samples"] = [{"text": c.text, "eos": c.eos, "tokens": len(c.tokens)} for c in cands]
        return cands
