"""Tie-consistency of outputs stored by bench_decoding.py, judged after the fact.

    python benchmarks/tie_check_stored.py results/published/bench_qwen_pair_bf16.json [...] [--gap 0.3]

For each stored run (prompt x method x repeat) the target model of that benchmark (same config,
same dtype) is run ONCE, teacher-forced, over the rebuilt prompt + the stored output tokens
(harness/tiecheck.py); no timing is involved, so older benchmark files get the column that
bench_decoding.py now prints itself. Prints, per method, token-identical runs (as stored) and
tie-consistent runs, and writes `<file>.ties.json` beside each input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_decoding import build_prompts, load_engine  # noqa: E402

from harness.tiecheck import tie_check  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--gap", type=float, default=0.3, help="nats below the target's best still counted as a tie")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    engines, cache = {}, {}  # identical outputs of one prompt share one teacher-forced forward
    for f in a.files:
        d = json.loads(Path(f).read_text())
        args = d["args"]
        key = (args["model"], args["dtype"])
        if key not in engines:
            engines[key] = load_engine(*key)
        target = engines[key]
        prompts = dict(build_prompts(target, args["prompts"]))
        per, out_runs = {}, []
        for r in d["runs"]:
            key_run = (key, r["prompt"], tuple(r["tokens"]))
            if key_run not in cache:
                cache[key_run] = tie_check(target, prompts[r["prompt"]], r["tokens"], a.gap)
            tc = cache[key_run]
            m = per.setdefault(r["method"], {"runs": 0, "identical": 0, "tie_consistent": 0, "max_deficit": 0.0})
            m["runs"] += 1
            m["identical"] += bool(r.get("identical"))
            m["tie_consistent"] += tc["tie_consistent"]
            m["max_deficit"] = max(m["max_deficit"], tc["max_deficit"])
            out_runs.append({"prompt": r["prompt"], "repeat": r.get("repeat", 0), "method": r["method"], **tc})
        print(f"\n{f} ({args['model']}, {args['dtype']}, gap {a.gap} nats)", flush=True)
        print("| method | token-identical to greedy | tie-consistent | largest deficit (nats) |\n|---|---|---|---|")
        for name, m in per.items():
            print(f"| {name} | {m['identical']}/{m['runs']} | {m['tie_consistent']}/{m['runs']} | {m['max_deficit']:.3f} |")
        Path(f).with_suffix(".ties.json").write_text(json.dumps({"source": f, "gap": a.gap, "methods": per,
                                                                  "runs": out_runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
