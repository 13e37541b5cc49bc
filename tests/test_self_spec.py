"""Self-speculative / nested-draft strategies: DEL (dynamic exit layer), S2D (nested drafts),
LUD (lexical units), and the engine's early-exit path they share (`forward_layers`, `head`,
`crop_to`). Greedy equality of their YAMLs is in tests/test_lossless.py."""

import pytest
import torch

from harness.errors import ConfigError
from strategies.core.base import SamplingParams
from strategies.del_exit import DEL, choose_exit, expected_tokens
from strategies.greedy import Greedy
from strategies.lud import LUD, confident_span
from strategies.s2d import S2D, NestedDraft, pick_exit
from tests.conftest import tiny_spec
from tests import test_distribution
from tests.test_distribution import chi2_pvalue, empirical, exact_joint
from tests.test_lossless import PROMPTS, load_strategy

IDS = [72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100]


# ------------------------------------------------------------------------ engine: early exit
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_exit_layer_logits_equal_truncated_model(arch):
    full = tiny_spec("full", seed=5, arch=arch).load()
    assert "early_exit" in full.capabilities
    for layer in (1, 2, 3):
        ref = tiny_spec("trunc", seed=5, arch=arch, truncate_layers=layer).load().forward(IDS)
        full.reset()
        parts = [full.forward_layers(chunk, 0, layer)[1] for chunk in (IDS[:5], IDS[5:6], IDS[6:])]
        assert torch.allclose(torch.cat(parts), ref, atol=1e-5)
        assert [full.layer_length(i) for i in range(4)] == [len(IDS)] * layer + [0] * (4 - layer)
        # the same exit from a full forward's hidden state: final norm + LM head on layer l's output
        full.reset()
        full.forward(IDS, hidden_layers=[layer])
        assert torch.allclose(full.head(full.hidden[layer]), ref, atol=1e-5)


def test_layer_segments_continue_and_crop_restores(tiny_target):
    e = tiny_target
    e.reset()
    ref = e.forward(IDS)
    e.reset()
    h, _ = e.forward_layers(IDS[:6], 0, 2, logits=False)
    h, lg = e.forward_layers(h, 2, 4)  # layers 2..3 continue from layer 2's input
    e.forward_layers(IDS[6:7], 0, 1)  # a partial write the full model must not see
    assert [e.layer_length(i) for i in range(4)] == [7, 6, 6, 6]
    with pytest.raises(ValueError, match="different cached lengths"):
        e.forward_layers(IDS[6:7], 0, 2)
    e.crop_to(6)
    assert [e.layer_length(i) for i in range(4)] == [6] * 4
    assert torch.allclose(lg, ref[:6], atol=1e-5)
    assert torch.allclose(e.forward(IDS[6:]), ref[6:], atol=1e-5)


# ------------------------------------------------------------------------ DEL
def test_tpl_choice_hand_checked():
    # L = 4: TPL(1,1) = 1.5/5 = .300, TPL(1,2) = 1.75/6 = .292, TPL(2,1) = 1.9/6 = .317,
    # TPL(2,2) = 2.71/8 = .339 (best), plain = 1/4
    layer, d, tpl = choose_exit({1: 0.5, 2: 0.9}, 4, 2)
    assert (layer, d) == (2, 2) and tpl == pytest.approx(2.71 / 8)
    # TPL(2,1) = 1.3/6 = .217, TPL(2,2) = 1.39/8 = .174 < 1/4: no speculation
    assert choose_exit({2: 0.3}, 4, 2) == (None, 0, 0.25)
    # SmolLM2's measured exit agreement (docs/strategies.md): no (l, d) beats plain decoding
    assert choose_exit({14: 0.19, 20: 0.27, 26: 0.53, 29: 0.70}, 30, 8)[:2] == (None, 0)
    # an exit that always agrees: the shallowest such layer, as long a draft as allowed
    assert choose_exit({1: 1.0, 2: 1.0, 3: 1.0}, 4, 5)[:2] == (1, 5)
    assert expected_tokens(1.0, 3) == 4 and expected_tokens(0.5, 1) == pytest.approx(1.5)


def _identity_tail(seed=0, keep=2):
    """A 4-layer tiny model whose layers >= keep add nothing (zero output projections): the exit
    after layer `keep` gives exactly the final logits, so its shadow acceptance is 1."""
    e = tiny_spec("tail0", seed=seed).load()
    for layer in e.model.model.layers[keep:]:
        layer.self_attn.o_proj.weight.data.zero_()
        layer.mlp.down_proj.weight.data.zero_()
    return e


def test_del_learns_a_perfect_exit_from_shadow_tokens():
    e = _identity_tail(keep=2)
    ref = Greedy().generate(e, PROMPTS[2], 40, torch.Generator()).tokens
    s = DEL(exit_layers=[1, 2, 3], d_max=4, prior_accept=0.2, prior_weight=2.0)  # pessimistic prior
    tr = s.generate(e, PROMPTS[2], 40, torch.Generator())
    assert tr.tokens == ref
    ex = tr.extra
    assert ex["del_shadow_hits_l2"] == ex["del_shadow_n_l2"] > 0  # layer 2 always agrees
    assert ex["del_shadow_hits_l3"] == ex["del_shadow_n_l3"]
    assert ex["del_shadow_hits_l1"] < ex["del_shadow_n_l1"]
    assert ex["del_steps_l2"] > 0 and ex["del_steps_l3"] == 0  # the cheaper perfect exit wins over 3
    # without the imperfect layer 1, every draft (from exit 2) is accepted
    tr = DEL(exit_layers=[2, 3], d_max=4, prior_accept=0.2, prior_weight=2.0).generate(
        e, PROMPTS[2], 40, torch.Generator())
    ex = tr.extra
    assert tr.tokens == ref and ex["del_steps_l2"] > 0 and ex["del_steps_l3"] == 0
    assert tr.accepted == tr.drafted and ex["del_len_4"] > 0
    assert tr.target_forwards < len(tr.tokens) / 2  # MAT > 2
    assert tr.draft_forwards == tr.drafted


def test_del_chooses_no_speculation_when_exits_disagree(tiny_target):
    ref = Greedy().generate(tiny_target, PROMPTS[0], 30, torch.Generator()).tokens
    tr = DEL(prior_accept=0.01, prior_weight=10.0).generate(tiny_target, PROMPTS[0], 30, torch.Generator())
    assert tr.tokens == ref and tr.drafted == 0 and tr.draft_forwards == 0
    assert tr.extra["del_plain_steps"] == tr.target_forwards == 30
    assert sum(tr.extra[f"del_shadow_n_l{x}"] for x in (1, 2, 3)) == 3 * 30  # shadows still collected


def test_del_bad_config():
    for kw in ({"exit_layers": [0]}, {"d_max": 0}, {"prior_accept": 1.0}, {"shadow_every": 0}):
        with pytest.raises(ConfigError, match="del:"):
            DEL(**kw)


# ------------------------------------------------------------------------ S2D
def test_s2d_pick_exit_by_confidence():
    assert pick_exit([0.2, 0.7, 0.9], 0.6) == 1  # the first confident sub-model
    assert pick_exit([0.65, 0.1, 0.9], 0.6) == 0
    assert pick_exit([0.1, 0.2, 0.3], 0.6) == 2  # nobody confident: the deepest proposes
    assert pick_exit([0.1, 0.2], 0.0) == 0


def test_nested_draft_lazy_kv_matches_each_prefix_model():
    """Mixed exits over a sequence: every proposing exit's logits equal those of a model truncated
    to that depth fed the whole sequence, so the lazily caught-up deeper KV is exact."""
    exits = [1, 2, 4]
    draft = tiny_spec("nd", seed=7).load()
    truncated = {x: tiny_spec("nd", seed=7, truncate_layers=x).load() if x < 4 else tiny_spec("nd", seed=7).load()
                 for x in exits}
    seq = list(PROMPTS[2][:20])
    conf = torch.softmax(truncated[1].forward(seq + IDS)[len(seq) - 1:], -1).max(-1).values.sort().values
    threshold = float(conf[len(conf) // 2] + conf[len(conf) // 2 - 1]) / 2  # exit 1 confident about half the time
    nd = NestedDraft(draft, exits)
    draft.reset()
    chosen, feed = [], seq
    for tok in IDS:
        lg, j = nd.next_logits(feed, threshold)
        chosen.append(j)
        ref = {}
        for x in exits:  # each sub-model alone on the whole sequence
            truncated[x].reset()
            ref[x] = truncated[x].forward(seq)[-1]
        assert pick_exit([float(torch.softmax(ref[x], -1).max()) for x in exits], threshold) == j
        assert torch.allclose(lg, ref[exits[j]], atol=1e-5)
        seq = seq + [tok]
        feed = [tok]
    assert len(set(chosen)) >= 2, chosen
    nd.truncate_to(15)
    assert max(draft.layer_length(i) for i in range(4)) <= 15 and all(p < 15 for p in nd.hid)


def test_s2d_records_exits_and_is_greedy():
    target = tiny_spec("t", seed=0).load()
    draft = tiny_spec("t", seed=0).load()  # the target itself: its deepest exit always agrees
    ref = Greedy().generate(target, PROMPTS[0], 30, torch.Generator()).tokens
    for thr, used in ((0.0, "s2d_exit_1"), (1.0, "s2d_exit_4")):
        tr = S2D(draft=None, exits=[1, 2, 4, 9], threshold=thr, k=3).generate(
            target, PROMPTS[0], 30, torch.Generator(), draft=draft)
        assert tr.tokens == ref
        assert set(k for k, v in tr.extra.items() if k.startswith("s2d_exit_")) == \
            {"s2d_exit_1", "s2d_exit_2", "s2d_exit_4"}  # 9 clipped to the draft's 4 layers
        assert tr.extra[used] == tr.drafted == tr.draft_forwards
    assert tr.accepted == tr.drafted  # exit 4 is the target itself


def test_s2d_bad_config():
    for kw in ({"exits": []}, {"exits": [0, 2]}, {"threshold": 1.5}, {"k": 0}):
        with pytest.raises(ConfigError, match="s2d:"):
            S2D(draft=None, **kw)


# ------------------------------------------------------------------------ LUD
def test_lud_confident_span():
    def rows(ps):  # logits whose softmax max is p (over V = 4)
        out = []
        for p in ps:
            rest = (1 - p) / 3
            out.append(torch.log(torch.tensor([p, rest, rest, rest])))
        return torch.stack(out)
    assert confident_span(rows([0.95, 0.92, 0.5, 0.99]), 0.9) == 2
    assert confident_span(rows([0.5, 0.95]), 0.9) == 0
    assert confident_span(rows([0.95, 0.91]), 0.9) == 2
    assert confident_span(torch.zeros(0, 4), 0.9) == 0


def test_lud_lossy_unit_is_next_token_plus_parallel_predictions(tiny_target):
    s = load_strategy("lud", ["strategy.verify=false", "strategy.threshold=1e-9", "strategy.k=3",
                              "strategy.placeholder_id=258"])
    assert s.lossless is False and s.params()["lossless"] is False
    assert load_strategy("lud").lossless is True  # the YAML default is the verified mode
    prompt = PROMPTS[0]
    tiny_target.reset()
    lg = tiny_target.forward(prompt + [258] * 3)
    unit = [int(lg[len(prompt) - 1 + i].argmax()) for i in range(4)]  # next token + 3 parallel predictions
    tr = s.generate(tiny_target, prompt, 4, torch.Generator())
    assert tr.tokens == unit and tr.target_forwards == 1 and tr.extra["lud_span_tokens"] == 3


def test_lud_verified_spans_are_drafted_and_lossless(tiny_target):
    ref = Greedy().generate(tiny_target, PROMPTS[1], 40, torch.Generator()).tokens
    s = LUD(k=3, threshold=1e-9, verify=True)
    tr = s.generate(tiny_target, PROMPTS[1], 40, torch.Generator())
    assert tr.tokens == ref and tr.drafted > 0 and tr.verifications > 0
    assert s.placeholder(tiny_target) == 259  # ByteTokenizer: no pad/unk -> the last id
    with pytest.raises(ConfigError, match="lud:"):
        LUD(k=0)
    with pytest.raises(ConfigError, match="vocabulary size"):
        LUD(placeholder_id=10_000).setup(tiny_target)


# ------------------------------------------------------------------------ T > 0 distributions
SP = SamplingParams(temperature=1.0, top_k=3)
N_SAMPLES = 2000  # fewer than test_distribution's 3000 (time budget); still >= 8 bins of >= 5 expected


@pytest.mark.parametrize("make", [
    lambda: DEL(exit_layers=[1], d_max=2, prior_accept=0.9, prior_weight=100.0, sampling=SP),
    lambda: S2D(draft=None, exits=[1, 2], threshold=0.45, k=2, sampling=SP),
    lambda: LUD(k=2, threshold=0.05, verify=True, sampling=SP),
], ids=["del", "s2d", "lud"])
def test_self_spec_preserves_distribution(make, small_models, monkeypatch):
    target, draft = small_models
    s = make()
    monkeypatch.setattr(test_distribution, "N", N_SAMPLES)  # chi2_pvalue merges bins for this many draws
    counts = empirical(s, target, draft if isinstance(s, S2D) else None, n=N_SAMPLES)
    assert chi2_pvalue(counts, exact_joint(target, SP)) > 1e-3


def test_distribution_tests_exercise_drafting(small_models):
    """The T > 0 cases above really draft (and S2D really mixes its exits)."""
    target, draft = small_models
    g = torch.Generator().manual_seed(0)
    tr = DEL(exit_layers=[1], d_max=2, prior_accept=0.9, prior_weight=100.0, sampling=SP).generate(
        target, [1, 2, 3, 0, 1, 2, 3, 1], 3, g)
    assert tr.drafted > 0
    exits = {1: 0, 2: 0}
    for i in range(20):
        tr = S2D(draft=None, exits=[1, 2], threshold=0.45, k=2, sampling=SP).generate(
            target, [1, 2, 3, 0, 1, 2, 3, 1], 3, torch.Generator().manual_seed(i), draft=draft)
        for x in exits:
            exits[x] += tr.extra[f"s2d_exit_{x}"]
    assert min(exits.values()) > 0, exits
    tr = LUD(k=2, threshold=0.05, verify=True, sampling=SP).generate(target, [1, 2, 3, 0, 1, 2, 3, 1], 3, g)
    assert tr.drafted > 0


def test_del_dynamic_draft_exiting_stops_unsure_drafts_and_stays_lossless():
    e = _identity_tail(keep=2)
    ref = Greedy().generate(e, PROMPTS[2], 40, torch.Generator()).tokens
    base = DEL(exit_layers=[1, 2], d_max=4, prior_accept=0.9, prior_weight=100.0)
    off = base.generate(e, PROMPTS[2], 40, torch.Generator())
    # threshold 1: every drafted token is below it, so each round drafts exactly one token
    one = DEL(exit_layers=[1, 2], d_max=4, prior_accept=0.9, prior_weight=100.0, draft_exit_threshold=1.0)
    tr = one.generate(e, PROMPTS[2], 40, torch.Generator())
    assert tr.tokens == ref == off.tokens
    assert tr.extra["del_draft_exits"] > 0 and all(tr.extra[f"del_len_{d}"] == 0 for d in (2, 3, 4))
    assert "del_draft_exits" not in off.extra and any(off.extra[f"del_len_{d}"] for d in (2, 3, 4))
    mid = DEL(exit_layers=[1, 2], d_max=4, prior_accept=0.9, prior_weight=100.0, draft_exit_threshold=0.5)
    tm = mid.generate(e, PROMPTS[2], 40, torch.Generator())
    assert tm.tokens == ref and tm.drafted <= off.drafted


def test_del_dynamic_draft_exiting_preserves_the_distribution(small_models, monkeypatch):
    """T > 0 with dynamic draft exiting ON and rounds long enough for it to act: 4 tokens, so the
    second round may draft 2 and stop after the first when the exit is unsure (threshold 0.6)."""
    target, _ = small_models
    monkeypatch.setattr(test_distribution, "STEPS", 4)
    monkeypatch.setattr(test_distribution, "N", 3000)

    def make():
        return DEL(exit_layers=[1], d_max=3, prior_accept=0.9, prior_weight=100.0, draft_exit_threshold=0.6,
                   sampling=SP)

    exits = sum(make().generate(target, test_distribution.PROMPT, 4, torch.Generator().manual_seed(i))
                .extra["del_draft_exits"] for i in range(50))
    assert exits > 10  # the mechanism really acts in this setting
    counts = empirical(make(), target, None, n=3000)
    assert chi2_pvalue(counts, exact_joint(target, SP)) > 1e-3
