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
GROUPS = ("model", "strategy", "task", "experiment", "scorer")


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


def _combos(argv: list[str]) -> list[list[str]]:
    """The override lists to check: every sweep value of each swept key once (others at their
    first value), so that `-m strategy=greedy,pld strategy.k=3` checks k on both strategies."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if not a.startswith("-") and ("=" in a or a.startswith("~"))
            and not a.lstrip("+~").startswith("hydra")]
    parsed = OverridesParser.create().parse_overrides(args)
    choices = []
    for o in parsed:
        if o.is_sweep_override():
            try:
                vals = list(o.sweep_string_iterator())
            except Exception:  # glob / interval sweeps: Hydra expands them itself
                return []
            prefix = o.input_line.split("=", 1)[0]
            choices.append([f"{prefix}={v}" for v in vals])
        else:
            choices.append([o.input_line])
    combos = [[c[0] for c in choices]]
    for i, c in enumerate(choices):
        for v in c[1:]:
            combos.append([*(x[0] for x in choices[:i]), v, *(x[0] for x in choices[i + 1:])])
    return combos


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def _unknown_key(overrides: list[str], key: str, line: str) -> str:
    """One line naming the unknown key and the valid ones at its level."""
    from omegaconf import DictConfig, OmegaConf

    parent, _, leaf = key.rpartition(".")
    rest = [o for o in overrides if o != line]
    try:
        cfg = _compose(rest)
    except Exception:
        cfg = None
    node = OmegaConf.select(cfg, parent) if cfg is not None and parent else cfg
    where = parent or "the root config"
    if isinstance(node, DictConfig):
        valid = ", ".join(k for k in node.keys() if k != "_target_")
        return f"error: unknown key '{leaf}' in {where}; valid keys: {valid}"
    return f"error: unknown key '{key}' ({where} has no such entry)"


def _check_targets(cfg, path: str = "") -> str | None:
    """Every node with a _target_ gets only parameters its class takes (`+task.limt=2`)."""
    import inspect

    from hydra.utils import get_class
    from omegaconf import DictConfig

    if not isinstance(cfg, DictConfig):
        return None
    if "_target_" in cfg:
        try:
            cls = get_class(cfg._target_)
            params = inspect.signature(cls.__init__ if inspect.isclass(cls) else cls).parameters
        except Exception:
            params = None
        if params is not None and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            names = [n for n in params if n != "self"]
            for k in cfg.keys():
                if k not in names and not str(k).startswith("_"):
                    return (f"error: {path or 'config'} ({cfg._target_}) takes no parameter '{k}'; "
                            f"valid: {', '.join(names)}")
    for k in cfg.keys():
        if str(k) == "hydra":
            continue
        try:
            sub = cfg[k]
        except Exception:  # an interpolation that resolves only at run time
            continue
        err = _check_targets(sub, f"{path}.{k}" if path else str(k))
        if err:
            return err
    return None


def validate(argv: list[str]) -> str | None:
    """All the checks that need no data and no weights: group options, keys, parameters."""
    err = precheck(argv)
    if err:
        return err
    try:
        combos = _combos(argv)
    except Exception as e:
        return f"error: cannot parse the overrides: {str(e).splitlines()[0]}"
    import re

    for ovs in combos:
        try:
            cfg = _compose(ovs)
        except Exception as e:
            msg = str(e)
            m = re.search(r"Could not (?:override|append to) '([^']+)'", msg)
            job = f" (in the sweep job with {', '.join(ovs)})" if len(combos) > 1 else ""
            if m and "@" in m.group(1):
                group, pkg = m.group(1).split("@", 1)
                return f"error: cannot put a {group} at {pkg}: the composed config has no {pkg}{job}"
            if m:
                line = next((o for o in ovs if o.lstrip("+~").split("=", 1)[0] == m.group(1)), "")
                return _unknown_key(ovs, m.group(1), line) + job
            return f"error: {msg.splitlines()[0]}{job}"
        err = _check_targets(cfg)
        if err:
            return err
        from harness.errors import ConfigError
        from harness.runner import prepare

        try:
            prepare(cfg)
        except ConfigError as e:
            if len(combos) > 1:  # a sweep: the failing job prints its line at run time, the others run
                continue
            return f"error: {e}"
    return None


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    from harness.runner import main_entry

    main_entry(cfg)


EXAMPLES = """\
examples:
  python -m harness strategy=pld task=gsm8k task.limit=20 run.paired_baseline=true   # speedup measured in-process
  python -m harness strategy=self_consistency strategy.n=8 task=gsm8k task.limit=20
  python -m harness strategy=a_star task=math500 task.limit=1                        # PRM-guided search
  python -m harness -m strategy=greedy,pld,token_recycling task=humaneval task.limit=10   # a sweep
  python -m harness task=gsm8k task.prompting.num_fewshot=8 task.prompting.system_prompt='Be concise.'
  python -m harness model=hf model.hub_id=Qwen/Qwen2.5-0.5B-Instruct model.dtype=bfloat16
  python -m harness task=hub task.path=DIR task.prompt='{question}' task.answer=answer task.metric=last_number
  python -m harness.demo          # the showcase (make demo);  python -m harness.leaderboard   # tables + plots
more: README.md; a group's parameters: conf/<group>/<choice>.yaml; Hydra's own help: --hydra-help"""


def help_text() -> str:
    lines = ["usage: python -m harness [-m] [group=choice ...] [group.key=value ...]", "",
             "Composes a model x a strategy x a task (Hydra) and writes one row per example.", "", "groups:"]
    for g in GROUPS:
        where = "strategy.scorer (scorer@strategy.scorer=...)" if g == "scorer" else g
        lines.append(f"  {where}: {', '.join(options(g))}")
    lines += ["", "run settings (run.<key>=...): max_new_tokens, samples, seed, threads, results_dir, name, progress, "
              "baseline, paired_baseline, retry_errors",
              "prompting (task.prompting.<key>=...): chat_template, system_prompt, num_fewshot", "", EXAMPLES]
    return "\n".join(lines)


def main() -> None:
    argv = sys.argv[1:]
    if any(a in ("--help", "-h") for a in argv) or argv[:1] == ["list"]:
        print(help_text())
        return
    err = validate(argv)
    if err:
        print(err, file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
