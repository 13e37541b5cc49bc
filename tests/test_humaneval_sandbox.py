"""HumanEval + the code sandbox: real data loads, canonical solutions pass, execution is opt-in,
pass@k is right, and adversarial programs are contained (the test process is unharmed)."""

from __future__ import annotations

import math
import os
import resource
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness import sandbox
from tasks.humaneval import DISABLED, HumanEval, build_solution, extract_code, pass_at_k
from harness.sandbox import processes_of, run_sandboxed

DATA = Path(os.environ["HARNESS_DATA_DIR"])
HE_FILE = DATA / "humaneval" / "HumanEval.jsonl.gz"
needs_data = pytest.mark.skipif(not HE_FILE.is_file(), reason=f"{HE_FILE} not found (HARNESS_DATA_DIR)")
SENT = "__sandbox_test_done__"
T = 2.0  # timeout of the adversarial programs


@pytest.fixture(scope="module")
def iso() -> str:
    return sandbox.detect_isolation().label


def run(code: str, timeout_s: float = T, **kw):
    """As the harness does it: the program, then the completion marker."""
    t0 = time.monotonic()
    res = run_sandboxed(code + f"\nprint({SENT!r})\n", timeout_s, sentinel=SENT, **kw)
    assert time.monotonic() - t0 < timeout_s + 6, "the sandbox did not return in time"
    assert not os.path.exists(res.tmpdir), "the throwaway directory was not removed"
    assert processes_of(uid=res.uid, marker=res.run_id) == [], "processes left behind"
    return res


def needs_fs(iso):
    if "ro-fs" not in iso:
        pytest.skip(f"filesystem isolation not available in this sandbox tier ({iso})")


def world_writable_dir() -> Path:
    """A directory outside the sandbox that anyone may write to: only the read-only mount protects it."""
    d = Path(tempfile.mkdtemp(prefix="sandbox-victim-", dir="/tmp"))
    d.chmod(0o777)
    (d / "keep.txt").write_text("important")
    (d / "keep.txt").chmod(0o666)
    return d


# ------------------------------------------------------------------------- data, scoring, pass@k
@needs_data
def test_real_data_loads():
    ex = HumanEval().load()
    assert len(ex) == 164 and len({e["id"] for e in ex}) == 164
    assert ex[0]["id"] == "HumanEval/0" and ex[0]["entry_point"] == "has_close_elements"
    assert set(ex[0]) == {"id", "prompt", "test", "entry_point", "canonical_solution"}
    msg = HumanEval().prompt(ex[0])[0]["content"]
    assert "```python\n" in msg and "def has_close_elements" in msg
    assert HumanEval(limit=3).load() == ex[:3]
    assert HumanEval(path=str(HE_FILE)).load() == ex


@needs_data
def test_canonical_solutions_pass_and_empty_fails():
    task = HumanEval(execute=True, timeout_s=10)
    for e in task.load()[:10]:
        good = task.score(e, e["prompt"] + e["canonical_solution"])
        assert good["quality"] == 1.0 and good["status"] == "passed", (e["id"], good)
        assert good["executed"] is True and good["isolation"]
        bad = task.score(e, "")
        assert bad["quality"] == 0.0 and bad["status"] == "failed" and bad["reason"], (e["id"], bad)
    e = task.load()[2]
    assert task.score(e, e["canonical_solution"])["quality"] == 1.0  # completion style: body only
    fenced = f"Here you go:\n```python\n{e['prompt']}{e['canonical_solution']}```\nDone."
    assert task.score(e, fenced)["quality"] == 1.0


@needs_data
def test_all_prompts_are_valid_modules():
    # build_solution keeps the prompt (imports, helpers) in front of a full definition
    assert all(compile(e["prompt"], "p", "exec") for e in HumanEval().load())


def test_execution_disabled_by_default():
    e = {"id": "x", "prompt": "def f():\n", "test": "def check(c):\n    assert c() == 1\n",
         "entry_point": "f", "canonical_solution": "    return 1\n"}
    out = HumanEval().score(e, "```python\nimport os\nos.system('echo hi')\n```")
    assert out["quality"] is None and out["executed"] is False
    assert out["reason"] == DISABLED and "task.execute=true" in out["reason"]
    with pytest.raises(ConfigError):
        HumanEval(timeout_s=0)


def test_extraction():
    assert extract_code("a\n```python\nx = 1\n```\n```python\ny = 2\n```") == "x = 1\n"
    assert extract_code("```\nz = 3\n```") == "z = 3\n"
    assert extract_code("```py\nunclosed = 1\n") == "unclosed = 1\n"
    assert extract_code("    return 1\n") == "    return 1\n"
    e = {"prompt": "from typing import List\n\ndef f(x: List[int]):\n    \"\"\"doc\"\"\"\n", "entry_point": "f"}
    ext, sol = build_solution(e, "```python\ndef f(x):\n    return 1\n```")
    assert ext == "def f(x):\n    return 1\n" and sol.startswith("from typing import List")
    ext, sol = build_solution(e, "    return 2\n")
    assert ext == sol == e["prompt"] + "    return 2\n"


def test_pass_at_k():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 0, 1) == 0.0 and pass_at_k(5, 0, 5) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0 and pass_at_k(5, 5, 5) == 1.0
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))  # = 11/12
    assert pass_at_k(10, 3, 5) == pytest.approx(11 / 12)
    assert pass_at_k(10, 6, 5) == 1.0  # n - c < k
    assert pass_at_k(200, 17, 10) == pytest.approx(1 - math.comb(183, 10) / math.comb(200, 10))
    for bad in [(5, 6, 1), (5, 2, 0), (5, 2, 6), (5, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


# ------------------------------------------------------------------------- the sandbox, adversarially
def test_plain_program_and_failures(iso):
    assert run("print('hello')").passed
    r = run("assert 1 + 1 == 3")
    assert r.status == "failed" and "AssertionError" in r.reason and "assert 1 + 1 == 3" in r.reason
    r = run("undefined_name")
    assert r.status == "failed" and "NameError" in r.reason
    assert r.isolation.startswith(iso)


def test_infinite_loop_times_out():
    r = run("while True:\n    pass")
    assert r.status == "timeout" and not r.passed and r.seconds < T + 4
    r = run("import time\ntime.sleep(1000)")  # wall clock, not CPU
    assert r.status == "timeout" and r.seconds < T + 4


def test_fork_bomb_is_contained():
    code = ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass")
    r = run(code)  # run() asserts nothing with the run's uid or argv marker is left
    assert not r.passed and r.status in ("timeout", "failed", "killed") and r.seconds < T + 4
    # a plain `while True: os.fork()` as well
    r = run("import os\nwhile True:\n    os.fork()")
    assert not r.passed


def test_background_process_is_killed_when_the_program_ends(iso):
    if "uid-drop" not in iso:
        pytest.skip(f"no per-run uid in this tier ({iso}): a renamed daemon cannot be found to check")
    # daemons that leave the process group and outlive the program (renamed by exec: no argv marker)
    code = ("import os, subprocess\n"
            "if os.fork() == 0:\n    os.setsid()\n    os.execvp('sleep', ['sleep', '300'])\n"
            "subprocess.Popen(['sleep', '301'], start_new_session=True)\n")
    r = run(code)
    assert r.passed  # the program itself finished; nothing with its uid is left (checked in run())
    assert r.uid is not None


def test_memory_hog_is_contained():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = run("x = bytearray(10 * 1024 ** 3)\nprint(len(x))")
    assert not r.passed and r.status in ("failed", "killed")
    assert r.status == "killed" or "MemoryError" in r.reason
    r = run("a = []\nwhile True:\n    a.append(bytearray(50 * 1024 * 1024))", memory_mb=512)
    assert not r.passed and r.status in ("failed", "killed")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KB


def test_huge_output_keeps_the_caller_bounded():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = run("import sys\nfor _ in range(1024):\n    sys.stdout.write('x' * (1 << 20))")  # 1 GB
    assert not r.passed and r.status in ("failed", "killed", "exit")
    assert len(r.stdout_tail) <= 65536
    r = run("import sys\nfor _ in range(1024):\n    sys.stderr.write('y' * (1 << 20))")
    assert not r.passed and len(r.stderr_tail) <= 65536
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KB


def test_early_exit_is_not_a_pass():
    for stmt in ("import sys\nsys.exit(0)", "import os\nos._exit(0)"):
        r = run(stmt)
        assert not r.passed and r.status == "failed" and "exited before the tests finished" in r.reason
    r = run("import sys\nsys.exit(3)")
    assert r.status == "exit" and "code 3" in r.reason
    r = run("import os\nos.kill(os.getpid(), 9)")
    assert r.status == "killed" and "SIGKILL" in r.reason


@needs_data
def test_early_exit_through_the_task():
    task = HumanEval(execute=True, timeout_s=5)
    e = task.load()[0]
    for body in ("    import sys; sys.exit(0)\n", "    import os; os._exit(0)\n"):
        out = task.score(e, body)
        assert out["quality"] == 0.0 and "exited before the tests finished" in out["reason"]


def test_shell_commands_run_but_cannot_escape(iso, tmp_path):
    victim = world_writable_dir()
    try:
        code = (f"import os, subprocess\n"
                f"os.system('echo pwned > {victim}/a.txt 2>/dev/null')\n"
                f"subprocess.run(['sh', '-c', 'echo pwned > {victim}/b.txt 2>/dev/null'])\n"
                f"subprocess.run(['sh', '-c', 'echo pwned > {tmp_path}/c.txt 2>/dev/null'])\n"
                f"os.system('rm -rf {victim} 2>/dev/null')\n"
                f"print(subprocess.run(['echo', 'hello-from-child'], capture_output=True, text=True).stdout)\n")
        r = run(code)
        assert r.passed and "hello-from-child" in r.stdout_tail  # commands do run, inside
        assert not (tmp_path / "c.txt").exists()
        needs_fs(iso)
        assert not (victim / "a.txt").exists() and not (victim / "b.txt").exists()
        assert (victim / "keep.txt").read_text() == "important"
    finally:
        shutil.rmtree(victim, ignore_errors=True)


def test_python_writes_and_deletes_outside_fail(iso):
    victim = world_writable_dir()
    try:
        r = run(f"open('{victim}/new.txt', 'w').write('x')")
        needs_fs(iso)
        assert r.status == "failed" and ("Read-only" in r.reason or "Permission" in r.reason), r.reason
        assert not (victim / "new.txt").exists()
        r = run(f"import shutil\nshutil.rmtree('{victim}')")
        assert r.status == "failed" and (victim / "keep.txt").read_text() == "important"
        r = run(f"open('{victim}/keep.txt', 'w').write('overwritten')")
        assert r.status == "failed" and (victim / "keep.txt").read_text() == "important"
    finally:
        shutil.rmtree(victim, ignore_errors=True)


def test_home_is_the_throwaway_dir(iso):
    real_home = Path.home()
    probe = real_home / f"sandbox_probe_{os.getpid()}"
    r = run("import os\nopen(os.path.expanduser('~/x.txt'), 'w').write('ok')\n"
            "print(os.path.expanduser('~'), os.getcwd())\n"
            f"try:\n    open('{probe}', 'w').write('escaped')\nexcept OSError as e:\n    print('denied', e)\n")
    assert r.passed and "denied" in r.stdout_tail
    assert not probe.exists() and str(real_home) not in r.stdout_tail.split("denied")[0]


def test_no_network(iso):
    if "netns" not in iso:
        pytest.skip(f"no network namespace in this sandbox tier ({iso}): connect would succeed")
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.setblocking(False)
    port = srv.getsockname()[1]
    try:
        r = run(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                "s.sendall(b'escaped')")
        assert r.status == "failed" and ("OSError" in r.reason or "Error" in r.reason), r.reason
        assert "unreachable" in r.reason.lower() or "refused" in r.reason.lower(), r.reason
        with pytest.raises(BlockingIOError):
            srv.accept()  # nobody connected
        r = run("import socket\nsocket.getaddrinfo('example.com', 80)")
        assert r.status == "failed"
    finally:
        srv.close()


def test_unprivileged_in_full_tier(iso):
    if "uid-drop" not in iso:
        pytest.skip(f"privileges are not dropped in this sandbox tier ({iso})")
    r = run("import os\nassert os.getuid() != 0 and os.geteuid() != 0\n"
            "try:\n    os.listdir('/root/.ssh')\nexcept OSError:\n    pass\nelse:\n    raise SystemExit('read /root')\n"
            "import subprocess\nassert subprocess.run(['mount', '-o', 'remount,rw', '/'], "
            "capture_output=True).returncode != 0\n")
    assert r.passed, (r.reason, r.stderr_tail[-500:])


def test_weakest_tier_says_so():
    if os.geteuid() == 0:
        r = run("print(1)", isolation="none")
        assert r.passed and r.isolation.startswith("none: NO network")
        assert (r.uid is not None) == ("unprivileged uid" in r.isolation)
    with pytest.raises(sandbox.SandboxError):
        run_sandboxed("print(1)", 1, isolation="bogus")


# ------------------------------------------------------------------------- reward hacking, tiers
ALWAYS_EQUAL = '''```python
class Anything:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False

def add(x, y):
    return Anything()
```'''
TOY = {"id": "toy/add", "prompt": "def add(x, y):\n    \"\"\"x + y\"\"\"\n", "entry_point": "add",
       "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(2, 2) == 4\n",
       "canonical_solution": "    return x + y\n"}


def test_an_always_equal_object_fails_with_a_named_reason():
    task = HumanEval(execute=True, timeout_s=10)
    assert task.score(TOY, TOY["prompt"] + TOY["canonical_solution"])["quality"] == 1.0
    out = task.score(TOY, ALWAYS_EQUAL)
    assert out["quality"] == 0.0 and out["status"] == "failed"
    assert out["reason"] == "returned a value that is not plain data (__main__.Anything)", out
    # the hole is real: the same program without the guard passes every assert
    solution = build_solution(TOY, ALWAYS_EQUAL)[1]
    unguarded = run(solution + "\n" + TOY["test"] + "\ncheck(add)\n")
    assert unguarded.passed


@pytest.mark.parametrize("code", [
    "class I(int):\n    def __eq__(self, o):\n        return True\n    __hash__ = int.__hash__\n\ndef add(x, y):\n    return I(0)\n",
    "class A:\n    __eq__ = lambda s, o: True\n\ndef add(x, y):\n    return [A()]\n",
    "import builtins\nbuiltins.type = lambda v: int\nclass A:\n    __eq__ = lambda s, o: True\n\ndef add(x, y):\n    return A()\n",
    "__harness_guard = lambda f: f\nclass A:\n    __eq__ = lambda s, o: True\n\ndef add(x, y):\n    return A()\n",
])
def test_subclasses_containers_and_rebound_builtins_do_not_pass(code):
    test = ("def check(candidate):\n    try:\n        assert candidate(1, 2) == 3\n    except BaseException:\n"
            "        pass\n")  # a test that swallows errors cannot swallow the guard's exit either
    out = HumanEval(execute=True, timeout_s=10).score({**TOY, "test": test}, f"```python\n{code}```")
    assert out["quality"] == 0.0 and out["reason"].startswith("returned a value that is not plain data"), out


def test_sandbox_infrastructure_failure_is_an_error_row(tmp_path, monkeypatch):
    """A broken sandbox is not a wrong program: the row is an error (quality null), retried later."""
    from hydra import compose, initialize_config_dir

    from harness.runner import run as run_harness
    from harness.store import read_rows
    from tests.conftest import ROOT

    def broken(*a, **k):
        raise sandbox.SandboxError("sandbox setup failed: injected")

    monkeypatch.setattr(sandbox, "run_sandboxed", broken)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["model=tiny_random", "task=humaneval", "task.execute=true", "task.limit=1",
                                           f"run.results_dir={tmp_path}", "run.max_new_tokens=4",
                                           "run.progress=false"])
    s = run_harness(cfg)
    (d,) = [p for p in tmp_path.iterdir() if (p / "rows.jsonl").exists()]
    (row,) = read_rows(d / "rows.jsonl")
    assert row["quality"] is None and "SandboxError: sandbox setup failed: injected" in row["error"]
    assert s["errors"] == 1


def _full_tier_offered() -> bool:
    """The machine offers the full tier: root, util-linux unshare, and mount/pid/net namespaces."""
    import subprocess

    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "true"],
                          capture_output=True).returncode == 0


def test_the_full_tier_is_reached_where_the_machine_offers_it():
    if not _full_tier_offered():
        pytest.skip("this machine offers no full tier (needs root, unshare and namespaces)")
    assert sandbox.detect_isolation(force=True).name == "full"


def test_full_tier_from_a_checkout_inside_a_0700_directory(tmp_path):
    """Cloned under a directory only its owner can enter (and its venv there): still the full tier,
    with the program running as the unprivileged uid."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    if not _full_tier_offered():
        pytest.skip("this machine offers no full tier (needs root, unshare and namespaces)")
    private = tmp_path / "private"
    (private / "checkout" / "harness").mkdir(parents=True)
    private.chmod(0o700)
    shutil.copy(ROOT / "harness" / "sandbox.py", private / "checkout" / "harness" / "sandbox.py")
    (private / "checkout" / "harness" / "__init__.py").write_text("")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(private / "venv")], check=True)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from harness.sandbox import detect_isolation, run_sandboxed;"
            "t = detect_isolation(); r = run_sandboxed('import os; print(os.getuid())', 10);"
            "print(t.name, r.uid, r.passed, r.stdout_tail.strip())")
    out = subprocess.run([str(private / "venv" / "bin" / "python"), "-c", code, str(private / "checkout")],
                         capture_output=True, text=True, timeout=120)
    name, uid, passed, seen = out.stdout.split()
    assert (name, passed) == ("full", "True"), out.stderr[-2000:]
    assert uid == seen and int(uid) >= 200000
