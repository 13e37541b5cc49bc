"""#16: what a researcher meets first. Errors (one line, exit 2, nothing written), the paired
in-process baseline, auditable strict-JSON rows, prompting controls, the generic hub task, the
help page, and the plot conventions (fixed quality axes, speed from 0, labels that do not overlap)."""

import json
import math

import pytest
import torch

from harness import metrics
from harness.runner import run
from tests.helpers import cfg_for
from tests.test_bad_input import cli


def nothing_written(d):
    return not d.exists() or not any(d.iterdir())


@pytest.mark.parametrize("args,needle", [
    (["task.limt=2"], "unknown key 'limt' in task; valid keys: limit"),
    (["strategy=pld", "strategy.kk=3"], "unknown key 'kk' in strategy; valid keys: k,"),
    (["run.max_new_token=10"], "unknown key 'max_new_token' in run; valid keys: max_new_tokens"),
    (["+task.limt=2"], "takes no parameter 'limt'"),
    (["strategy=a_star", "scorer@strategy.scorer=nope"], "unknown scorer 'nope'"),
    (["model=gemma3_270m", "strategy=del_exit"], "full-attention llama / qwen2 layouts only"),
    (["model=gemma3_270m", "model.engine=static"], "engine=static drives llama / qwen2 layouts"),
    (["task.limit=abc"], "task.limit must be an integer"),
    (["model=hf"], "hub_id"),
    (["strategy=greedy", "run.paired_baseline=true"], "paired_baseline"),
    (["strategy=speculative", "model=tiny_random", "model@strategy.draft=tiny_random",
      "strategy.draft.tiny.vocab_size=300"], "different vocabularies"),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, args, needle):
    out = tmp_path / "results"
    rc, _, err = cli(*args, f"run.results_dir={out}")
    assert rc == 2, err
    assert err.count("\n") == 0 and err.startswith("error:") and needle in err, err
    assert nothing_written(out)  # not even Hydra's log folder: the checks run before Hydra starts


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_cuda_on_cpu_only_torch(tmp_path):
    rc, _, err = cli("model=tiny_random", "model.device=cuda", f"run.results_dir={tmp_path / 'r'}")
    assert rc == 2 and "sees no CUDA device" in err and err.count("\n") == 0
    assert nothing_written(tmp_path / "r")


def test_sweep_with_a_key_one_job_lacks_is_refused_naming_the_job(tmp_path):
    # strategy.k exists on speculative and pld but not on greedy: the composition check names the job
    rc, out, err = cli("-m", "model=tiny_random", "strategy=greedy,pld", "task=demo_arith", "task.limit=1",
                       "strategy.k=2", f"run.results_dir={tmp_path / 'r'}")
    assert rc == 2 and err.count("\n") == 0 and "in the sweep job with" in err and "strategy=greedy" in err
    assert nothing_written(tmp_path / "r")


def test_failing_sweep_job_prints_its_line_and_the_sweep_goes_on(tmp_path):
    rc, out, err = cli("-m", "model=tiny_random", "strategy=speculative", "model@strategy.draft=tiny_random",
                       "strategy.draft.tiny.vocab_size=300,260", "strategy.draft.truncate_layers=0", "strategy.k=2", "task=demo_arith", "task.limit=1",
                       "run.max_new_tokens=4", "run.progress=false", f"run.results_dir={tmp_path}",
                       "hydra.sweep.dir=" + str(tmp_path / "_hydra"))
    assert "different vocabularies" in err and "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.startswith("error:")] == \
        [next(line for line in err.splitlines() if "different vocabularies" in line)]
    runs = [p.name for p in tmp_path.iterdir() if p.name != "_hydra"]
    assert len(runs) == 1 and runs[0].startswith("demo_arith-speculative")  # the second job ran


def test_help_lists_groups_and_examples():
    rc, out, err = cli("--help")
    assert rc == 0 and "strategy: a_star" in out and "task: aime" in out and "examples:" in out
    assert "paired_baseline" in out and "num_fewshot" in out


# ---------------------------------------------------------------------------- paired baseline
def test_paired_baseline_rows_carry_in_process_speedup_and_identity(tmp_path):
    s = run(cfg_for(tmp_path, "strategy=pld", "run.paired_baseline=true", "task.limit=4", "run.max_new_tokens=16"))
    rows = [json.loads(line) for line in next(tmp_path.glob("*/rows.jsonl")).read_text().splitlines()]
    assert all(r["paired_greedy"]["identical"] for r in rows)  # pld is lossless
    assert {r["paired_greedy"]["ran_first"] for r in rows} == {True, False}  # interleaved both ways
    assert all(r["paired_speedup"] > 0 for r in rows)
    assert s["paired_n"] == 4 and s["paired_identical"] == 1.0 and s["paired_speedup"] > 0
    assert "speedup" not in s  # the across-run ratio is not computed when a paired one exists


def test_paired_baseline_catches_a_non_identical_method(tmp_path):
    # sampling at T = 1 is not greedy: the paired check must say so (a lossless claim can fail here)
    s = run(cfg_for(tmp_path, "strategy=sampling", "strategy.sampling.temperature=1.0", "run.paired_baseline=true",
                    "task.limit=4", "run.max_new_tokens=16"))
    assert s["paired_identical"] < 1.0
    rows = [json.loads(line) for line in next(tmp_path.glob("*/rows.jsonl")).read_text().splitlines()]
    assert any(r["paired_greedy"]["first_difference"] is not None and "output_text" in r["paired_greedy"] for r in rows)
    # and the tie check tells these samples from near-ties: T = 1 picks tokens far below the argmax
    assert s["paired_tie_consistent"] < 1.0
    assert any(r["paired_greedy"].get("tie_consistent") is False and r["paired_greedy"]["max_deficit"] > 0.3
               for r in rows)


def test_search_summary_reports_cost_not_speed(tmp_path, capsys):
    s = run(cfg_for(tmp_path, "strategy=self_consistency", "strategy.n=3", "run.paired_baseline=true",
                    "task.limit=2", "run.max_new_tokens=8"))
    text = capsys.readouterr().out
    assert s["search"] and "cost per example: generated tokens" in text and "MAT" not in text
    assert "TTFT" not in text and "speedup" not in text and "wall x" in text
    assert s["paired_generated_ratio"] > 2.0  # three samples against one greedy generation


# ---------------------------------------------------------------------------- rows
def test_rows_hold_prompt_and_gold_and_are_strict_json(tmp_path):
    run(cfg_for(tmp_path, "task.limit=2"))
    d = next(p for p in tmp_path.iterdir() if p.name != "_hydra")

    def strict(text):
        return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))

    rows = [strict(line) for line in (d / "rows.jsonl").read_text().splitlines()]
    assert rows[0]["prompt_messages"][-1]["role"] == "user" and "####" in rows[0]["gold"]
    summary = strict((d / "summary.json").read_text())  # mean TTFT etc. may be missing: null, never NaN
    assert "NaN" not in (d / "summary.json").read_text()
    assert summary["n"] == 2


def test_strict_json_replaces_nan():
    assert metrics.strict_json({"a": math.nan, "b": [1.0, math.inf], "c": "x"}) == {"a": None, "b": [1.0, None], "c": "x"}


# ---------------------------------------------------------------------------- prompting
def test_prompting_controls_system_fewshot_plain_text(tmp_path):
    from harness.runner import build
    from tasks.demo_arith import DemoArithmetic

    t = DemoArithmetic(limit=3, prompting={"num_fewshot": 2, "system_prompt": "Be brief."})
    ex = t.load()[0]
    m = t.messages(ex)
    assert [x["role"] for x in m] == ["system", "user", "assistant", "user", "assistant", "user"]
    test_questions = {e["question"] for e in DemoArithmetic().load()}
    assert not any(x["content"].split("\n\n")[-1] in test_questions for x in m[1:-1] if x["role"] == "user")
    plain = DemoArithmetic(prompting={"num_fewshot": 1, "chat_template": False})
    text = plain.plain_text(plain.messages(ex))
    import re

    assert len(re.findall(r"#### \d", text)) == 1 and text.endswith(ex["question"] + "\n")
    with pytest.raises(Exception, match="unknown prompting"):
        DemoArithmetic(prompting={"shots": 2})
    # part of the run identity: another folder
    a = run(cfg_for(tmp_path, "task.limit=1", "run.max_new_tokens=2"))
    b = run(cfg_for(tmp_path, "task.limit=1", "run.max_new_tokens=2", "task.prompting.num_fewshot=1"))
    assert a["run"] != b["run"]
    cfg = cfg_for(tmp_path, "task.prompting.chat_template=false")
    task, _, spec = build(cfg)
    eng = spec.load()
    ids, _ = task.prompt_ids(eng, task.load()[0])
    assert eng.decode(ids).startswith("Solve the following") and "User:" not in eng.decode(ids)


def test_gsm8k_fewshot_comes_from_train(tmp_path, monkeypatch):
    (tmp_path / "gsm8k").mkdir()
    rows = {"train": [{"question": f"train q{i}", "answer": f"work\n#### {i}"} for i in range(5)],
            "test": [{"question": "test q", "answer": "w\n#### 7"}]}
    for split, rs in rows.items():
        (tmp_path / "gsm8k" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rs))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path))
    from tasks.gsm8k import GSM8K

    t = GSM8K(prompting={"num_fewshot": 3})
    m = t.messages(t.load()[0])
    assert [x["content"] for x in m if x["role"] == "assistant"] == ["work\n#### 0", "work\n#### 1", "work\n#### 2"]
    with pytest.raises(Exception, match="train split has 5"):
        GSM8K(prompting={"num_fewshot": 6}).messages(t.load()[0])


# ---------------------------------------------------------------------------- generic task
def test_generic_task_on_a_local_folder_writes_prompt_and_gold(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.jsonl").write_text("".join(json.dumps({"q": f"What is {i}+1?", "a": str(i + 1), "uid": f"u{i}"}) + "\n"
                                             for i in range(3)))
    (data / "train.jsonl").write_text(json.dumps({"q": "What is 9+1?", "a": "10", "uid": "t0"}) + "\n")
    res = tmp_path / "res"
    s = run(cfg_for(res, "task=hub", f"task.path={data}", "task.prompt='Q: {q}'", "task.answer=a",
                    "task.metric=last_number", "task.id_field=uid", "task.prompting.num_fewshot=1", "task.name=sums"))
    rows = [json.loads(line) for line in next(res.glob("sums-*/rows.jsonl")).read_text().splitlines()]
    assert [r["example_id"] for r in rows] == ["u0", "u1", "u2"] and [r["gold"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["prompt_messages"][-1]["content"] == "Q: What is 0+1?"
    assert rows[0]["prompt_messages"][1] == {"role": "assistant", "content": "10"}
    assert s["n"] == 3


def test_generic_task_metrics_and_errors(tmp_path):
    from harness.errors import ConfigError
    from tasks.hub import HubTask

    f = tmp_path / "d.csv"
    f.write_text("question,answer\nCapital of France?,Paris\n")
    t = HubTask(path=str(f), prompt="{question}", answer="answer", metric="exact_match")
    ex = t.load()[0]
    assert t.score(ex, " paris. ")["quality"] == 1.0 and t.score(ex, "Lyon")["quality"] == 0.0
    assert HubTask(path=str(f), prompt="{question}", metric="contains").score(ex, "It is Paris!")["quality"] == 1.0
    assert HubTask(path=str(f), prompt="{question}", metric="f1").score(ex, "Paris France")["quality"] == \
        pytest.approx(2 / 3)
    w = HubTask(path=str(f), prompt="{question}", metric="wer")
    assert w.direction() == "lower" and w.score(ex, "Paris")["quality"] == 0.0
    assert HubTask(path=str(f), prompt="{question}", metric="rouge_l").score(ex, "Paris")["quality"] == 1.0
    with pytest.raises(ConfigError, match="no field"):
        HubTask(path=str(f), prompt="{nope}").load()
    with pytest.raises(ConfigError, match="metric 'acc'"):
        HubTask(path=str(f), metric="acc")
    with pytest.raises(ConfigError, match="needs task.dataset"):
        HubTask()


# ---------------------------------------------------------------------------- plots
def _df(points):
    import pandas as pd

    return pd.DataFrame([{"strategy": s, "model": "m", "quality": q, "quality_ci_low": lo, "quality_ci_high": hi,
                          "tokens_per_s": t, "n": 8, "extra_generated_tokens": g, "budget": None}
                         for s, q, lo, hi, t, g in points])


def _axes_of(path, monkeypatch):
    import matplotlib.pyplot as plt

    saved = {}
    orig = plt.Figure.savefig

    def grab(fig, *a, **k):
        saved["fig"] = fig
        return orig(fig, *a, **k)

    monkeypatch.setattr(plt.Figure, "savefig", grab)
    return saved


def test_plots_fixed_quality_axis_speed_from_zero_labels_apart(tmp_path, monkeypatch):
    from harness import leaderboard

    saved = _axes_of(tmp_path, monkeypatch)
    # two identical points (auto-scaling made them 0.48-0.52 apart) and a third close by
    df = _df([("greedy", 0.5, 0.2, 0.8, 10.0, 100), ("pld", 0.5, 0.2, 0.8, 10.2, 100),
              ("token_recycling", 0.5, 0.2, 0.8, 10.4, 100)])
    leaderboard.write_plot(df, tmp_path / "p.png", "t", "accuracy")
    ax = saved["fig"].axes[0]
    assert ax.get_ylim() == pytest.approx((-0.02, 1.02)) and ax.get_xlim()[0] == 0
    assert "n = 8" in ax.get_title()
    from harness.plots import renderer_of

    r = renderer_of(saved["fig"])
    boxes = [t.get_window_extent(r) for t in ax.texts]
    assert len(boxes) == 3 and not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    # the CI bars are drawn (not collapsed): vertical extent of the error lines = the CI
    segs = [s for c in ax.collections for s in c.get_segments()]
    assert segs and all(abs(s[1][1] - s[0][1]) == pytest.approx(0.6) for s in segs)
    # an error rate: from 0, inverted (up is better)
    wer = _df([("greedy", 0.08, 0.05, 0.11, 10.0, 100)])
    leaderboard.write_plot(wer, tmp_path / "w.png", "t", "wer", "lower")
    assert saved["fig"].axes[0].get_ylim() == pytest.approx((1.0, 0.0))
    leaderboard.write_budget_plot(_df([("best_of_n", 0.25, 0, 0.5, 1, 400), ("best_of_n", 0.25, 0, 0.5, 1, 800)]),
                                  tmp_path / "b.png", "t", "accuracy")
    assert saved["fig"].axes[0].get_ylim() == pytest.approx((-0.02, 1.02))


def test_demo_plot_and_table(tmp_path, monkeypatch):
    from harness import demo

    saved = _axes_of(tmp_path, monkeypatch)
    lines = [{"method": "greedy", "correct": "1/5", "accuracy": 0.2, "wall s/problem": 20.0},
             {"method": "pld (lossless)", "correct": "1/5", "accuracy": 0.2, "wall s/problem": 13.0},
             {"method": "self-consistency N=4", "correct": "2/5", "accuracy": 0.4, "wall s/problem": 40.0}]
    demo.plot(lines, 5, tmp_path / "d.png", "GSM8K")
    ax = saved["fig"].axes[0]
    assert ax.get_ylim() == pytest.approx((-0.02, 1.02)) and ax.get_xlim()[0] == 0 and "n = 5" in ax.get_title()
    assert (tmp_path / "d.png").stat().st_size > 1000


# ---------------------------------------------------------------------------- model=hf
def test_model_hf_runs_any_local_hf_folder(tmp_path):
    """model=hf model.hub_id=<folder>: the hub loading path (AutoTokenizer + AutoModelForCausalLM)
    on a tiny Llama saved in HF format with a real (word-level) tokenizer, offline."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<unk>", "</s>", "<s>"] + [str(i) for i in range(10)] + "the answer is #### solve problem".split()
    tk = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="</s>",
                                                bos_token="<s>")
    d = tmp_path / "tiny-hf"
    fast.save_pretrained(d)
    cfg = transformers.LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, eos_token_id=1, bos_token_id=2)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(d)
    res = tmp_path / "res"
    s = run(cfg_for(res, "model=hf", f"model.hub_id={d}", "task.limit=2", "run.max_new_tokens=5",
                    "strategy=pld", "run.paired_baseline=true"))
    assert s["n"] == 2 and s["errors"] == 0 and s["paired_identical"] == 1.0
    meta = json.loads(next(res.glob("*/meta.json")).read_text())
    assert meta["model"] == str(d)  # the row's model is the real source, not the config name
