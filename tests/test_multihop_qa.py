"""Multi-hop QA (context permutation): the three local subsets load, every document order matches
its definition (exact positions on a few rows), metrics are hand-checked, bad rows are named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from harness.errors import ConfigError
from tasks import multihop_qa
from tasks.multihop_qa import ORDERS, MultiHopQA, document_order, extract_answer
from tasks.qa_metrics import (normalize_squad, normalize_substring, qa_scores, squad_em, squad_f1,
                              substring_em)
from tests.conftest import ROOT

DATA = Path(os.environ["HARNESS_DATA_DIR"]) / "multihop_qa"
FILES = {"musique": "musique.json", "hotpotqa": "hotpot.json", "2wikimultihopqa": "wikihop.json"}
DATASETS = list(FILES)
needs_data = pytest.mark.skipif(not all((DATA / f).is_file() for f in FILES.values()),
                                reason="HARNESS_DATA_DIR has no multihop_qa")
KS = (0, 1, 2, 3, 4, 5)

_cache: dict = {}


def load(dataset, order="original", **kw):
    key = (dataset, order, tuple(sorted(kw.items())))
    if key not in _cache:
        _cache[key] = MultiHopQA(dataset=dataset, order=order, **kw).load()
    return _cache[key]


def raw(dataset):
    return [json.loads(line) for line in open(DATA / FILES[dataset], encoding="utf-8") if line.strip()]


# ---------------------------------------------------------------------- loading
@needs_data
@pytest.mark.parametrize("dataset", DATASETS)
def test_loads_the_local_subset(dataset):
    rows = raw(dataset)
    assert len(rows) == 200
    task = MultiHopQA(dataset=dataset)
    ex = task.load()
    with_docs = [r for r in rows if "context" in r or "paragraphs" in r]
    assert len(ex) == len(with_docs) and len(ex) + task.skipped == 200
    assert (len(ex), task.skipped) == {"musique": (200, 0), "hotpotqa": (200, 0), "2wikimultihopqa": (164, 36)}[dataset]
    assert len({e["id"] for e in ex}) == len(ex)
    for e, r in zip(ex, with_docs):
        assert e["id"] == r.get("id", r.get("_id")) and e["question"] == r["question"]
        assert e["answers"][0] == r["answer"]
        if dataset == "musique":
            assert len(e["docs"]) == 20 and e["answers"][1:] == r["answer_aliases"]
            assert e["gold"] == [s["paragraph_support_idx"] for s in r["question_decomposition"]]
            assert sorted(e["gold"]) == [p["idx"] for p in r["paragraphs"] if p["is_supporting"]]
            assert [d["title"] for d in e["docs"]] == [p["title"] for p in r["paragraphs"]]
        else:
            titles = list(dict.fromkeys(t for t, _ in r["supporting_facts"]))
            assert [e["docs"][g]["title"] for g in e["gold"]] == titles
            assert [d["title"] for d in e["docs"]] == [c[0] for c in r["context"]]
    assert MultiHopQA(dataset=dataset, limit=7).load() == ex[:7]


@needs_data
def test_2wiki_rows_without_documents_are_an_error_when_not_skipped():
    with pytest.raises(ConfigError, match=r"wikihop\.json: row 107: missing field 'context'"):
        MultiHopQA(dataset="2wikimultihopqa", skip_no_context=False).load()


# ---------------------------------------------------------------------- orders
def forward_k_positions(m, n_gold, k):
    return [max(0, m - (n_gold - 1 - i) * k) + i for i in range(n_gold)]


@needs_data
@pytest.mark.parametrize("dataset", DATASETS)
def test_every_order_matches_its_definition(dataset):
    base = load(dataset)
    orders = {o: load(dataset, o) for o in ORDERS if o not in ("forward_k",)}
    fk = {k: load(dataset, "forward_k", k=k) for k in KS}
    for idx, e in enumerate(base):
        n, gold = len(e["docs"]), e["gold"]
        slots = sorted(gold)
        distract = [i for i in range(n) if i not in gold]
        got = {o: orders[o][idx]["doc_order"] for o in orders}
        assert all(orders[o][idx]["id"] == e["id"] for o in orders)
        assert got["original"] == list(range(n))
        assert got["gold"] == slots  # only the supporting documents, stored order
        assert got["rm_first"] == [i for i in range(n) if i != gold[0]] and len(got["rm_first"]) == n - 1
        for o in ("forward", "backward", "forward_0", "random"):
            assert sorted(got[o]) == list(range(n)), o  # permutations of all documents
        fw, bw = got["forward"], got["backward"]
        assert [fw[s] for s in slots] == gold  # gold slots hold the hops in reasoning order
        assert [bw[s] for s in slots] == gold[::-1]  # ... and in reverse reasoning order
        assert all(fw[i] == i == bw[i] for i in distract)  # distractors never move
        assert got["forward_0"] == distract + gold
        for k in KS:
            order = fk[k][idx]["doc_order"]
            assert sorted(order) == list(range(n))
            assert [d for d in order if d not in gold] == distract  # distractors keep stored order
            assert [order.index(g) for g in gold] == forward_k_positions(len(distract), len(gold), k)
            assert order[-1] == gold[-1]  # the last hop is always the last document
        assert fk[0][idx]["doc_order"] == got["forward_0"]


@needs_data
def test_exact_positions_on_known_rows():
    mu = load("musique")[0]  # "What is the seat of the county where Van Hook Township is located?"
    assert mu["gold"] == [8, 1]  # Van Hook Township -> Mountrail County (para 8) -> Stanley (para 1)
    d18 = [0, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    assert load("musique", "forward")[0]["doc_order"] == [0, 8, 2, 3, 4, 5, 6, 7, 1] + list(range(9, 20))
    assert load("musique", "backward")[0]["doc_order"] == list(range(20))  # reverse hop order = stored here
    assert load("musique", "forward_0")[0]["doc_order"] == d18 + [8, 1]
    assert load("musique", "forward_k", k=1)[0]["doc_order"] == d18[:17] + [8, 19, 1]
    assert load("musique", "forward_k", k=2)[0]["doc_order"] == d18[:16] + [8, 18, 19, 1]
    assert load("musique", "forward_k", k=5)[0]["doc_order"] == d18[:13] + [8, 15, 16, 17, 18, 19, 1]
    assert load("musique", "rm_first")[0]["doc_order"] == [i for i in range(20) if i != 8]
    assert load("musique", "gold")[0]["doc_order"] == [1, 8]

    # a 4-hop MuSiQue question: three distractors-apart steps with k=1, spread further with k=3
    four = next(i for i, e in enumerate(load("musique")) if len(e["gold"]) == 4)
    g = load("musique")[four]["gold"]
    assert [load("musique", "forward_k", k=1)[four]["doc_order"][p] for p in (13, 15, 17, 19)] == g
    assert [load("musique", "forward_k", k=3)[four]["doc_order"][p] for p in (7, 11, 15, 19)] == g
    fw = load("musique", "forward")[four]["doc_order"]
    bw = load("musique", "backward")[four]["doc_order"]
    assert [fw[s] for s in sorted(g)] == g and bw == [fw[i] if i not in g else
                                                        g[::-1][sorted(g).index(i)] for i in range(20)]

    # 2Wiki bridge_comparison: 4 gold docs among 10, k=5 runs past the front and is clamped to 0
    wk = load("2wikimultihopqa")[0]
    assert wk["gold"] == [3, 7, 0, 6]  # Forbidden Ground, Free Guy, Pál Gábor, Shawn Levy
    assert load("2wikimultihopqa", "forward_k", k=5)[0]["doc_order"] == [3, 7, 1, 0, 2, 4, 5, 8, 9, 6]
    assert load("2wikimultihopqa", "forward_k", k=1)[0]["doc_order"] == [1, 2, 4, 3, 5, 7, 8, 0, 9, 6]
    assert load("2wikimultihopqa", "backward")[0]["doc_order"] == [6, 1, 2, 0, 4, 5, 7, 3, 8, 9]


@needs_data
def test_orders_are_deterministic_and_random_is_seeded_per_id():
    a = MultiHopQA(dataset="musique", order="random", seed=3).load()
    b = MultiHopQA(dataset="musique", order="random", seed=3).load()
    assert [e["doc_order"] for e in a] == [e["doc_order"] for e in b]
    c = MultiHopQA(dataset="musique", order="random", seed=4).load()
    assert sum(x["doc_order"] != y["doc_order"] for x, y in zip(a, c)) > 190
    assert len({tuple(e["doc_order"]) for e in a}) == 200  # not one permutation for everyone
    # per id: the same question gets the same order whatever else is loaded with it
    sub = MultiHopQA(dataset="musique", order="random", seed=3, limit=5).load()
    assert [e["doc_order"] for e in sub] == [e["doc_order"] for e in a[:5]]
    for o in ORDERS:
        assert MultiHopQA(dataset="hotpotqa", order=o).load() == MultiHopQA(dataset="hotpotqa", order=o).load()


def test_document_order_on_a_toy_list():
    gold = [5, 1, 3]  # reasoning order
    assert document_order("forward", 7, gold) == [0, 5, 2, 1, 4, 3, 6]
    assert document_order("backward", 7, gold) == [0, 3, 2, 1, 4, 5, 6]
    assert document_order("forward_0", 7, gold) == [0, 2, 4, 6, 5, 1, 3]
    assert document_order("forward_k", 7, gold, k=1) == [0, 2, 5, 4, 1, 6, 3]
    assert document_order("forward_k", 7, gold, k=2) == [5, 0, 2, 1, 4, 6, 3]
    assert document_order("gold", 7, gold) == [1, 3, 5]
    assert document_order("rm_first", 7, gold) == [0, 1, 2, 3, 4, 6]


# ---------------------------------------------------------------------- prompt and scoring
@needs_data
def test_prompt_renders_the_permuted_documents():
    task = MultiHopQA(dataset="musique", order="forward_0", prompt_style="answer_only")
    e = task.load()[0]
    text = task.prompt(e)[0]["content"]
    assert text.startswith("Answer the question using only the provided search results")
    lines = [ln for ln in text.split("\n") if ln.startswith("Document [")]
    assert len(lines) == 20
    assert lines[18].startswith(f"Document [18](Title: {e['docs'][8]['title']}) {e['docs'][8]['text'][:30]}")
    assert f"Question: {e['question']}\n." in text and text.endswith("Only provide the exact final answer.")
    cot = MultiHopQA(dataset="musique", order="gold", prompt_style="cot")
    cot_text = cot.prompt(cot.load()[0])[0]["content"]
    assert cot_text.count("Document [") == 2 and "'Answer: <answer>'" in cot_text


@needs_data
@pytest.mark.parametrize("dataset", DATASETS)
def test_gold_scores_one_and_empty_scores_zero(dataset):
    ans, cot = MultiHopQA(dataset=dataset, prompt_style="answer_only"), MultiHopQA(dataset=dataset, prompt_style="cot")
    for e in load(dataset):
        for gold in e["answers"]:
            for task, out in ((ans, gold), (cot, f"Step 1 ... so it is this.\nAnswer: {gold}")):
                s = task.score(e, out)
                assert s["extracted"] == gold.strip()
                assert (s["quality"], s["substring_em"], s["squad_em"], s["squad_f1"]) == (1.0, 1.0, 1.0, 1.0)
        for task in (ans, cot):
            s = task.score(e, "")
            assert (s["quality"], s["substring_em"], s["squad_em"], s["squad_f1"]) == (0.0, 0.0, 0.0, 0.0)
    assert MultiHopQA.quality_metric == "substring_em"


@pytest.mark.parametrize("pred,gold,f1", [
    ("the Eiffel Tower", "Eiffel Tower in Paris", 2 / 3),   # [eiffel tower] vs [eiffel tower in paris]: P=1, R=1/2
    ("Eiffel Tower in Paris", "the Eiffel Tower", 2 / 3),   # P=1/2, R=1
    ("a cat sat on the mat", "The cat is on a mat.", 0.75),  # [cat sat on mat] vs [cat is on mat]: 3/4, 3/4
    ("Paris Paris", "Paris", 2 / 3),                        # multiset overlap 1: P=1/2, R=1
    ("Hewlett-Packard", "Hewlett Packard", 0.0),            # punctuation deleted, not spaced
    ("Stanley", "stanley!", 1.0), ("", "Stanley", 0.0), ("Stanley", "", 0.0), ("the", "a", 1.0),
])
def test_squad_f1_by_hand(pred, gold, f1):
    assert squad_f1(pred, gold) == pytest.approx(f1)


def test_normalisations_and_em():
    assert normalize_squad("  The  Eiffel-Tower, an icon! ") == "eiffeltower icon"
    assert normalize_substring("The Eiffel-Tower!") == "the eiffeltower"
    assert squad_em("The Beatles.", "beatles") == 1.0 and squad_em("Beatles band", "beatles") == 0.0
    # the paper's substring EM: gold contained in prediction, any alias, articles kept
    assert substring_em("It is Stanley, North Dakota.", ["Stanley"]) == 1.0
    assert substring_em("Hewlett Packard", ["Hewlett-Packard"]) == 0.0  # -> "hewlettpackard"
    assert substring_em("Hewlett Packard", ["Hewlett-Packard", "Hewlett Packard"]) == 1.0
    assert substring_em("Orioles", ["Pittsburgh Pirates", "Orioles"]) == 1.0
    assert substring_em("Eiffel Tower", ["the Eiffel Tower"]) == 0.0
    s = qa_scores("the Eiffel Tower", ["Eiffel Tower in Paris", "Eiffel Tower"])
    assert s == {"substring_em": 1.0, "squad_em": 1.0, "squad_f1": 1.0}


@pytest.mark.parametrize("text,style,expected", [
    ("Answer: London\nwait, no.\nAnswer: Paris", "cot", "Paris"),
    ("Reasoning mentions Answer: X in passing.\n**Answer:** Paris", "cot", "Paris"),
    ("so...\nAnswer:\n\nParis\n", "cot", "Paris"),
    ("Final Answer: \\boxed{Paris}", "cot", "Paris"),
    ("Paris is the capital, the answer is Paris.", "cot", ""),  # no marker: nothing extracted
    ("", "cot", ""),
    ("Let me see.\nParis", "answer_only", "Paris"),
    ("\\boxed{Paris}", "answer_only", "Paris"),
    ("Answer: Paris\n", "answer_only", "Paris"),
    ("  Paris  ", "answer_only", "Paris"),
])
def test_extraction(text, style, expected):
    assert extract_answer(text, style) == expected


# ---------------------------------------------------------------------- bad input
MU_ROW = {"id": "2hop__1_2", "question": "q?", "answer": "B", "answer_aliases": [], "answerable": True,
          "paragraphs": [{"idx": i, "title": f"T{i}", "paragraph_text": f"text {i}", "is_supporting": i in (0, 2)}
                         for i in range(4)],
          "question_decomposition": [{"id": 1, "question": "x >> r", "answer": "A", "paragraph_support_idx": 2},
                                     {"id": 2, "question": "#1 >> r", "answer": "B", "paragraph_support_idx": 0}]}


def test_malformed_rows_are_named(tmp_path):
    f = tmp_path / "bad.json"
    bad = json.loads(json.dumps(MU_ROW))
    bad["id"] = "2hop__3_4"
    bad["question_decomposition"][1]["paragraph_support_idx"] = 99
    f.write_text(json.dumps(MU_ROW) + "\n" + json.dumps({**MU_ROW, "id": "x"}) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ConfigError, match=r"bad\.json: row 3: decomposition step 1: paragraph_support_idx 99"):
        MultiHopQA(path=str(f)).load()
    f.write_text(json.dumps(MU_ROW) + "\n" + json.dumps(MU_ROW) + "\n")
    with pytest.raises(ConfigError, match=r"bad\.json: row 2: duplicate id"):
        MultiHopQA(path=str(f)).load()
    f.write_text(json.dumps(MU_ROW) + "\n" + json.dumps({k: v for k, v in MU_ROW.items() if k != "paragraphs"}) + "\n")
    with pytest.raises(ConfigError, match=r"bad\.json:2: missing field\(s\) paragraphs"):
        MultiHopQA(path=str(f)).load()
    f.write_text("{not json\n")
    with pytest.raises(ConfigError, match=r"bad\.json:1: not valid JSON"):
        MultiHopQA(path=str(f)).load()
    hp = {"_id": "h1", "question": "q", "answer": "a", "type": "bridge",
          "context": [["A", ["a0.", " a1."]], ["B", ["b0."]]], "supporting_facts": [["A", 0], ["C", 0]]}
    f.write_text(json.dumps(hp) + "\n")
    with pytest.raises(ConfigError, match=r"bad\.json: row 1: supporting fact title 'C' is not in the context"):
        MultiHopQA(dataset="hotpotqa", path=str(f)).load()
    hp["context"][1] = ["B", "not a list"]
    hp["supporting_facts"][1] = ["B", 0]
    f.write_text(json.dumps(hp) + "\n")
    with pytest.raises(ConfigError, match=r"bad\.json: row 1: context item 1 is not \[title, \[sentences\]\]"):
        MultiHopQA(dataset="hotpotqa", path=str(f)).load()


def test_small_file_and_bad_options(tmp_path):
    f = tmp_path / "mu.json"
    f.write_text(json.dumps(MU_ROW) + "\n")
    e = MultiHopQA(path=str(f), order="forward").load()[0]
    assert e["gold"] == [2, 0] and e["doc_order"] == [2, 1, 0, 3] and e["qtype"] == "2hop"
    for kw in ({"dataset": "wikihop"}, {"order": "forward_9"}, {"prompt_style": "boxed"}, {"k": -1}, {"k": 1.5}):
        with pytest.raises(ConfigError):
            MultiHopQA(**kw)
    with pytest.raises(ConfigError, match="not found"):
        MultiHopQA(path=str(tmp_path)).check_data()  # a folder without musique.json


def test_hub_rows_are_converted(monkeypatch):
    """The hub's column-oriented HotpotQA / 2Wiki rows give the same examples as the row form."""
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    hub_hotpot = {"id": "h1", "question": "q", "answer": "Rush", "type": "bridge", "level": "hard",
                  "supporting_facts": {"title": ["B", "B", "A"], "sent_id": [0, 1, 0]},
                  "context": {"title": ["A", "C", "B"], "sentences": [["a0.", " a1."], ["c0."], ["b0.", " b1."]]}}
    hub_2wiki = {"_id": "w1", "type": "compositional", "question": "q", "answer": "x",
                 "context": {"title": ["A", "B"], "content": [["a0."], ["b0."]]},
                 "supporting_facts": {"title": ["B", "A"], "sent_id": [0, 0]},
                 "evidences": {"fact": [], "relation": [], "entity": []}}
    calls = []

    def fake_hub(task, hub_id, config, split):
        calls.append((hub_id, config, split))
        return {"hotpotqa/hotpot_qa": [hub_hotpot], "ohjoonhee/2WikiMultihopQA": [hub_2wiki]}.get(hub_id, [{"x": 1}])

    monkeypatch.setattr(multihop_qa, "load_hub", fake_hub)
    e = MultiHopQA(dataset="hotpotqa", order="forward").load()[0]
    assert e["id"] == "h1" and e["gold"] == [2, 0] and e["doc_order"] == [2, 1, 0]
    assert e["docs"][0] == {"title": "A", "text": "a0. a1."}
    w = MultiHopQA(dataset="2wikimultihopqa", order="backward").load()[0]
    assert w["gold"] == [1, 0] and w["doc_order"] == [0, 1]
    with pytest.raises(ConfigError, match=r"hub dgslibisey/MuSiQue: row 1: missing field"):
        MultiHopQA(dataset="musique").load()
    assert calls == [("hotpotqa/hotpot_qa", "distractor", "validation"),
                     ("ohjoonhee/2WikiMultihopQA", None, "validation"), ("dgslibisey/MuSiQue", None, "validation")]


def test_yaml_builds_the_task():
    cfg = OmegaConf.load(ROOT / "conf" / "task" / "multihop_qa.yaml")
    task = instantiate(cfg, _convert_="all")
    assert isinstance(task, MultiHopQA) and (task.dataset, task.order, task.prompt_style) == (
        "musique", "original", "paper_answer_only")  # the paper's prompt is the default (#18)


# ---------------------------------------------------------------------------- the paper's prompts (#18)
PAPER_USER = ("Answer the question using only the provided search results (some of which might be irrelevant). "
              "\n\n{}\n\nQuestion: {}\n.")  # its utils.py PROMPTS["raw"], written out here independently


@needs_data
def test_paper_prompts_are_the_papers():
    task = MultiHopQA(dataset="musique", order="gold")
    e = task.load()[0]
    m = task.messages(e)
    assert m[0] == {"role": "system", "content": "You are Qwen and are now helping answer question based on some "
                    "search result. Only provide the exact final answer and put it within \\boxed{}."}
    docs = "\n".join(f"Document [{i}](Title: {e['docs'][d]['title']}) {e['docs'][d]['text']}"
                     for i, d in enumerate(e["doc_order"]))
    assert m[1] == {"role": "user", "content": PAPER_USER.format(docs, e["question"])} and len(m) == 2
    assert task.assistant_prefix(e) == "\\boxed{"
    assert MultiHopQA(dataset="musique", persona="Llama").messages(e)[0]["content"].startswith("You are Llama and")
    cot = MultiHopQA(dataset="musique", order="gold", prompt_style="paper_cot")
    assert cot.messages(e)[0]["content"] == "Please reason step by step, and put your final answer within \\boxed{}."
    assert cot.assistant_prefix(e) == ""
    with pytest.raises(ConfigError, match="system prompt"):
        MultiHopQA(dataset="musique", prompting={"system_prompt": "x"})


@pytest.mark.parametrize("output,style,want", [
    ("Paris}", "paper_answer_only", "Paris"),              # continues the prefilled \boxed{
    ("Let me think\nParis}", "paper_answer_only", "Paris"),  # the last line
    ("so \\boxed{Paris} or \\boxed{Rome}", "paper_cot", "Paris"),  # the FIRST box
    ("\\boxed{\\text{a}}", "paper_cot", "\\text{a"),        # the paper's regex stops at the first }
    ("Paris", "paper_cot", ""),
])
def test_paper_extraction(output, style, want):
    assert extract_answer(output, style) == want


def test_prefill_is_appended_to_the_prompt_ids(tmp_path):
    from tests.helpers import cfg_for
    from harness.runner import build

    task, _, spec = build(cfg_for(tmp_path, "task=multihop_qa", "task.order=gold", "task.limit=1"))
    eng = spec.load()
    ids, msgs = task.prompt_ids(eng, task.load()[0])
    assert ids[-len(eng.encode("\\boxed{")):] == eng.encode("\\boxed{") and ids[:-7] == eng.render(msgs)


# ---------------------------------------------------------------------------- bidirectional variant (#18)
def _tiny(bidirectional):
    from harness.models import ModelSpec

    return ModelSpec(name="t", tiny={"arch": "qwen2", "vocab_size": 260, "hidden_size": 32, "intermediate_size": 64,
                                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                                     "seed": 0}, bidirectional_prompt=bidirectional).load()


def test_bidirectional_prompt_prefill_and_causal_decoding():
    import torch

    bi, causal = _tiny(True), _tiny(False)
    p = list(b"Document [0] Paris is in France. Question: where?")
    p2 = p[:-3] + list(b"who")
    # the prefill: an early position sees a LATER prompt token only in the bidirectional model
    assert not torch.allclose(bi.forward(p)[0], (bi.reset(), bi.forward(p2))[1][0])
    causal.reset()
    assert torch.allclose(causal.forward(p)[0], (causal.reset(), causal.forward(p2))[1][0])
    # decoding after the prefill: a new token attends to the whole prompt and itself, causally,
    # and the prompt's KV is the bidirectional one: == one forward under the paper's mask
    bi.reset()
    bi.forward(p)
    step = bi.forward([65, 66])
    n = len(p)
    m = torch.zeros(n + 2, n + 2, dtype=torch.bool)
    m[:n, :n] = True
    m[n:, :] = torch.tril(torch.ones(n + 2, n + 2, dtype=torch.bool))[n:, :]
    ref = _tiny(False)
    full = ref.forward(p + [65, 66], tree=m)
    assert torch.allclose(step, full[n:], atol=1e-5)
    with pytest.raises(ValueError, match="bidirectional"):
        bi.fork(p, [[1], [2]])


def test_bidirectional_model_runs_through_the_runner(tmp_path):
    from harness.runner import run
    from tests.helpers import cfg_for

    s = run(cfg_for(tmp_path, "task=multihop_qa", "task.order=gold", "task.limit=2", "run.max_new_tokens=4",
                    "+model.bidirectional_prompt=true"))
    assert s["n"] == 2 and s["errors"] == 0
    assert "[bidirectional prompt]" in s["model"]
