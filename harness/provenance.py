"""Where a row came from: code version, packages, machine. Collected once per run."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "transformers", "hydra-core", "datasets", "accelerate", "gguf", "numpy")
ROOT = Path(__file__).resolve().parent.parent


def git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha + ("-dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_model() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


@functools.lru_cache(maxsize=1)
def machine() -> dict:
    import torch

    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    versions["python"] = platform.python_version()
    return {"git_sha": git_sha(), "versions": versions, "cpu": cpu_model(), "gpu": gpu_model(),
            "threads": torch.get_num_threads(), "host_cores": os.cpu_count()}


def stable_hash(obj) -> str:
    """sha256 of canonical JSON (sorted keys): the identity of a config or a prompt."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_sha256(path) -> str:
    """sha256 of a file's bytes (artifacts, trained weights), read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()
