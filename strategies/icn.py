"""In-context navigation (ICN; "Correlation and Navigation in the Vocabulary Key Representation
Space of Language Models", Peng et al. 2024/25).

Sampling the same prompt again tends to revisit the same answers (next-token keys that are close
in the key space stay likely together). ICN steers away from explored answers by putting them
in the context and asking for something else; repeated, it widens the set of answers seen, and
the pooled samples are voted on (self-consistency over a more diverse pool).

    round 1: n = `n` samples of the task's own prompt (one batched generation, shared prompt KV)
    round r = 2 .. R (`rounds`): the explored answers so far E = distinct final answers of all
        earlier samples (the task's extract_answer / same_answer, in order of first appearance)
        are put into a new prompt: the task's messages with this fixed text appended to the LAST
        user message (after one blank line)

            Answers already explored: {a1}, {a2}, {a3}. Give a solution that reaches a different answer.

        rendered with the model's chat template (target.render(messages)) and sampled n times in
        one batched generation. When no earlier sample has an answer (E empty), the round samples
        the original prompt again.
    final answer: majority vote over ALL rounds' samples (strategies/core/search.vote with the task's
        equivalence; ties: the class whose first member is the earliest sample, rounds in order),
        and the output is the first sample of the winning class; if no sample has an answer,
        sample 0.

Answers are shown in their extracted form (e.g. `\\frac{1}{2}` from a \\boxed{} for MATH, the
normalised number for GSM8K). Needs the task's messages (the runner passes them) and answer
functions (tasks with votes=True). Rows: generated_tokens (all R x n samples), candidates,
icn_distinct (distinct answer classes over all rounds), icn_distinct_round1 (after round 1
only: the plain self-consistency pool's diversity), winning_votes, rounds.
"""

from __future__ import annotations

import copy

from harness.errors import ConfigError
from strategies.core.search import Candidate, SearchStrategy, vote

TEMPLATE = "Answers already explored: {answers}. Give a solution that reaches a different answer."


def navigation_messages(messages, explored: list[str]) -> list[dict]:
    """The task's messages with the ICN instruction appended to the last user message."""
    msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else copy.deepcopy(list(messages))
    users = [i for i, m in enumerate(msgs) if m.get("role") == "user"]
    if not users:
        raise ValueError("icn: the messages hold no user turn to extend")
    m = msgs[users[-1]]
    m["content"] = m["content"].rstrip() + "\n\n" + TEMPLATE.format(answers=", ".join(explored))
    return msgs


class InContextNavigation(SearchStrategy):
    name = "icn"
    needs_answers = True

    def __init__(self, n: int = 4, rounds: int = 2, sampling=None, max_step_tokens: int = 256):
        super().__init__(sampling, None, "last", max_step_tokens)
        if n < 1 or rounds < 1:
            raise ConfigError(f"{self.name}: need n >= 1 and rounds >= 1")
        self.n, self.rounds = n, rounds

    def params(self):
        return {**super().params(), "budget": f"n={self.n},R={self.rounds}"}

    def search(self, s):
        if s.prompt.messages is None:
            raise ValueError("icn re-prompts with the task's messages; call generate(..., messages=...)")
        cands: list[Candidate] = []
        distinct_first = 0
        for r in range(self.rounds):
            classes = self.answer_classes(cands) if cands else []
            prompt = s.prompt.ids if not classes else s.target.render(
                navigation_messages(s.prompt.messages, [str(a) for a, _ in classes]))
            cands += s.extend([Candidate()] * self.n, whole=True, prompt=prompt)
            if r == 0:
                distinct_first = len(self.answer_classes(cands))
        classes = self.answer_classes(cands)
        k = vote(classes)
        chosen = cands[classes[k][1][0]] if k is not None else cands[0]
        return self.chose(chosen, len(cands),
                           icn_distinct=len(classes), icn_distinct_round1=distinct_first,
                           winning_votes=len(classes[k][1]) if k is not None else 0, rounds=self.rounds)
