"""Answer extraction and comparison shared by tasks (one place, never copied per task)."""

from __future__ import annotations

import atexit
import json
import logging
import os
import pickle
import queue
import re
import subprocess
import sys
import threading
from pathlib import Path

from harness.errors import UndecidableComparison  # noqa: F401 (raised here, re-exported)

_NUM = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def normalize_number(s: str | None) -> str | None:
    """'1,234.50' -> '1234.5', '$18' -> '18', '-0' -> '0'; None if not a number."""
    if s is None:
        return None
    s = s.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        x = float(s)
    except ValueError:
        return None
    if x == int(x):
        return str(int(x))
    return repr(x)


def strict_final_number(text: str) -> str | None:
    """The number after the last '#### ' marker (GSM8K's answer format)."""
    m = re.findall(r"####\s*(-?\$?\d[\d,]*(?:\.\d+)?)", text)
    return normalize_number(m[-1]) if m else None


def last_number(text: str) -> str | None:
    """The last number anywhere in the text (flexible extraction)."""
    m = _NUM.findall(text)
    return normalize_number(m[-1]) if m else None


# ---------------------------------------------------------------------- lm-eval's gsm8k rules, exactly
# lm-evaluation-harness tasks/gsm8k/gsm8k.yaml (version 3.0): two filters, then exact_match with
# ignore_case and regexes_to_ignore applied to prediction and reference alike.
LM_EVAL_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")          # group_select 0 (the FIRST match)
LM_EVAL_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")    # group_select -1 (the LAST match)
LM_EVAL_IGNORE = (",", "\\$", "(?s).*#### ", "\\.$")
LM_EVAL_FALLBACK = "[invalid]"


def lm_eval_regex(text: str, pattern: re.Pattern, group_select: int) -> str:
    """lm-eval's regex filter: findall, take match[group_select]; a tuple of groups gives its
    first non-empty group; stripped; '[invalid]' when nothing matches."""
    found = pattern.findall(text if isinstance(text, str) else "")
    if not found:
        return LM_EVAL_FALLBACK
    m = found[group_select]
    if isinstance(m, tuple):
        m = next((g for g in m if g), LM_EVAL_FALLBACK)
    return m.strip()


def lm_eval_exact_match(prediction: str, reference: str) -> float:
    """exact_match as lm-eval's gsm8k config calls it: every regex of regexes_to_ignore removed
    from both strings (in order), lower-cased, then string equality."""
    for pat in LM_EVAL_IGNORE:
        prediction, reference = re.sub(pat, "", prediction), re.sub(pat, "", reference)
    return float(prediction.lower() == reference.lower())


# ---------------------------------------------------------------------- boxed answers (MATH, AIME)

_BOX_CMD = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _braced(text: str, start: int) -> int | None:
    """Index of the brace closing the one at text[start] ('{'), or None if unbalanced.

    Escaped braces (\\{ and \\}) are literal set braces and do not count."""
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def last_boxed(text: str | None) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...} (balanced braces), or of `\\boxed 5`.

    A box whose braces never close (a truncated output) or that is empty is skipped, and the
    one before it is used. None when there is no usable box."""
    if not text:
        return None
    for m in reversed(list(_BOX_CMD.finditer(text))):
        j = m.end()
        while j < len(text) and text[j].isspace():
            j += 1
        if j < len(text) and text[j] == "{":
            end = _braced(text, j)
            content = text[j + 1:end].strip() if end is not None else ""
        elif j > m.end():  # "\boxed 5": one token after a space, up to whitespace or '$'
            tok = re.match(r"[^\s$]+", text[j:])
            content = tok.group(0).rstrip(".,;") if tok else ""
        else:
            content = ""
        if content:
            return content
    return None


def _light_norm(s: str) -> str:
    """Formatting-only normalisation for the exact-match fast path of `math_equal`.

    Only removes what never changes the value: math-mode dollars, \\left/\\right, thin spaces,
    \\dfrac/\\tfrac, degree marks, \\text{} wrappers, thousands separators, '(C)' -> 'C'."""
    s = s.strip().strip("$").strip()
    s = re.sub(r"\\(?:left|right)(?![A-Za-z])", "", s)
    s = re.sub(r"\\[dt]frac(?![A-Za-z])", r"\\frac", s)
    s = re.sub(r"\\[,!;:]|\\q?quad(?![A-Za-z])", "", s)
    s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s)
    s = re.sub(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r" (?![A-Za-z])|(?<![A-Za-z]) ", "", s)  # keep a space only between letters
    s = s.rstrip(".").strip()
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")
    m = re.fullmatch(r"\(([A-Za-z])\)", s)
    return m.group(1) if m else s


# math-verify runs in a persistent worker process: its own timeout uses SIGALRM, which only works
# in the main thread, and a sympy call cannot be interrupted any other way. The worker is a plain
# `python -c` subprocess (no fork of a parent that may hold CUDA or threads, and, unlike
# multiprocessing's spawn, no re-import of the caller's __main__), started lazily, reused, and
# killed and re-created when a call runs past its timeout. Frames on its stdin/stdout are
# length-prefixed pickles; one call at a time (a lock), so it is safe from any thread.

logger = logging.getLogger(__name__)

VERIFY_STATS = {"calls": 0, "exact": 0, "timeouts": 0, "errors": 0, "worker_starts": 0}
WORKER_START_TIMEOUT_S = 180.0  # importing sympy in a fresh interpreter (slow on a busy CPU)
_WORKER_LOCK = threading.Lock()
_WORKER = None  # the running _Worker, or None


class WorkerTimeout(TimeoutError):
    """The worker did not answer within the timeout; it has been killed (re-created on next use)."""


def _write_frame(f, obj) -> None:
    data = pickle.dumps(obj)
    f.write(len(data).to_bytes(8, "big") + data)
    f.flush()


def _read_frame(f):
    """The next object, or raise EOFError when the other side has gone."""
    head = f.read(8)
    if len(head) < 8:
        raise EOFError
    n = int.from_bytes(head, "big")
    body = f.read(n)
    if len(body) < n:
        raise EOFError
    return pickle.loads(body)


def _worker_loop() -> None:  # runs in the worker process
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print() must not corrupt the frames: stdout now goes to stderr
    inp = sys.stdin.buffer
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout disabled" notice
    logging.getLogger("latex2sympy2_extended").setLevel(logging.ERROR)
    try:
        import math_verify  # noqa: F401  (warm up: the slow import happens before any timeout)
    except Exception as e:
        _write_frame(out, ("error", f"cannot import math_verify: {e!r}"))
        return
    _write_frame(out, ("ready", None))
    while True:
        try:
            fn, args = _read_frame(inp)
        except EOFError:
            return
        except Exception as e:  # e.g. the callable's module cannot be imported here
            _write_frame(out, ("error", f"{type(e).__name__}: {e}"))
            continue
        try:
            _write_frame(out, ("ok", fn(*args)))
        except Exception as e:
            _write_frame(out, ("error", f"{type(e).__name__}: {e}"))


class _Worker:
    def __init__(self):
        paths = [str(Path(__file__).resolve().parent.parent)] + [p for p in sys.path if p]
        code = ("import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
                "from tasks.answers import _worker_loop; _worker_loop()")
        self.proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(paths)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.answers: queue.Queue = queue.Queue()
        threading.Thread(target=self._reader, name="math-verify-reader", daemon=True).start()
        VERIFY_STATS["worker_starts"] += 1
        try:
            status, info = self.recv(WORKER_START_TIMEOUT_S)
        except BaseException:
            self.kill()
            raise
        if status != "ready":
            self.kill()
            raise RuntimeError(f"math-verify worker: {info}")

    def _reader(self) -> None:  # a thread: frames from the worker into the queue (None at EOF)
        stdout = self.proc.stdout
        while True:
            try:
                msg = _read_frame(stdout)
            except Exception:
                self.answers.put(None)
                return
            self.answers.put(msg)

    def call(self, fn, args, timeout_s: float):
        try:
            _write_frame(self.proc.stdin, (fn, args))
        except (OSError, ValueError):
            raise RuntimeError("math-verify worker has exited") from None
        return self.recv(timeout_s)

    def recv(self, timeout_s: float):
        try:
            msg = self.answers.get(timeout=timeout_s)
        except queue.Empty:
            raise WorkerTimeout(f"no answer within {timeout_s}s") from None
        if msg is None:
            raise RuntimeError(f"math-verify worker exited (status {self.proc.poll()})")
        return msg

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


def _stop_worker() -> None:
    global _WORKER
    if _WORKER is not None:
        w, _WORKER = _WORKER, None
        w.kill()


def _forget_worker_after_fork() -> None:  # a forked child must not share (or kill) the parent's
    global _WORKER, _WORKER_LOCK
    _WORKER, _WORKER_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_worker_after_fork)
atexit.register(_stop_worker)


def run_in_worker(fn, *args, timeout_s: float = 5.0):
    """fn(*args) in the worker process (fn: a module-level function, pickled by reference).

    Raises WorkerTimeout after timeout_s (the worker is then killed; the next call starts a new
    one) and RuntimeError when fn raised there or the worker died. Safe from any thread."""
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is not None and _WORKER.proc.poll() is not None:
            _stop_worker()
        if _WORKER is None:
            _WORKER = _Worker()
        try:
            status, value = _WORKER.call(fn, args, timeout_s)
        except (WorkerTimeout, RuntimeError):
            _stop_worker()
            raise
    if status != "ok":
        raise RuntimeError(value)
    return value


def _as_latex(s: str) -> str:
    """An extracted answer as text math-verify's LaTeX extractor reads as one expression."""
    return "$" + s.strip().strip("$") + "$"


def _verify_pair(gold: str, pred: str) -> bool:  # runs in the worker process
    from math_verify import parse, verify

    g = parse(_as_latex(gold), parsing_timeout=None)
    p = parse(_as_latex(pred), parsing_timeout=None)
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=None))  # order matters: gold first


def compare_math(gold: str, pred: str | None, timeout_s: float = 5.0) -> tuple[bool, str]:
    """(equal, how): how is 'exact', 'verified', 'different', 'empty', 'timeout' or 'error'."""
    VERIFY_STATS["calls"] += 1
    if pred is None or not _light_norm(pred):
        return False, "empty"
    if _light_norm(gold) == _light_norm(pred):
        VERIFY_STATS["exact"] += 1
        return True, "exact"
    try:
        ok = run_in_worker(_verify_pair, gold, pred, timeout_s=timeout_s)
    except WorkerTimeout:
        VERIFY_STATS["timeouts"] += 1
        logger.warning("math_equal: timed out after %ss comparing gold %.80r with %.80r (undecided)",
                       timeout_s, gold, pred)
        return False, "timeout"
    except RuntimeError as e:
        VERIFY_STATS["errors"] += 1
        logger.warning("math_equal: comparison failed (%s); undecided", e)
        return False, "error"
    return bool(ok), "verified" if ok else "different"


def decided_math_equal(gold: str, pred: str | None, timeout_s: float = 5.0) -> tuple[bool, str]:
    """compare_math, but a timeout or a crash raises UndecidableComparison (never 'not equal')."""
    ok, how = compare_math(gold, pred, timeout_s)
    if how in ("timeout", "error"):
        raise UndecidableComparison(f"math-verify {'timed out after ' + str(timeout_s) + ' s' if how == 'timeout' else 'failed'}"
                                    f" comparing {str(gold)[:80]!r} with {str(pred)[:80]!r}")
    return ok, how


def math_equal(gold: str, pred: str | None, timeout_s: float = 5.0) -> bool:
    """Whether pred is mathematically equal to gold (math-verify, gold first); raises
    UndecidableComparison when math-verify times out or fails."""
    return decided_math_equal(gold, pred, timeout_s)[0]


def normalize_aime(s: str | int | None) -> int | None:
    """An AIME answer as an int: '033' -> 33, '33.0' -> 33, 'n = 33' -> 33, '\\text{33}' -> 33."""
    if s is None:
        return None
    if isinstance(s, int):
        return s
    t = str(s).strip().strip("$").strip()
    t = re.sub(r"\\(?:text|textbf|mathrm|mbox)\s*\{\s*([^{}]*?)\s*\}", r"\1", t)
    t = t.split("=")[-1]
    t = re.sub(r"\\[,!;: ]|\s+|\^\s*\{?\s*\\circ\s*\}?|\\%|%", "", t).rstrip(".")
    m = re.fullmatch(r"([+-]?)(\d{1,3}(?:,\d{3})+|\d+)(?:\.0*)?", t)
    if not m:
        return None
    n = int(m.group(2).replace(",", ""))
    return -n if m.group(1) == "-" else n
