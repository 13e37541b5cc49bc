"""Run untrusted Python (model-written code) in a contained child process.

    res = run_sandboxed(program, timeout_s=10, memory_mb=1024, sentinel="<line the program prints last>")
    res.passed, res.status, res.reason, res.isolation   # status: passed|failed|timeout|killed|exit

The code never runs in the calling process. Every run gets a fresh throwaway directory (removed
afterwards), stdin is /dev/null, stdout/stderr go to files capped by RLIMIT_FSIZE and only their
tails are read back (huge output cannot exhaust the caller's memory), the environment is minimal
(PATH, HOME and TMPDIR = the working dir, PYTHONDONTWRITEBYTECODE, LANG; no proxies, no secrets)
and the child is `python -I -B` (isolated mode, no bytecode written).

Layout: the caller starts `[unshare ...] python -I harness/sandbox.py --init <json>` in a new
session. That *init* process is our own trusted code: it sets up the namespace (below), forks the
program's process, which sets its rlimits (RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC,
RLIMIT_NOFILE, RLIMIT_CORE=0), drops privileges and execs python; init then reaps everything,
enforces the wall-clock timeout itself and reports the outcome through a pipe the program never
sees. (Limits are set in the forked child, not with Popen's preexec_fn, which is unsafe in a
threaded caller.) The caller also enforces the timeout: it SIGKILLs the whole process group and
then every process left with the run's uid / run id, and checks that none remains.

Isolation tiers, tried once per process in this order (a trial run must succeed); the tier in use
is written into every result's `isolation`, never silently weaker:

1. "full" (root + util-linux `unshare`; the case on the development/CI machines):
   `unshare --mount --net --pid --fork --mount-proc --ipc --uts --kill-child`, then inside:
   - network: a fresh network namespace with no interface up (connect fails, errno 101), so no
     access to the internet, to the host's localhost services or to other machines;
   - processes: a PID namespace whose init is ours; when it exits (program finished or timeout)
     the kernel kills every process left in it (fork bombs, daemons that called setsid());
   - filesystem: every mount is remounted read-only in a private mount namespace; the working
     directory is a size-limited tmpfs (the only writable place, gone when the run ends);
     /root (and the caller's HOME) is covered by an empty tmpfs, with only the Python
     installation bound back read-only when it lives there;
   - user: the program runs as a fresh unprivileged uid/gid (random, >= 200000, no groups) with
     no_new_privs, so it has no capabilities (cannot remount, mount, chown, read /root files,
     signal the caller) and RLIMIT_NPROC is enforced per run (as root it would not be).
   NOT isolated: the program can read world-readable files (system files, this repository, the
   shared data), see the kernel and CPU info, use CPU up to the timeout and memory up to
   RLIMIT_AS (page cache of the tmpfs is capped by its size); there is no seccomp filter, so a
   kernel exploit is out of scope. The program can read its own source, so the completion
   marker (sentinel) is a guard against accidents (sys.exit(0), os._exit(0)), not against code
   written to cheat.
2. "userns" (unprivileged user namespace, e.g. not root): `unshare --user --map-root-user --net
   --pid --fork --mount-proc`: no network, own PID namespace; the filesystem is NOT isolated (the
   program can write wherever the invoking user can) and RLIMIT_NPROC is not enforced.
3. "userns-net": `unshare --user --map-root-user --net`: no network only.
4. "none": no namespaces at all: rlimits, timeout, process-group kill (and an unprivileged uid when
   the caller is root). Stated as such in `isolation`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

PATH = "/usr/local/bin:/usr/bin:/bin"
STATUSES = ("passed", "failed", "timeout", "killed", "exit")


class SandboxError(RuntimeError):
    """The sandbox itself could not run the code (not the program's fault)."""


@dataclass
class SandboxResult:
    passed: bool
    status: str  # passed | failed | timeout | killed | exit
    reason: str
    stdout_tail: str
    stderr_tail: str
    seconds: float
    isolation: str
    returncode: int | None = None  # the program's exit code (negative: signal), None on timeout
    run_id: str = ""  # in the program's argv (prog_<run_id>.py): find leftovers with processes_of()
    uid: int | None = None  # the unprivileged uid the program ran as (None: not dropped)
    tmpdir: str = ""  # the throwaway directory (already removed)
    tier: str = ""  # the isolation tier's name: full | userns | userns-net | none


@dataclass(frozen=True)
class _Tier:
    name: str
    prefix: tuple = ()
    pidns: bool = False
    fs: bool = False  # read-only mounts, hidden /root, tmpfs working dir
    drop_uid: bool = False
    label: str = ""


# ---------------------------------------------------------------------------------- tiers
_TIER: _Tier | None = None
_TIER_LOCK = threading.Lock()


def _tiers() -> list[_Tier]:
    unshare = shutil.which("unshare")
    root = os.geteuid() == 0
    out = []
    if unshare and root:
        out.append(_Tier("full", (unshare, "--mount", "--net", "--pid", "--fork", "--mount-proc", "--ipc",
                                  "--uts", "--kill-child"), pidns=True, fs=True, drop_uid=True,
                         label="netns,pidns,ipcns,utsns,mountns,ro-fs,tmpfs-cwd,uid-drop,nproc"))
    if unshare:
        out.append(_Tier("userns", (unshare, "--user", "--map-root-user", "--net", "--pid", "--fork",
                                    "--mount-proc", "--kill-child"), pidns=True,
                         label="userns,netns,pidns; NOT isolated: filesystem (writes wherever the "
                               "invoking user can), no process-count limit"))
        out.append(_Tier("userns-net", (unshare, "--user", "--map-root-user", "--net"),
                         label="userns,netns; NOT isolated: filesystem, processes (no pid namespace), "
                               "no process-count limit"))
    drop = root and _others_can_run_python()  # without a mount namespace the interpreter must be reachable
    out.append(_Tier("none", (), drop_uid=drop,
                     label="none: NO network, pid or filesystem isolation (rlimits, timeout, process-group "
                           "kill only" + (", unprivileged uid" if drop else "") + ")"))
    return out


def program_python() -> str:
    """The interpreter that runs programs: the BASE Python (its real file), not a virtual
    environment's link to it. Programs get the standard library only (`-I`), and the base
    installation can be exposed inside the sandbox wherever the checkout and its venv live."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _closed_ancestors(path: str) -> list[str]:
    """Directories above `path` that other users cannot traverse (mode without o+x)."""
    out, p = [], os.path.dirname(path)
    while p not in ("/", ""):
        try:
            if not os.stat(p).st_mode & 0o001:
                out.append(p)
        except OSError:
            pass
        p = os.path.dirname(p)
    return out[::-1]


def _others_can_run_python() -> bool:
    """Can an unprivileged uid reach the program interpreter and its installation (no 0700 directory on the way)?"""
    for top in {program_python(), os.path.realpath(sys.base_prefix)}:
        p = top
        while True:
            try:
                if not os.stat(p).st_mode & 0o001:
                    return False
            except OSError:
                return False
            if p == "/":
                break
            p = os.path.dirname(p)
    return True


def detect_isolation(force: bool = False) -> _Tier:
    """The strongest tier that works here (a trial run each), chosen once per process."""
    global _TIER
    with _TIER_LOCK:
        if _TIER is not None and not force:
            return _TIER
        errors = []
        for tier in _tiers():
            try:
                mark = "sandbox-ok-" + secrets.token_hex(4)
                res = _run(tier, f"print({mark!r})\n", 20.0, 256, sentinel=mark)
                if res.passed:
                    _TIER = tier
                    if tier.name != "full":
                        import logging

                        logging.getLogger(__name__).warning("code sandbox: weaker isolation in use: %s "
                                                            "(earlier tiers: %s)", tier.label, errors)
                    return tier
                errors.append(f"{tier.name}: {res.status} {res.reason} {res.stderr_tail[-300:]}")
            except (OSError, SandboxError) as e:
                errors.append(f"{tier.name}: {e}")
        raise SandboxError("no way to run code in a child process here: " + "; ".join(errors))


def isolation_label() -> str:
    return detect_isolation().label


# ---------------------------------------------------------------------------------- public API
def run_sandboxed(code: str, timeout_s: float, memory_mb: int = 1024, *, sentinel: str | None = None,
                  file_size_mb: int = 10, max_procs: int = 64, disk_mb: int = 64, tail_bytes: int = 65536,
                  isolation: str = "auto") -> SandboxResult:
    """Run `code` as a Python program in the sandbox; never in this process.

    passed = exit code 0, and (when `sentinel` is given) the last stdout line is the sentinel: the
    caller appends `print(sentinel)` after its tests, so a program that exits early with code 0
    (sys.exit(0), os._exit(0)) is judged "failed" ("exited before the tests finished").
    isolation: "auto" (strongest available) or a tier name (full, userns, userns-net, none).
    Raises SandboxError when the sandbox itself fails (a broken setup, not a wrong program).
    """
    if isolation == "auto":
        tier = detect_isolation()
    else:
        tier = next((t for t in _tiers() if t.name == isolation), None)
        if tier is None:
            raise SandboxError(f"isolation tier '{isolation}' is not available here "
                               f"(available: {', '.join(t.name for t in _tiers())})")
    return _run(tier, code, float(timeout_s), int(memory_mb), sentinel=sentinel, file_size_mb=file_size_mb,
                max_procs=max_procs, disk_mb=disk_mb, tail_bytes=tail_bytes)


def processes_of(uid: int | None = None, marker: str | None = None) -> list[int]:
    """Live (non-zombie) pids whose real uid is `uid` or whose argv contains `marker`."""
    out = []
    me = os.getpid()
    mk = marker.encode() if marker else None
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/status", "rb") as f:
                st = f.read().decode("ascii", "replace")
            if "\nState:\tZ" in st:
                continue
            hit = False
            if uid is not None:
                m = re.search(r"\nUid:\s+(\d+)", st)
                hit = bool(m and int(m.group(1)) == uid)
            if not hit and mk:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    hit = mk in f.read()
            if hit:
                out.append(int(d))
        except OSError:
            continue
    return out


# ---------------------------------------------------------------------------------- the caller side
def _pick_uid() -> int:
    import pwd

    for _ in range(100):
        uid = 200_000 + secrets.randbelow(1_000_000)
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if not processes_of(uid=uid):
                return uid
    raise SandboxError("could not find a free uid for the sandbox")


def _is_under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _tail(path: str, n: int) -> str:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - n))
            return f.read(n).decode("utf-8", "replace")
    except OSError:
        return ""


def _rmtree(path: str) -> None:
    def retry(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
        except OSError:
            pass
        try:
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=retry)


def _sweep(uid: int | None, marker: str, wait_s: float = 5.0) -> list[int]:
    """SIGKILL every process left from this run, until none remains (returns survivors)."""
    deadline = time.monotonic() + wait_s
    while True:
        pids = processes_of(uid=uid, marker=marker)
        if not pids or time.monotonic() > deadline:
            return pids
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.02)


def _exception_reason(err: str) -> str | None:
    if "Traceback (most recent call last)" not in err:
        return None
    lines = [ln for ln in err.splitlines() if ln.strip()]
    exc = next((ln for ln in reversed(lines) if not ln[0].isspace() and not ln.startswith("Traceback")
                and not ln.startswith("Exception ignored")), None)
    if exc is None:
        return None
    if exc.strip() == "AssertionError":  # a bare assert: say which line failed
        for i in range(len(lines) - 1, 0, -1):
            m = re.match(r'\s+File "[^"]*", line (\d+)', lines[i - 1])
            if m and lines[i].startswith("    ") and not lines[i].strip().startswith("^"):
                exc = f"AssertionError at line {m.group(1)}: {lines[i].strip()}"
                break
    return exc[:400]


def _run(tier: _Tier, code: str, timeout_s: float, memory_mb: int, *, sentinel: str | None = None,
         file_size_mb: int = 10, max_procs: int = 64, disk_mb: int = 64, tail_bytes: int = 65536) -> SandboxResult:
    run_id = secrets.token_hex(8)
    uid = _pick_uid() if tier.drop_uid else None
    tmp = tempfile.mkdtemp(prefix=f"sandbox-{run_id}-")
    t0 = time.monotonic()
    proc = None
    r = w = -1
    timed_out = False
    try:
        os.chmod(tmp, 0o711)  # traversable (absolute paths to the cwd work), not listable
        work = os.path.join(tmp, "work")
        os.mkdir(work, 0o700)
        if uid is not None and not tier.fs:
            os.chown(work, uid, uid)
        progname = f"prog_{run_id}.py"
        prog_host = os.path.join(tmp, progname)
        with open(prog_host, "w", encoding="utf-8") as f:
            f.write(code)
        hide, keep = [], []
        python = program_python()
        base = os.path.realpath(sys.base_prefix)
        if tier.fs:
            # cover /root, HOME and every directory the unprivileged uid could not traverse on the way
            # to the base Python (a checkout or installation under a 0700 directory), then bind the
            # installation back read-only: the full tier works wherever things live
            for h in ("/root", os.path.expanduser("~"), *_closed_ancestors(base), *_closed_ancestors(python)):
                h = os.path.realpath(h)
                if h != "/" and h not in hide and os.path.isdir(h) and not _is_under(tmp, h) \
                        and not any(_is_under(h, x) for x in hide):
                    hide.append(h)
            for k in sorted({base, os.path.dirname(python)}, key=len):
                if any(_is_under(k, h) for h in hide) and not any(_is_under(k, x) for x in keep):
                    keep.append(k)
        env = {"PATH": PATH, "HOME": work, "TMPDIR": work, "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
        r, w = os.pipe()
        cpu = int(timeout_s) + 2
        cfg = {"prog_host": prog_host, "progname": progname, "work": work, "uid": uid, "fs": tier.fs,
               "pidns": tier.pidns, "hide": hide, "keep": keep, "disk_mb": disk_mb, "timeout_s": timeout_s,
               "status_fd": w, "python": python, "env": env,
               "limits": {"cpu": cpu, "as_mb": memory_mb, "fsize_mb": file_size_mb, "nproc": max_procs,
                          "nofile": 256}}
        cmd = [*tier.prefix, sys.executable, "-I", "-B", os.path.abspath(__file__), "--init", json.dumps(cfg)]
        out_path, err_path = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        with open(out_path, "wb") as fo, open(err_path, "wb") as fe:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, cwd=work, env=env,
                                    start_new_session=True, pass_fds=(w,), close_fds=True)
        os.close(w)
        w = -1
        try:
            proc.wait(timeout=timeout_s + 3.0)  # init enforces timeout_s itself; this is the backstop
        except subprocess.TimeoutExpired:
            timed_out = True
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
        left = _sweep(uid, run_id)
        seconds = time.monotonic() - t0
        reports = _read_reports(r)
        out, err = _tail(out_path, tail_bytes), _tail(err_path, tail_bytes)
        label = tier.label
        if hide:
            label += ",hide=" + ":".join(hide)
        if left:
            label += f"; WARNING: {len(left)} process(es) could not be killed"
        setup = next((x["setup"] for x in reports if "setup" in x), None)
        if setup and setup.get("ro_failed"):
            label += "; NOT read-only: " + ",".join(setup["ro_failed"])
        res = SandboxResult(False, "failed", "", out, err, seconds, label, None, run_id, uid, tmp, tier.name)
        _classify(res, reports, timed_out, timeout_s, sentinel, proc.returncode)
        return res
    finally:
        if proc is not None and proc.poll() is None:  # interrupted (KeyboardInterrupt, ...): kill it all
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
            _sweep(uid, run_id)
        for fd in (r, w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        _rmtree(tmp)


def _read_reports(r: int) -> list[dict]:
    os.set_blocking(r, False)
    buf = b""
    while len(buf) < 1 << 20:
        try:
            chunk = os.read(r, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        buf += chunk
    out = []
    for line in buf.decode("utf-8", "replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def _classify(res: SandboxResult, reports: list[dict], timed_out: bool, timeout_s: float,
              sentinel: str | None, init_rc: int | None) -> None:
    for rep in reports:
        if "error" in rep:
            raise SandboxError(f"sandbox setup failed: {rep['error']}")
    end = next((x for x in reports if "exit" in x or "timeout" in x), None)
    if timed_out or (end and end.get("timeout")):
        res.status, res.reason = "timeout", f"timed out after {timeout_s:g} s (wall clock)"
        return
    if end is None:
        raise SandboxError(f"sandbox init ended without a report (exit {init_rc}); "
                           f"stderr: {res.stderr_tail[-500:]!r}")
    rc = end["exit"]
    res.returncode = rc
    if rc < 0:
        sig = -rc
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        if sig == signal.SIGXCPU:
            res.status, res.reason = "timeout", "CPU time limit exceeded (SIGXCPU)"
        else:
            hint = {signal.SIGKILL: " (memory or process limit?)", signal.SIGXFSZ: " (file size limit)",
                    signal.SIGSEGV: " (crash, possibly out of memory)"}.get(sig, "")
            res.status, res.reason = "killed", f"killed by {name}{hint}"
        return
    if rc == 0:
        lines = [ln for ln in res.stdout_tail.splitlines() if ln.strip()]
        if sentinel is None or (lines and lines[-1].strip() == sentinel):
            res.passed, res.status, res.reason = True, "passed", ""
        else:
            res.status, res.reason = "failed", "exited before the tests finished (exit code 0, no completion marker)"
        return
    exc = _exception_reason(res.stderr_tail)
    if exc is not None:
        res.status, res.reason = "failed", exc
    else:
        last = next((ln for ln in reversed(res.stderr_tail.splitlines()) if ln.strip()), "")
        res.status = "exit"
        res.reason = f"exited with code {rc} before the tests finished" + (f": {last[:200]}" if last else "")


# ---------------------------------------------------------------------------------- the init side
# Runs as `python -I -B sandbox.py --init <json>` inside the namespaces. Standard library only.
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC = 32, 1024, 2048, 4096, 16384
MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
MNT_DETACH = 2
_OPT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
              "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}


def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def _mount(libc, src, target, fstype, flags, data=None):
    import ctypes

    enc = lambda s: s.encode() if isinstance(s, str) else s  # noqa: E731
    if libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"mount {src} -> {target} ({fstype}): {os.strerror(e)}")


def _mountinfo() -> list[tuple[str, int]]:
    """(mount point, flags to keep) for every mount, in mount order, deduplicated."""
    seen, out = set(), []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split()
            mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
            flags = 0
            for o in parts[5].split(","):
                flags |= _OPT_FLAGS.get(o, 0)
            if mp not in seen:
                seen.add(mp)
                out.append((mp, flags))
    return out


def _setup_fs(cfg: dict, libc, src: bytes) -> dict:
    work, uid = cfg["work"], cfg["uid"]
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    owner = f",uid={uid},gid={uid}" if uid is not None else ""
    _mount(libc, "tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={int(cfg['disk_mb'])}m,nr_inodes=16384,mode=0700{owner}")
    stage = os.path.join(work, ".stage")
    os.mkdir(stage, 0o700)
    staged = []
    for i, k in enumerate(cfg["keep"]):  # e.g. the Python installation under /root
        s = os.path.join(stage, str(i))
        os.mkdir(s)
        _mount(libc, k, s, None, MS_BIND | MS_REC)
        staged.append((s, k))
    for h in cfg["hide"]:
        _mount(libc, "tmpfs", h, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=1024,mode=0755")
    for s, k in staged:
        os.makedirs(k, mode=0o755, exist_ok=True)
        _mount(libc, s, k, None, MS_BIND | MS_REC)
        libc.umount2(s.encode(), MNT_DETACH)
        os.rmdir(s)
    os.rmdir(stage)
    with open(os.path.join(work, cfg["progname"]), "wb") as f:
        f.write(src)
    failed = []
    for mp, keep_flags in _mountinfo():
        if mp == work:
            continue
        try:
            _mount(libc, None, mp, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep_flags)
        except OSError as e:
            failed.append(f"{mp} ({e.strerror})")
    if any(f.startswith("/ (") for f in failed):
        raise OSError(f"cannot make / read-only: {failed}")
    # mounts that could not be remounted count as failures unless they are kernel pseudo-filesystems
    return {"ro_failed": [f for f in failed if not f.startswith(("/proc", "/sys"))], "ro_ignored": failed}


def _init_main(cfg: dict) -> None:
    import resource

    fd = cfg["status_fd"]

    def send(obj):
        os.write(fd, (json.dumps(obj) + "\n").encode())

    os.umask(0o022)
    try:
        with open(cfg["prog_host"], "rb") as f:
            src = f.read()
        libc = _libc()
        setup = {}
        if cfg["fs"]:
            setup = _setup_fs(cfg, libc, src)
        else:
            with open(os.path.join(cfg["work"], cfg["progname"]), "wb") as f:
                f.write(src)
        send({"setup": setup})
    except Exception as e:  # the sandbox could not be built: report, run nothing
        send({"error": f"{e.__class__.__name__}: {e}"})
        os._exit(0)

    lim = cfg["limits"]
    pid = os.fork()
    if pid == 0:  # the program's process
        try:
            os.set_inheritable(fd, False)  # closed by a successful exec; written on failure
            os.chdir(cfg["work"])
            if not cfg["pidns"]:
                os.setpgid(0, 0)
            mb = 1024 * 1024
            for res_, v in ((resource.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1)),
                            (resource.RLIMIT_AS, (lim["as_mb"] * mb,) * 2),
                            (resource.RLIMIT_FSIZE, (lim["fsize_mb"] * mb,) * 2),
                            (resource.RLIMIT_NPROC, (lim["nproc"],) * 2),
                            (resource.RLIMIT_NOFILE, (lim["nofile"],) * 2),
                            (resource.RLIMIT_CORE, (0, 0))):
                resource.setrlimit(res_, v)
            if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS: setuid binaries do not elevate
                raise OSError("prctl(PR_SET_NO_NEW_PRIVS) failed")
            if cfg["uid"] is not None:
                os.setgroups([])
                os.setgid(cfg["uid"])
                os.setuid(cfg["uid"])
            py = cfg["python"]
            os.execve(py, [py, "-I", "-B", cfg["progname"]], cfg["env"])
        except BaseException as e:  # noqa: BLE001
            try:
                send({"error": f"could not start the program: {e.__class__.__name__}: {e}"})
            finally:
                os._exit(127)

    def on_timeout(*_):
        try:
            send({"timeout": True})
        finally:
            if not cfg["pidns"]:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            os._exit(0)  # with a PID namespace, init exiting kills everything left in it

    signal.signal(signal.SIGALRM, on_timeout)
    signal.setitimer(signal.ITIMER_REAL, cfg["timeout_s"])
    status = None
    while status is None:  # reap everything (orphans are re-parented to us) until the program ends
        try:
            p, st = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if p == pid:
            status = os.waitstatus_to_exitcode(st)
    signal.setitimer(signal.ITIMER_REAL, 0)
    if not cfg["pidns"]:
        try:
            os.killpg(pid, signal.SIGKILL)  # whatever the program left behind in its group
        except OSError:
            pass
    send({"exit": status if status is not None else -signal.SIGKILL})
    os._exit(0)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--init":
    _init_main(json.loads(sys.argv[2]))
