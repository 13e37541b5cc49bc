"""The teacher-forced tie check: greedy passes at gap 0, a near-tie flip passes at its own gap but
is not identical, and a real bug (tree positions clamped at depth 1) fails it."""

import torch

from harness.tiecheck import tie_check
from strategies.core import trees as T
from strategies.core.base import Strategy
from strategies.dyspec import DySpec
from strategies.greedy import Greedy

PROMPT = [72, 101, 108, 108, 111, 32, 119]


def test_greedy_is_tie_consistent_at_gap_zero(tiny_target):
    out = Greedy().generate(tiny_target, PROMPT, 32, torch.Generator()).tokens
    r = tie_check(tiny_target, PROMPT, out, gap=1e-4)
    assert r["tie_consistent"] and r["non_argmax"] == 0 and r["max_deficit"] < 1e-4


def test_a_near_tie_flip_passes_at_its_gap_but_is_not_identical(tiny_target):
    """Swap the greedy token where the top two are closest for the runner-up, continue greedily:
    what a bf16 rounding flip looks like. Consistent at a gap above that margin, not below."""
    ref = Greedy().generate(tiny_target, PROMPT, 32, torch.Generator()).tokens
    tiny_target.reset()
    lp = torch.log_softmax(tiny_target.forward(PROMPT + ref[:-1])[len(PROMPT) - 1:].float(), -1)
    top2 = torch.topk(lp, 2, dim=-1)
    margin = top2.values[:, 0] - top2.values[:, 1]
    j = int(margin[:20].argmin())
    flipped = ref[:j] + [int(top2.indices[j, 1])]
    flipped += Greedy().generate(tiny_target, PROMPT + flipped, 32 - len(flipped), torch.Generator()).tokens
    assert flipped != ref
    m = float(margin[j])
    assert tie_check(tiny_target, PROMPT, flipped, gap=m + 1e-4)["tie_consistent"]
    bad = tie_check(tiny_target, PROMPT, flipped, gap=m / 2)
    assert not bad["tie_consistent"] and bad["first_violation"] == j


def _clamped_tree_logits(self, state, tokens, parents):
    """Strategy.tree_logits with a real bug: every node's position is depth min(d, 1)."""
    target = state.target
    tail = state.seq[target.length:]
    t = len(tail)
    anc, depth = T.ancestors(parents)
    depths = list(range(t)) + [t + min(d, 1) for d in depth]
    return target.forward(tail + tokens, tree=T.chain_and_tree(t, anc), depths=torch.tensor(depths))[t - 1:]


def test_the_position_clamp_bug_fails_the_tie_check(peaked_target, peaked_twin, monkeypatch):
    s = DySpec(draft=None, node_budget=8, max_children=2)
    good = s.generate(peaked_target, PROMPT, 32, torch.Generator(), draft=peaked_twin).tokens
    assert tie_check(peaked_target, PROMPT, good, gap=0.3)["tie_consistent"]
    monkeypatch.setattr(Strategy, "tree_logits", _clamped_tree_logits)
    bad = s.generate(peaked_target, PROMPT, 32, torch.Generator(), draft=peaked_twin).tokens
    r = tie_check(peaked_target, PROMPT, bad, gap=0.3)
    assert bad != good and not r["tie_consistent"] and r["max_deficit"] > 1.0, r
