"""Profile SmartSpec's step-time model for a target/draft pair on this machine and write it as a
file (strategy.step_profile): target forwards of 1 and 8 tokens and a 1-token draft forward,
timed once here so that runs never time themselves.

    python -m tools.profile_smartspec --out results/profiles/NAME.json [hydra overrides, e.g. model=...]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    """Profile the step-time model of a target/draft pair on this machine and write it as a file."""
    import argparse

    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    ap = argparse.ArgumentParser(prog="python -m tools.profile_smartspec", description=main.__doc__)
    ap.add_argument("--out", required=True, help="profile file to write (JSON)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median)")
    ap.add_argument("overrides", nargs="*", help="hydra overrides: model=..., model@strategy.draft=...")
    a = ap.parse_args(argv)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["strategy=smartspec", "strategy.step_profile=null",
                                           "strategy.step_model={target_a: 1, target_b: 0, draft_token_s: 0}",
                                           *a.overrides])
    spec = instantiate(cfg.model, _convert_="all")
    strat = instantiate(cfg.strategy, _convert_="all")
    torch.set_num_threads(int(cfg.run.threads))
    target, draft = spec.load(), strat.draft.load()
    model = strat.profile(target, draft, list(range(10, 42)), repeats=a.repeats)
    from harness import provenance

    out = {"step_model": model, "target": spec.describe(), "draft": strat.draft.describe(),
           "threads": torch.get_num_threads(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "cpu": provenance.cpu_model(), "repeats": a.repeats}
    p = Path(a.out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(out, indent=1) + "\n")
    print(f"[smartspec] wrote {p}: " + ", ".join(f"{k}={v:.4g}s" for k, v in model.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
