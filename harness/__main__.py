"""`python -m harness strategy=X task=Y model=Z` (add `-m` for a sweep).

Group options are checked against conf/ before Hydra composes anything, so a typo fails in
one line naming the valid choices, before any data or model loads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

CONF = Path(__file__).resolve().parent.parent / "conf"
GROUPS = ("model", "strategy", "task", "experiment")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def precheck(argv: list[str]) -> str | None:
    """One-line error for an unknown group option in the overrides, else None."""
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        group = key.split("@", 1)[0]
        if group not in GROUPS or "(" in value or value in ("null", ""):
            continue
        valid = options(group)
        for v in value.split(","):
            if v.strip() not in valid:
                return f"error: unknown {group} '{v.strip()}'; choose one of: {', '.join(valid)}"
    return None


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from harness.runner import main_entry

    main_entry(cfg)


def main() -> None:
    err = precheck(sys.argv[1:])
    if err:
        print(err, file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
