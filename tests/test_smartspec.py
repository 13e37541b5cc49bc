"""SmartSpec chooses K by goodput: off when drafting cannot pay, k_max when it is nearly free."""

import pytest
import torch

from strategies.greedy import Greedy
from strategies.smartspec import SmartSpec, expected_tokens


def test_expected_tokens():
    assert expected_tokens(0, 0.7) == pytest.approx(1.0)
    assert expected_tokens(3, 0.5) == pytest.approx(1 + 0.5 + 0.25 + 0.125)
    assert expected_tokens(4, 1.0) == 5.0


def test_turns_speculation_off_when_it_would_lose(tiny_target, tiny_selfdraft):
    costly = {"target_a": 1.0, "target_b": 0.01, "draft_token_s": 5.0}  # a draft token costs 5 target steps
    s = SmartSpec(draft=None, k_max=6, step_model=costly)
    ref = Greedy().generate(tiny_target, [1, 2, 3, 4], 30, torch.Generator()).tokens
    tr = s.generate(tiny_target, [1, 2, 3, 4], 30, torch.Generator(), draft=tiny_selfdraft)
    assert tr.tokens == ref
    assert tr.draft_forwards == 0 and tr.drafted == 0 and tr.extra["k_chosen"] == 0
    assert tr.extra["steps_without_speculation"] == tr.target_forwards == len(ref)


def test_speculates_fully_when_drafting_is_free(tiny_target, tiny_selfdraft):
    free = {"target_a": 1.0, "target_b": 0.0, "draft_token_s": 0.0}
    tr = SmartSpec(draft=None, k_max=5, step_model=free, prior_accept=0.9).generate(
        tiny_target, [1, 2, 3, 4], 30, torch.Generator(), draft=tiny_selfdraft)
    assert tr.extra["steps_without_speculation"] == 0 and tr.drafted > 0


def test_step_model_is_an_explicit_input(tmp_path):
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="exactly one"):
        SmartSpec(draft=None)  # nothing given: never profiled behind the user's back
    with pytest.raises(ConfigError, match="exactly one"):
        SmartSpec(draft=None, step_model={"target_a": 1, "target_b": 0, "draft_token_s": 0}, step_profile="x.json")
    with pytest.raises(ConfigError, match="does not exist"):
        SmartSpec(draft=None, step_profile=str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text('{"step_model": {"target_a": 1}}')
    with pytest.raises(ConfigError, match="not a step profile"):
        SmartSpec(draft=None, step_profile=str(tmp_path / "bad.json"))
    with pytest.raises(ConfigError, match="target_b"):
        SmartSpec(draft=None, step_model={"target_a": 1})


def test_profile_tool_writes_a_file_that_smartspec_reads(tmp_path, tiny_target, tiny_selfdraft):
    from tools.profile_smartspec import main

    out = tmp_path / "profile.json"
    assert main(["--out", str(out), "--repeats", "1", "model=tiny_random", "model@strategy.draft=tiny_random",
                 "strategy.draft.truncate_layers=1"]) == 0
    s = SmartSpec(draft=None, k_max=4, step_profile=str(out))
    m = dict(s.step_model)
    assert set(m) == {"target_a", "target_b", "draft_token_s"} and all(v >= 0 for v in m.values())
    assert s.params()["step_model"] == m and s.params()["step_profile"] == str(out)
    tr = s.generate(tiny_target, [1, 2, 3], 10, torch.Generator(), draft=tiny_selfdraft)
    assert s.step_model == m and tr.extra["step_model_target_a"] == m["target_a"]  # recorded in the row
    # same profile -> the same K choices and tokens, however busy the machine is now
    again = SmartSpec(draft=None, k_max=4, step_profile=str(out)).generate(
        tiny_target, [1, 2, 3], 10, torch.Generator(), draft=tiny_selfdraft)
    assert (again.tokens, again.extra) == (tr.tokens, tr.extra)


def test_specdec_pp_confidence_adapts_the_draft_length(tiny_target, tiny_selfdraft):
    from strategies.specdec_pp_confidence import SpecDecPP

    ref = Greedy().generate(tiny_target, [9, 8, 7], 40, torch.Generator()).tokens
    cautious = SpecDecPP(draft=None, threshold=0.01, k_min=2, k_max=20).generate(
        tiny_target, [9, 8, 7], 40, torch.Generator(), draft=tiny_selfdraft)
    bold = SpecDecPP(draft=None, threshold=0.999999, k_min=2, k_max=6).generate(
        tiny_target, [9, 8, 7], 40, torch.Generator(), draft=tiny_selfdraft)
    assert cautious.tokens == ref == bold.tokens
    # a random tiny draft is never confident: the cautious one stops at k_min, the bold one at k_max
    assert cautious.drafted <= 2 * cautious.verifications
    assert bold.drafted > 2 * bold.verifications


def test_a_profile_for_other_models_is_said(tmp_path, tiny_target, tiny_selfdraft, capsys):
    import json

    prof = tmp_path / "p.json"
    prof.write_text(json.dumps({"step_model": {"target_a": 1, "target_b": 0, "draft_token_s": 0},
                                "target": {"name": "qwen2.5-coder-1.5b"}, "draft": {"name": "qwen2.5-coder-0.5b"}}))
    SmartSpec(draft=None, step_profile=str(prof)).setup(tiny_target, tiny_selfdraft)
    assert "was measured for target qwen2.5-coder-1.5b" in capsys.readouterr().out
