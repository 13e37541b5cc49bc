"""ParallelBench: byte-exact regeneration, gold/empty scores on every subtask, the metric rules,
malformed rows, prompts."""

import json
import os
import shutil
from pathlib import Path

import pytest

from harness.errors import ConfigError
from tools import parallelbench_gen as gen
from tasks.parallelbench import (ParallelBench, latin_square, list_random_insert, list_random_remove,
                                 list_random_replace, list_shuffle, parse_list, reference_paraphrases,
                                 rouge_builtin, sentence_bleu)

PB = Path(os.environ["HARNESS_DATA_DIR"]) / "parallelbench"
TEST = PB / "output" / "test"
needs_data = pytest.mark.skipif(not TEST.is_dir(), reason="HARNESS_DATA_DIR has no parallelbench")

LIST_TASKS = list(gen.LIST_TASKS)
PAPER_17 = [f"waiting_line/{t}" for t in LIST_TASKS] + [
    "paraphrase_summarize/samsum", "paraphrase_summarize/chatgpt-paraphrases", "words_to_sentence/easy",
    "words_to_sentence/medium", "words_to_sentence/hard", "puzzle/latin_square_n4", "puzzle/sudoku_n4_12"]
ALL = PAPER_17 + [f"waiting_line_n15/{t}" for t in LIST_TASKS]


# ------------------------------------------------------------------ (a) byte-for-byte generation
@pytest.fixture(scope="module")
def vocab():
    return gen.load_vocab(PB / "resources" / "first_last_names.yaml")


@needs_data
@pytest.mark.parametrize("task", LIST_TASKS)
def test_generator_reproduces_waiting_line_files(task, vocab):
    assert gen.to_jsonl(gen.generate_list_task(task, vocab=vocab)).encode() == \
        (TEST / "waiting_line" / f"{task}.jsonl").read_bytes()
    assert gen.to_jsonl(gen.generate_list_task(task, n=15, vocab=vocab)).encode() == \
        (TEST / "waiting_line_n15" / f"{task}.jsonl").read_bytes()


@needs_data
def test_generator_reproduces_latin_square_and_seeds():
    assert gen.to_jsonl(gen.generate_latin_square()).encode() == \
        (TEST / "puzzle" / "latin_square_n4.jsonl").read_bytes()
    assert [gen.task_seed(gen.LIST_TASKS[t][0]) for t in LIST_TASKS] == \
        [31940, 48898, 31383, 30142, 49875, 25751, 46066, 47444, 32235, 49003]


@needs_data
def test_generator_cli_new_size(tmp_path):
    out = tmp_path / "c20.jsonl"
    assert gen.main(["--task", "copy", "--n", "20", "--rows", "8", "--names",
                     str(PB / "resources" / "first_last_names.yaml"), "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 8 and all(len(json.loads(r["input"]["context"])) == 20 == r["metadata"]["length"] for r in rows)
    names = json.loads(rows[0]["input"]["context"])
    assert len({n.split()[0] for n in names}) == 20 and rows[0]["answer"] == rows[0]["input"]["context"]
    # the generated file is usable as a task (path = one .jsonl with task_config.yaml beside it)
    shutil.copy(TEST / "waiting_line" / "task_config.yaml", tmp_path / "task_config.yaml")
    (tmp_path / "copy.jsonl").write_bytes(out.read_bytes())
    t = ParallelBench(path=str(tmp_path / "copy.jsonl"), subtask="waiting_line/copy")
    ex = t.load()
    assert len(ex) == 8 and t.score(ex[0], ex[0]["answer"])["quality"] == 1.0
    assert gen.main(["--task", "copy", "--n", "60", "--out", str(tmp_path / "x.jsonl")]) == 2  # too rare to draw


# -------------------------------------------------------------- (b) gold perfect, empty zero
def _gold(subtask: str, answer):
    if subtask.endswith("chatgpt-paraphrases"):
        return reference_paraphrases(answer)[0]
    if subtask.endswith("samsum"):
        return answer["summary"]
    if isinstance(answer, str):
        return answer
    return answer.get("example") or " ".join(answer["words"])  # W2S rows mostly have no example sentence


@needs_data
@pytest.mark.parametrize("subtask", ALL)
def test_gold_scores_perfect_and_empty_zero(subtask):
    task = ParallelBench(subtask=subtask)
    ex = task.load()
    assert len(ex) == (108 if "sudoku" in subtask else 100) and len({e["id"] for e in ex}) == len(ex)
    for e in ex:
        gold, empty = task.score(e, _gold(subtask, e["answer"])), task.score(e, "")
        assert empty["quality"] == 0.0
        if subtask.endswith("chatgpt-paraphrases"):
            # available part = 1 - BLEU vs the source: a reference paraphrase is > 0, the source itself 0
            assert 0.0 < gold["quality"] <= 1.0 and gold["bertscore_score"] is None and gold["grammar_score"] is None
            assert gold["unavailable"] == ["bertscore", "grammar"] and gold["paper_score"] is None
            assert task.score(e, e["answer"]["text"])["quality"] == 0.0
            assert empty["paper_score"] == 0.0
        else:
            assert gold["quality"] == 1.0, (subtask, e["id"], gold)
        if subtask.startswith("waiting_line") or "sudoku" in subtask:
            assert gold["quality_strict"] == 1.0 and empty["quality_strict"] == 0.0
        if subtask.startswith("words_to_sentence") or subtask.endswith("samsum"):
            assert gold["grammar_score"] is None and gold["unavailable"] == ["grammar"]
            assert "unavailable offline" in gold["quality_definition"] and empty["paper_score"] == 0.0
    assert task.quality_metric == {"words_to_sentence": "inclusion", "paraphrase_summarize/samsum": "rougeL_f1",
                                   "paraphrase_summarize/chatgpt-paraphrases": "inv_bleu"}.get(
        subtask if subtask.startswith("para") else subtask.split("/")[0], "accuracy")


@needs_data
def test_limit_and_bad_subtask():
    assert len(ParallelBench(subtask="waiting_line/sort", limit=7).load()) == 7
    with pytest.raises(ConfigError, match=r"unknown subtask .waiting_line/nope.*sudoku_n4_12.*waiting_line/copy"):
        ParallelBench(subtask="waiting_line/nope").check_data()
    assert len(ParallelBench.choices(PB)) == 45  # 17 tasks + 10 n15 + 18 W2S word-count variants


def test_no_data_dir_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    with pytest.raises(ConfigError, match="no hub source.*HARNESS_DATA_DIR"):
        ParallelBench(subtask="waiting_line/copy").load()


# -------------------------------------------------------------------------- (c) the metric rules
A = ["Ann Lee", "Bob Diaz", "Cy Moore", "Dee King"]


def L(items):
    return "[" + ", ".join(f'"{x}"' for x in items) + "]"


def test_list_parsing_takes_the_last_bracket():
    assert parse_list('Input was ["X Y"]. Final list: ["Ann Lee", "Bob Diaz"] done') == ["Ann Lee", "Bob Diaz"]
    assert parse_list('["a", "b"] then [c]') == ["c"]
    assert parse_list(' "a" ,b,, "c d" ') == ["a", "b", "c d"]  # no brackets: the whole text, empties dropped
    assert parse_list('["a", "b"]', strict=True) == ["a", "b"]
    assert parse_list('[a, "b"]', strict=True) is None and parse_list('"a", "b"', strict=True) is None
    assert parse_list("") == []


def test_shuffle_rule():
    assert list_shuffle(A, A) == 0.0  # unchanged list
    assert list_shuffle(A[::-1], A) == 1.0 and list_shuffle(A[1:] + A[:1], A) == 1.0
    assert list_shuffle(A[:3], A) == 0.0 and list_shuffle(A[1:] + ["Zed Q"], A) == 0.0


def test_insert_rule_any_position():
    for i in range(len(A) + 1):
        assert list_random_insert(A[:i] + ["New P"] + A[i:], A, "New P") == 1.0
    assert list_random_insert(A, A, "New P") == 0.0
    assert list_random_insert(["New P"] + A[::-1], A, "New P") == 0.0
    assert list_random_insert(["New P", "New P"] + A, A, "New P") == 0.0


def test_remove_rule_keeps_order():
    for i in range(len(A)):
        assert list_random_remove(A[:i] + A[i + 1:], A) == 1.0
    assert list_random_remove([A[2], A[0], A[3]], A) == 0.0  # one removed but reordered
    assert list_random_remove(A, A) == 0.0 and list_random_remove(A[:2], A) == 0.0
    assert list_random_remove(A[:2] + ["Zed Q"], A) == 0.0


def test_replace_rule_exactly_one_position():
    for i in range(len(A)):
        assert list_random_replace(A[:i] + ["New P"] + A[i + 1:], A, "New P") == 1.0
    assert list_random_replace(["New P", "Zed Q"] + A[2:], A, "New P") == 0.0  # two positions changed
    assert list_random_replace(["New P", "New P"] + A[2:], A, "New P") == 0.0
    assert list_random_replace(A, A, "New P") == 0.0 and list_random_replace(["New P"] + A, A, "New P") == 0.0


def test_latin_square_rule():
    s = ["H", "4", "C", "A"]
    cyc = "\n".join(",".join(s[i:] + s[:i]) for i in range(4))
    assert latin_square(cyc, s) == 1.0  # any valid square counts, not just the stored example
    assert latin_square("Here it is:\n" + cyc.replace(",", ", ") + "\nDone.", s) == 1.0  # prose lines skipped
    assert latin_square("\n".join([",".join(s)] * 4), s) == 0.0  # every column repeats one symbol
    assert latin_square("\n".join(cyc.split("\n")[:3]), s) == 0.0  # too few rows
    rows = cyc.split("\n")
    assert latin_square("\n".join([rows[0], rows[0], rows[2], rows[3]]), s) == 0.0


@needs_data
def test_sudoku_rule():
    task = ParallelBench(subtask="puzzle/sudoku_n4_12")
    e = task.load()[0]
    gold = e["answer"]  # "1342\n2431\n4123\n3214"
    assert task.score(e, "\n".join(" ".join(r) for r in gold.split("\n")))["quality"] == 1.0  # spaces ok
    assert task.score(e, "Solution:\n" + gold.replace("\n", ",\n"))["quality"] == 1.0
    assert task.score(e, "2" + gold[1:])["quality"] == 0.0  # one wrong digit
    assert task.score(e, e["input"]["sudoku"])["quality"] == 0.0  # the puzzle itself
    assert task.score(e, gold + "\n" + gold)["quality"] == 0.0  # must be exactly 4 grid rows


def test_text_metrics_by_hand():
    assert sentence_bleu("the cat sat on the mat", ["the cat is on the mat"]) == 0.0  # no 4-gram match
    assert sentence_bleu("the cat sat on the mat today", ["the cat sat on the mat"]) == pytest.approx((3 / 7) ** 0.25)
    assert sentence_bleu("the cat sat on the", ["the cat sat on the mat"]) == pytest.approx(2.718281828 ** -0.2)
    assert sentence_bleu("Hello, world.", ["Hello, world."]) == 1.0
    r = rouge_builtin("Police killed the gunman!", "police kill the gunman")
    assert r["rougeL"] == pytest.approx(0.75) and r["rouge1"] == pytest.approx(0.75)  # no stemming
    assert rouge_builtin("a b c d", "a c b d")["rougeL"] == pytest.approx(0.75)
    assert rouge_builtin("", "x")["rougeL"] == 0.0


@needs_data
def test_w2s_inclusion_and_marking():
    task = ParallelBench(subtask="words_to_sentence/easy")
    e = task.load()[0]  # dog, park, ball, throw
    s = task.score(e, "I throw the ball to my dog.")
    assert s["quality"] == 0.0 and s["missing_words"] == ["park"] and s["paper_score"] == 0.0
    s = task.score(e, "I throw the ball to my dog in the park.")
    assert s["quality"] == 1.0 and s["grammar_score"] is None and s["paper_score"] is None
    assert s["quality_definition"].startswith("inclusion only")


# ------------------------------------------------------------------------- (d) malformed rows
@needs_data
def test_malformed_rows_name_file_and_line(tmp_path):
    d = tmp_path / "waiting_line"
    d.mkdir()
    shutil.copy(TEST / "waiting_line" / "task_config.yaml", d / "task_config.yaml")
    good = (TEST / "waiting_line" / "shuffle.jsonl").read_text().splitlines()[0]
    f = d / "shuffle.jsonl"
    cases = [("{not json", r"shuffle.jsonl:2: not valid JSON"),
             (json.dumps({"input": {"context": "[]"}}), r"shuffle.jsonl:2: missing field\(s\) answer"),
             (json.dumps({"input": {"context": "[]"}, "answer": "x"}),
              r"shuffle.jsonl:2: 'answer' must be an object"),
             (json.dumps({"input": {"ctx": "[]"}, "answer": {"input": []}}),
              r"shuffle.jsonl:2: the prompt cannot be filled")]
    for bad, msg in cases:
        f.write_text(good + "\n" + bad + "\n")
        with pytest.raises(ConfigError, match=msg):
            ParallelBench(path=str(tmp_path), subtask="waiting_line/shuffle").load()
    f.write_text(good + "\n\n")
    assert len(ParallelBench(path=str(tmp_path), subtask="waiting_line/shuffle").load()) == 1


# ---------------------------------------------------------------------------------- (e) prompts
@needs_data
def test_prompt_icl_turns_and_newlines():
    task = ParallelBench(subtask="waiting_line/shuffle")
    e = task.load()[0]
    m = task.prompt(e)
    assert [x["role"] for x in m] == ["user", "assistant", "user"]
    icl = e["input"]["icl_examples"][0]
    assert m[1]["content"] == icl["answer"]["example"]  # dict answer -> its example
    assert m[0]["content"].startswith("You are managing a waiting line")
    assert icl["input"]["context"] in m[0]["content"]
    assert m[2]["content"] == (
        "You are managing a waiting line at a customer service desk.\nThe waiting line should be "
        "randomly shuffled to ensure fair service distribution:\n" + e["input"]["context"] +
        "\nPlease randomly shuffle the list and provide only the final list.\nEnsure the "
        "sequence is different from the original.\n")
    task = ParallelBench(subtask="puzzle/sudoku_n4_12")
    e = task.load()[0]
    m = task.prompt(e)
    assert [x["role"] for x in m] == ["user", "assistant", "user"] and m[1]["content"] == "1342\n4213\n2134\n3421"
    assert "\\n" not in m[2]["content"] and m[2]["content"].endswith("\n\nInput:\n0042\n2031\n4023\n3214\nOutput:\n")
    task = ParallelBench(subtask="words_to_sentence/hard")
    m = task.prompt(task.load()[0])
    assert m == [{"role": "user", "content": "Construct a single, coherent sentence using the words "
                                             "algorithm, river, symphony, and moss."}]
    task = ParallelBench(subtask="paraphrase_summarize/samsum")
    e = task.load()[0]
    m = task.prompt(e)
    assert len(m) == 1 and m[0]["content"] == (
        "Summarize the following conversation. Only output the final result.\n\n" + e["input"]["text"] + "\n\nSummary:")
