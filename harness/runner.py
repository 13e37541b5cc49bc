"""The runner: compose -> validate -> load data -> load models -> one row per example -> summary.

Order matters for reliability: everything that can be checked without weights (config values,
data location and schema, the run folder) is checked before any model loads; a rerun of the
same configuration resumes its run folder; an example that raises becomes an error row.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from harness import metrics, provenance
from harness.decoding import Prompt, cut_text, stop_before_eos
from harness.errors import ConfigError
from harness.store import RowWriter, read_rows, row_key

# keys that choose which examples run or how progress is shown, never what a row contains
NON_SEMANTIC = ("task.limit", "run.progress", "run.results_dir", "run.name", "run.baseline", "run.retry_errors")


def config_hash(cfg: DictConfig) -> str:
    c = OmegaConf.to_container(cfg, resolve=True)
    c.pop("hydra", None)
    # the default engine's settings do not count: configs from before `engine` existed keep their hash
    for node in (c.get("model"), (c.get("strategy") or {}).get("draft") if isinstance(c.get("strategy"), dict) else None):
        if isinstance(node, dict) and node.get("engine", "hf") == "hf":
            for key in ("engine", "max_len", "compile"):
                node.pop(key, None)
        if isinstance(node, dict) and not node.get("logits_on_device", False):
            node.pop("logits_on_device", None)  # logits copied to the CPU (configs from before the option)
    strategy = c.get("strategy")
    if isinstance(strategy, dict):  # drafting options at their off value (configs from before them exist)
        if strategy.get("draft_vocab") == 0:
            strategy.pop("draft_vocab")
        if strategy.get("draft_lookup") == 0:
            strategy.pop("draft_lookup")
            strategy.pop("draft_lookup_k", None)
    prompting = (c.get("task") or {}).get("prompting") if isinstance(c.get("task"), dict) else None
    if isinstance(prompting, dict) and not prompting.get("stop", None):  # no stop strings (configs from before them)
        prompting.pop("stop", None)
    for dotted in NON_SEMANTIC:
        node = c
        *path, leaf = dotted.split(".")
        for p in path:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return provenance.stable_hash(c)


ROOT = Path(__file__).resolve().parent.parent




def artifact_hashes(strategy) -> dict:
    """{artifact: sha256 of the file's content} for every file the strategy loads (a relative
    path is looked up in the working directory, then in the repository root); 'missing' when
    absent (the strategy reports that itself when it needs the file)."""
    out = {}
    for key, value in sorted(strategy.artifacts().items()):
        p = Path(value).expanduser()
        if not p.is_absolute() and not p.exists():
            p = ROOT / p
        out[key] = provenance.file_sha256(p) if p.is_file() else "missing"
    return out


def data_fingerprint(task, examples: list[dict]) -> str:
    """sha256 of the task's FULL example list (every example, not only the first task.limit:
    a larger limit resumes the same run), so other data is another run."""
    if task.limit:
        limit, task.limit = task.limit, None
        try:
            examples = task.load()
        finally:
            task.limit = limit
    return provenance.stable_hash(examples)


def run_identity(cfg: DictConfig, task, strategy, model_spec, examples, choices: dict | None = None) -> dict:
    """Everything that names a run: the settings hash (config only), the run hash (settings +
    data fingerprint + artifact contents) and the run name, built from the model's REAL source."""
    choices = choices or {}
    settings = config_hash(cfg)
    data = data_fingerprint(task, examples)
    arts = artifact_hashes(strategy)
    chash = provenance.stable_hash({"settings": settings, "data": data, "artifacts": arts})
    names = {"task": choices.get("task", task.name), "strategy": choices.get("strategy", strategy.name),
             "model": model_spec.identity()}
    run_name = cfg.run.name or f"{names['task']}-{names['strategy']}-{model_spec.slug()}-{chash[:8]}"
    return {"config_hash": chash, "settings_hash": settings, "data_fingerprint": data, "artifacts": arts,
            "names": names, "run_name": run_name}


def _say_if_inputs_changed(results_dir: Path, ident: dict) -> None:
    """One line when a run of the same settings exists with other data or artifacts."""
    for m in sorted(results_dir.glob("*/meta.json")):
        try:
            o = json.loads(m.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if o.get("settings_hash") == ident["settings_hash"] and o.get("config_hash") != ident["config_hash"]:
            what = [f"data {o.get('data_fingerprint', '?')[:8]} -> {ident['data_fingerprint'][:8]}"] \
                if o.get("data_fingerprint") != ident["data_fingerprint"] else []
            what += [f"{k} {str((o.get('artifacts') or {}).get(k, 'none'))[:8]} -> {v[:8]}"
                     for k, v in ident["artifacts"].items() if (o.get("artifacts") or {}).get(k) != v]
            print(f"[harness] same settings as run {m.parent.name} but other inputs ({'; '.join(what)}): "
                  f"starting a new run {ident['run_name']}", flush=True)
            return


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(metrics.strict_json(obj), indent=1, default=str, allow_nan=False))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def example_seed(seed: int, example_id: str, sample: int) -> int:
    """Per-example RNG seed: independent of example order, so shuffling changes no row."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{example_id}/{sample}".encode()).digest()[:8], "little") >> 1


def build(cfg: DictConfig):
    """Instantiate task, strategy and model spec (no weights, no data yet)."""
    built = []
    for group in ("task", "strategy", "model"):
        try:
            built.append(instantiate(cfg[group], _convert_="all"))
        except Exception as e:  # Hydra wraps constructor errors: surface ours, and the cause of others
            err = e
            while err.__cause__ is not None and not isinstance(err, ConfigError):
                err = err.__cause__
            if isinstance(err, ConfigError):
                raise err from None
            target = cfg[group].get("_target_", "?") if isinstance(cfg[group], DictConfig) else "?"
            cause = str(err).splitlines()[0] if str(err) else err.__class__.__name__
            raise ConfigError(f"cannot build {group} ({target}): {err.__class__.__name__}: {cause}") from None
    return tuple(built)


def check_paradigm(strategy, model_spec) -> None:
    """An autoregressive strategy on a diffusion LM (or the reverse) is refused before loading."""
    want = getattr(strategy, "paradigm", "autoregressive")
    have = getattr(model_spec, "kind", "autoregressive")
    if want != have:
        hint = ("dllm_topk, dllm_threshold, freedave, learn2pd" if have == "diffusion" else
                "an autoregressive model (the diffusion strategies need model.kind=diffusion)")
        raise ConfigError(f"strategy {strategy.name} decodes {want} models, but model {model_spec.name} is a "
                          f"{have} model (use {hint})")


def make_generator(device: str, seed: int) -> torch.Generator:
    """The example's seeded generator, on the device the engine's logits are on (a GPU's own
    generator for `model.logits_on_device`: its draws differ from the CPU generator's)."""
    return torch.Generator(device=device).manual_seed(seed)


def check_static(strategy, model_spec) -> None:
    """Device and capability checks from the configs alone, before any folder or weight."""
    if getattr(model_spec, "logits_on_device", False) and not getattr(strategy, "device_logits", True):
        raise ConfigError(f"strategy {strategy.name} does its arithmetic on CPU copies of the logits: "
                          f"use model.logits_on_device=false")
    if strategy.draft is not None and getattr(model_spec, "logits_on_device", False) and \
            str(strategy.draft.device) != str(model_spec.device):
        raise ConfigError(f"strategy {strategy.name}: with model.logits_on_device=true the draft's logits follow the "
                          f"target's, so the draft must be on the target's device ({model_spec.device}), not "
                          f"{strategy.draft.device}")
    for spec in (model_spec, strategy.draft):
        if spec is None:
            continue
        spec.check_device()
        spec.check_engine()
        caps = spec.expected_capabilities()
        missing = set(strategy.needs) - set(caps) if caps is not None else set()
        if missing:
            why = " (early exit drives the decoder layers of full-attention llama / qwen2 layouts only)" \
                if "early_exit" in missing else ""
            role = "draft" if spec is strategy.draft else "model"
            raise ConfigError(f"strategy {strategy.name} needs {', '.join(sorted(missing))}, which {role} "
                              f"{spec.name} does not support{why}")


    if strategy.draft is not None:  # vocabularies, when both configs are known without weights
        a, b = model_spec.static_config(), strategy.draft.static_config()
        va, vb = getattr(a, "vocab_size", None), getattr(b, "vocab_size", None)
        if va and vb and va != vb:
            raise ConfigError(f"draft {strategy.draft.name} and target {model_spec.name} have different vocabularies "
                              f"({vb} vs {va} logits); a draft must share the target's tokenizer")


def check_engines(strategy, target, draft) -> None:
    missing = set(strategy.needs) - set(target.capabilities)
    if missing:
        raise ConfigError(f"strategy {strategy.name} needs {', '.join(sorted(missing))}, which model "
                          f"{target.name} does not support")
    if draft is not None:
        if draft.vocabulary_signature() != target.vocabulary_signature() or draft.vocab_size != target.vocab_size:
            raise ConfigError(f"draft {draft.name} and target {target.name} have different vocabularies "
                              f"({draft.vocab_size} vs {target.vocab_size} logits); a draft must share "
                              f"the target's tokenizer")
        missing = set(strategy.needs) - set(draft.capabilities)
        if missing:
            raise ConfigError(f"strategy {strategy.name} needs {', '.join(sorted(missing))} on the draft {draft.name}")


def prepare(cfg: DictConfig):
    """Every check that needs neither data rows nor weights, then (task, strategy, model spec).
    `python -m harness` runs it before Hydra creates anything, so a bad input writes nothing."""
    rc = cfg.run
    for key in ("max_new_tokens", "samples", "threads"):
        if not isinstance(rc.get(key), int) or rc.get(key) < 1:
            raise ConfigError(f"run.{key} must be an integer >= 1, got {rc.get(key)!r}")
    if rc.baseline not in (None, "auto") and not (Path(rc.baseline) / "rows.jsonl").exists() and \
            not (Path(rc.results_dir) / rc.baseline / "rows.jsonl").exists():
        raise ConfigError(f"baseline run '{rc.baseline}' has no rows.jsonl (give a run folder, 'auto' or null)")
    task, strategy, model_spec = build(cfg)
    if task.limit is not None and (not isinstance(task.limit, int) or task.limit < 1):
        raise ConfigError(f"task.limit must be an integer >= 1 or null, got {task.limit!r}")
    check_paradigm(strategy, model_spec)
    check_static(strategy, model_spec)
    strategy.check_model(model_spec)
    if rc.get("paired_baseline") and (strategy.name == "greedy" or getattr(model_spec, "kind", "") == "diffusion"):
        raise ConfigError("run.paired_baseline times plain greedy beside the strategy: it needs an autoregressive "
                          "model and a strategy other than greedy")
    if rc.get("paired_baseline") and getattr(strategy, "modifies_model", False):
        raise ConfigError(f"run.paired_baseline: strategy {strategy.name} changes the model's weights at setup, so "
                          f"the paired greedy would not be the base model's; run greedy separately")
    strategy.bind_task(task)  # voting strategies take the answer functions here (never the gold)
    task.check_data()
    return task, strategy, model_spec


def run(cfg: DictConfig, choices: dict | None = None) -> dict:
    """Run (or resume) one configuration; returns the summary dict."""
    choices = choices or {}
    rc = cfg.run
    task, strategy, model_spec = prepare(cfg)
    torch.set_num_threads(int(rc.threads))
    examples = task.load()
    ids = [e["id"] for e in examples]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"task {task.name}: example ids are not unique")
    if not examples:
        raise ConfigError(f"task {task.name}: no examples to run")

    ident = run_identity(cfg, task, strategy, model_spec, examples, choices)
    names, chash, run_name = ident["names"], ident["config_hash"], ident["run_name"]
    run_dir = Path(rc.results_dir) / run_name
    fresh_dir = not run_dir.exists()
    if fresh_dir and Path(rc.results_dir).is_dir():
        _say_if_inputs_changed(Path(rc.results_dir), ident)
    writer = RowWriter(run_dir)  # refuses a second live writer before any model loads
    old = {}
    try:
        meta_path = run_dir / "meta.json"
        if meta_path.exists():
            old = json.loads(meta_path.read_text())
            if old.get("config_hash") != chash:
                raise ConfigError(f"run folder {run_dir} holds another configuration or other inputs "
                                  f"({old.get('config_hash', '?')[:8]} != {chash[:8]}); choose another run.name")
        done = {row_key(r): r for r in read_rows(writer.path)}
        todo = [(e, s) for e in examples for s in range(rc.samples)
                if (e["id"], s) not in done or (rc.retry_errors and done[(e["id"], s)].get("error"))]
        print(f"[harness] run {run_dir}: {len(examples) * rc.samples} example(s), "
              f"{len(examples) * rc.samples - len(todo)} already done", flush=True)
        if todo:
            target = model_spec.load()
            draft = strategy.draft.load() if strategy.draft is not None else None
            if draft is not None and getattr(draft, "logits_device", None) is not None:
                draft.logits_on_device(target.logits_device.type != "cpu")  # the draft's logits follow the target's
            check_engines(strategy, target, draft)
            strategy.setup(target, draft)
            if getattr(strategy, "search", False):
                strategy.show_progress = bool(rc.progress)
            task_options = {k: v for k, v in OmegaConf.to_container(cfg.task, resolve=True).items()
                            if k not in ("_target_", "limit", "path")}
            machine = {**provenance.machine(), "threads": torch.get_num_threads(), "device": str(target.device)}
            info = {"config_hash": chash, "settings_hash": ident["settings_hash"],
                    "data_fingerprint": ident["data_fingerprint"], "artifacts": ident["artifacts"],
                    "artifact_paths": strategy.artifacts(), "run": run_name, **names,
                    "model_name": model_spec.name, "task_version": task.version, "task_options": task_options,
                    "task_source": task.describe()["source"], "model_spec": model_spec.describe(),
                    "strategy_params": strategy.params(), "quality_metric": task.quality_metric,
                    "quality_direction": task.direction(),
                    "metric_directions": {m: task.direction(m) for m in
                                          (task.quality_metric, *task.directions)},
                    "summary_fields": list(strategy.summary_fields), "search": bool(getattr(strategy, "search", False)),
                    "paired_baseline": bool(rc.get("paired_baseline")), "row_labels": strategy.row_labels(),
                    "max_new_tokens": rc.max_new_tokens, "seed": rc.seed,
                    "secondary_metrics": list(task.secondary_metrics), **machine}
            start = {"timestamp": time.time(), "examples_to_run": len(todo), "already_done": len(done),
                     **{k: machine[k] for k in ("git_sha", "versions", "cpu", "gpu", "threads", "host_cores",
                                                "device")}}
            info["starts"] = list(old.get("starts") or []) + [start]  # the provenance of every start and resume
            write_json_atomic(meta_path, info)
            (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            _loop(task, strategy, target, draft, todo, rc, writer, info)
    finally:
        writer.close()
        if fresh_dir and not (run_dir / "meta.json").exists() and not read_rows(run_dir / "rows.jsonl"):
            shutil.rmtree(run_dir, ignore_errors=True)  # failed before anything was written: leave no empty run
    return summarize(run_dir, rc)


def _loop(task, strategy, target, draft, todo, rc, writer, info) -> None:
    from tqdm import tqdm

    bar = tqdm(todo, desc=info["run"][:40], unit="ex", disable=not rc.progress, dynamic_ncols=True)
    qm = info.get("quality_metric") or "quality"
    q_key = f"{qm}{'↓' if metrics.lower_is_better(info.get('quality_direction')) else '↑'}"  # e.g. wer↓
    n_q, sum_q, toks, secs, errors, gen = 0, 0.0, 0, 0.0, 0, 0
    for ex, s in bar:
        row = _one(task, strategy, target, draft, ex, s, rc, info)
        writer.write(row)
        errors += bool(row["error"])
        if not row["error"]:
            n_q += 1
            sum_q += row["quality"] or 0.0
            toks += row["new_tokens"]
            secs += row["wall_s"]
        if not row["error"]:
            gen += (row.get("extra") or {}).get("generated_tokens") or row["new_tokens"]
        speed = {"gen_tok_per_ex": f"{gen / max(n_q, 1):.0f}"} if info.get("search") else \
            {"tok_s": f"{toks / max(secs, 1e-9):.1f}"}  # a search's cost is what it generated
        bar.set_postfix({q_key: f"{sum_q / max(n_q, 1):.3f}", **speed, "errors": errors})


def _one(task, strategy, target, draft, ex, s, rc, info) -> dict:
    seed = example_seed(rc.seed, ex["id"], s)
    row = {"run": info["run"], "config_hash": info["config_hash"], "example_id": ex["id"], "sample": s,
           "seed": seed, "task": info["task"], "task_version": info["task_version"],
           "strategy": info["strategy"], "model": info["model"], "model_name": info["model_name"],
           "dtype": info["model_spec"]["dtype"], **info["row_labels"],
           "rng_device": str(getattr(target, "logits_device", "cpu")), "error": None}  # the sampler's generator
    try:
        ids, messages = task.prompt_ids(target, ex)
        stops = task.stop_strings
        prompt = Prompt(ids, messages, stop=stops, **task.prompt_structure(ex))
        row["prompt_hash"] = provenance.stable_hash(prompt.ids)[:16]
        row["prompt_messages"] = messages  # what the model read, auditable without re-loading the task
        row["gold"] = _gold(task, ex)
        prefix = task.assistant_prefix(ex)
        if prefix:
            row["assistant_prefix"] = prefix  # prefilled: the output continues it
        row["prompt_tokens"] = len(prompt.ids)
        rng = make_generator(row["rng_device"], seed)  # where the logits are
        greedy_first = bool(rc.get("paired_baseline")) and seed % 2 == 1  # interleaved: half the examples each way
        base = _paired_greedy(target, prompt, rc) if greedy_first else None
        m0 = model_seconds(target, draft)
        t0 = time.perf_counter()
        trace = strategy.generate(target, prompt, rc.max_new_tokens, rng, draft=draft)
        wall = time.perf_counter() - t0
        inside = model_seconds(target, draft) - m0
        if rc.get("paired_baseline") and not greedy_first:
            base = _paired_greedy(target, prompt, rc)
        if stops:
            cut_at_stop(trace, target, stops)  # strategies that bypass DecodingState.finish (dLLM canvases)
        text = cut_text(target.decode(trace.tokens), stops)
        stats = task.score(ex, text)
        row.update({"output_text": text, "extracted": stats.get("extracted"), "quality": stats.get("quality"),
                    "score": stats, "wall_s": wall, **trace.row_fields(t0),
                    "model_s": inside, "outside_model_s": max(wall - inside, 0.0)})
        from harness.memory import method_memory

        parts = method_memory(strategy, draft)
        row.update({"method_bytes": int(sum(parts.values())), "method_memory": parts})
        if base is not None:
            btext = cut_text(target.decode(base["tokens"]), stops)
            bstats = task.score(ex, btext)
            same = list(base["tokens"]) == list(trace.tokens)
            diff = next((i for i, (a, b) in enumerate(zip(base["tokens"], trace.tokens)) if a != b),
                        None if same else min(len(base["tokens"]), len(trace.tokens)))
            row["paired_greedy"] = {"wall_s": base["wall_s"], "new_tokens": len(base["tokens"]),
                                    "ran_first": greedy_first, "identical": same, "first_difference": diff,
                                    "quality": bstats.get("quality"), "extracted": bstats.get("extracted"),
                                    **({} if same else {"output_text": btext})}
            if not same and getattr(strategy, "lossless", False) and not getattr(strategy, "search", False):
                # low precision: a verification forward rounds unlike one-token forwards, so a lossless
                # method may leave greedy at a near-tie; the teacher-forced check tells a tie from a bug
                from harness.tiecheck import tie_check

                gap = float(rc.get("tie_gap", 0.3))
                tc = tie_check(target, prompt.ids, list(trace.tokens), gap)
                row["paired_greedy"].update({"tie_consistent": tc["tie_consistent"], "tie_gap": gap,
                                             "max_deficit": tc["max_deficit"]})
            row["paired_speedup"] = ((len(trace.tokens) / wall) / (len(base["tokens"]) / base["wall_s"])
                                     if wall > 0 and base["tokens"] and base["wall_s"] > 0 else None)
        if trace.candidates:  # multi-output methods (beams, superposed drafts): every output, best first
            cands = row["candidates"] = [cut_text(target.decode(c), stops) for c in trace.candidates]
            qs = row["candidate_quality"] = [task.score(ex, c).get("quality") for c in cands]
            qs = [q for q in qs if q is not None]
            lower = metrics.lower_is_better(info.get("quality_direction"))
            row["oracle_quality"] = (min(qs) if lower else max(qs)) if qs else None
            row["diversity"] = metrics.diversity(cands)
            if trace.candidate_scores:
                row["candidate_scores"] = trace.candidate_scores
    except Exception as e:  # one bad example never ends the run, and is never scored as wrong
        row.update({"error": f"{e.__class__.__name__}: {e}", "quality": None})
    row.update({"git_sha": info["git_sha"], "versions": info["versions"], "threads": torch.get_num_threads(),
                "cpu": info["cpu"], "gpu": info["gpu"], "device": str(target.device), "batch_size": 1,
                "max_new_tokens": rc.max_new_tokens, "peak_rss_mb": peak_rss_mb(), "timestamp": time.time()})
    return row


def cut_at_stop(trace, target, stops) -> None:
    """Cut a finished trace after the token completing its first stop string (finish = "stop"),
    unless it was cut there already."""
    if trace.finish == "stop":
        return
    i = stop_before_eos(target.decode, trace.tokens, stops, target.eos_ids)
    if i is not None:
        trace.tokens, trace.finish = list(trace.tokens[: i + 1]), "stop"


def model_seconds(*engines) -> float:
    """Seconds the engines' models have spent inside their modules so far (harness/engines/hf.py
    ModelTimer); engines without a timer count 0."""
    return float(sum(getattr(e, "model_s", 0.0) for e in engines if e is not None))


def peak_rss_mb() -> float | None:
    """The process's peak resident memory so far, MiB (models, caches, every method's tables):
    monotone over a run, so a run's peak is its last row's. None where the OS does not say."""
    try:
        import resource
        import sys

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024, 1)  # bytes on macOS
    except (ImportError, OSError):
        return None


def _paired_greedy(target, prompt, rc) -> dict:
    """Plain greedy decoding of the same prompt on the same engine, timed (run.paired_baseline)."""
    from strategies.greedy import Greedy

    t0 = time.perf_counter()
    tr = Greedy().generate(target, prompt, rc.max_new_tokens, torch.Generator().manual_seed(0))
    return {"tokens": list(tr.tokens), "wall_s": time.perf_counter() - t0}


def _gold(task, ex):
    """The example's reference as the task states it (its gold output), for auditing rows."""
    try:
        return task.gold_output(ex)
    except NotImplementedError:
        return None


def find_baseline(results_dir: Path, meta: dict) -> Path | None:
    """The newest plain-decoding (greedy) run on the same task, model, dtype and token budget."""
    best = None
    for m in results_dir.glob("*/meta.json"):
        if m.parent.name == meta["run"]:
            continue
        try:
            o = json.loads(m.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if metrics.baseline_key(o) != metrics.baseline_key(meta) or o.get("strategy") != "greedy":
            continue
        if best is None or m.stat().st_mtime > best.stat().st_mtime:
            best = m
    return best.parent if best else None


def summarize(run_dir: Path, rc) -> dict:
    rows = read_rows(run_dir / "rows.jsonl")
    meta_path = run_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"run": run_dir.name}
    summary = {"run": run_dir.name, **{k: meta.get(k) for k in ("task", "strategy", "model", "summary_fields", "search")},
               "scorer": (meta.get("row_labels") or {}).get("scorer"),
               **metrics.aggregate(rows, meta.get("secondary_metrics", ()))}
    base_dir = None
    if rc.baseline == "auto":
        base_dir = find_baseline(run_dir.parent, meta)
    elif rc.baseline:
        base_dir = Path(rc.baseline) if Path(rc.baseline).exists() else run_dir.parent / rc.baseline
        if not (base_dir / "rows.jsonl").exists():
            raise ConfigError(f"baseline run '{rc.baseline}' has no rows.jsonl")
    if base_dir is not None and not meta.get("search") and "paired_speedup" not in summary:
        sp, n = metrics.speedup(rows, read_rows(base_dir / "rows.jsonl"))
        summary.update({"baseline": base_dir.name, "speedup": sp, "speedup_examples": n})
    write_json_atomic(run_dir / "summary.json", summary)
    print(format_summary(summary), flush=True)
    return summary


def format_summary(s: dict) -> str:
    def f(x, fmt):
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

    lines = [f"== {s['run']}",
             f"   examples {s['n']} (errors {s['errors']})   quality {f(s['quality'], '.3f')} "
             f"[95% CI {f(s['quality_ci_low'], '.3f')}, {f(s['quality_ci_high'], '.3f')}]"]
    ex = s.get("extra_per_example") or {}
    if s.get("search"):  # a search's cost is what it generated and how long it took, never a speedup
        n_ok = max(s["n"] - s["errors"], 1)
        lines.append(f"   cost per example: generated tokens {f(ex.get('generated_tokens'), '.1f')}   wall "
                     f"{f(s['total_wall_s'] / n_ok, '.1f')} s   candidates {f(ex.get('candidates'), '.1f')}   "
                     f"scorer calls {f(ex.get('prm_calls', 0), '.1f')}   answer tokens "
                     f"{f(s['total_new_tokens'] / n_ok, '.1f')}")
        if s.get("scorer"):
            name = str(s["scorer"])
            who = ("a value head trained on outcome labels of the policy's own train-split samples"
                   if name.startswith("value_head") else
                   "the policy model judging its own steps" if "(policy)" in name else "a model other than the policy")
            lines.append(f"   scorer: {s['scorer']} ({who})")
    else:
        lines.append(f"   tokens/s {f(s['tokens_per_s'], '.2f')}   MAT {f(s['mat'], '.2f')}   acceptance "
                     + (f"(tree: accepted / node) {f(s['tree_acceptance'], '.3f')}" if s.get("total_tree_nodes") else
                        f"{f(s['chain_acceptance'], '.3f')}")
                     + f"   forwards/token {f(s['forwards_per_token'], '.3f')}   "
                     f"TTFT {f(s['mean_ttft_s'], '.3f')} s")
    share = s.get("outside_model_share")
    if share is not None and not (isinstance(share, float) and math.isnan(share)):
        lines.append(f"   time outside the model: {100 * share:.1f}% of wall (harness + strategy)   memory the method "
                     f"holds beyond the target {f(s.get('method_mb'), '.2f')} MiB   peak RSS {f(s.get('peak_rss_mb'), '.0f')} MiB")
    if any(k.startswith("pass@") for k in s):
        lines.append("   " + "   ".join(f"{k} {v:.3f}" for k, v in s.items() if k.startswith("pass@")))
    if s.get("sandbox_tiers"):
        t = s["sandbox_tiers"]
        weak = {k: v for k, v in t.items() if k != "full"}
        lines.append(("   WARNING: model-written code ran in a WEAKER sandbox tier: " if weak else
                      "   sandbox isolation: ") + ", ".join(f"{k} ({v} rows)" for k, v in t.items()))
    if s.get("secondary"):
        lines.append("   " + "   ".join(f"{k} {f(v, '.3f')}" for k, v in s["secondary"].items()))
    if "oracle_quality" in s:  # several outputs per example (beams, drafts)
        lines.append(f"   oracle (best output) quality {f(s['oracle_quality'], '.3f')}   distinct-1 "
                     f"{f(s['distinct_1'], '.3f')}   distinct-2 {f(s['distinct_2'], '.3f')}   "
                     f"self-BLEU {f(s['self_bleu'], '.3f')}")
    shown = [(k, s[k] if k in s else ex.get(k)) for k in s.get("summary_fields") or ()]  # the strategy's choice
    if any(v is not None for _, v in shown):
        lines.append("   " + "   ".join(f"{k} {f(v, '.3f')}" for k, v in shown if v is not None))
    if s.get("paired_n") and s.get("search"):
        lines.append(f"   vs greedy (paired, same process, {s['paired_n']} examples): quality "
                     f"{f(s['paired_greedy_quality'], '.3f')} -> {f(s['quality'], '.3f')}   wall "
                     f"x{f(s['paired_wall_ratio'], '.2f')}   generated tokens x{f(s['paired_generated_ratio'], '.2f')}")
    elif s.get("paired_n"):
        lines.append(f"   speedup vs greedy (paired, same process, {s['paired_n']} examples): "
                     f"{f(s['paired_speedup'], '.2f')}x [95% CI {f(s['paired_speedup_ci_low'], '.2f')}, "
                     f"{f(s['paired_speedup_ci_high'], '.2f')}]   tokens identical to greedy on "
                     f"{round(s['paired_identical'] * s['paired_n'])}/{s['paired_n']} (tie-consistent "
                     f"{round(s['paired_tie_consistent'] * s['paired_n'])}/{s['paired_n']})   greedy quality "
                     f"{f(s['paired_greedy_quality'], '.3f')}")
    if "speedup" in s:
        lines.append(f"   speedup vs {s['baseline']}: {f(s['speedup'], '.2f')}x on {s['speedup_examples']} "
                     f"common example(s) (across runs: indicative only)")
    return "\n".join(lines)


def main_entry(cfg: DictConfig) -> None:
    """Hydra task function body: a ConfigError becomes one line on stderr and exit status 2."""
    from hydra.core.hydra_config import HydraConfig

    try:
        hc = HydraConfig.get()
        choices = dict(hc.runtime.choices)
        multirun = str(hc.mode) == "RunMode.MULTIRUN"
    except ValueError:
        choices, multirun = {}, False
    try:
        run(cfg, choices)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        if multirun:  # a failing job in a sweep prints its line; the sweep goes on
            return
        sys.exit(2)
