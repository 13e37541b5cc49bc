"""Task variants used by the runner tests (targets for Hydra `_target_` overrides), and the
runner tests' config builder."""

from pathlib import Path

from tasks.demo_arith import DemoArithmetic


class ReversedDemo(DemoArithmetic):
    """Same examples, opposite order: rows must not depend on example order."""

    def load(self):
        return super().load()[::-1]


class FlakyDemo(DemoArithmetic):
    """The second example's prompt raises: the run must record an error row and go on."""

    def prompt(self, example):
        if example["id"].startswith("demo_arith-0001"):
            raise RuntimeError("boom on purpose")
        return super().prompt(example)


class BarrierDemo(DemoArithmetic):
    """From the third example on, the prompt waits until the file named by HARNESS_TEST_BARRIER
    exists (no variable: no wait). Lets a test kill a run at a known point, whatever the speed."""

    def prompt(self, example):
        import os
        import time
        from pathlib import Path

        barrier = os.environ.get("HARNESS_TEST_BARRIER")
        if barrier and int(example["id"].split("-")[1]) >= 2:
            deadline = time.monotonic() + 600
            while not Path(barrier).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return super().prompt(example)


def cfg_for(tmp_path, *over):
    """The runner config of a test: tiny random model, demo task, rows under tmp_path."""
    from hydra import compose, initialize_config_dir

    root = Path(__file__).resolve().parent.parent
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        return compose("config", overrides=["model=tiny_random", "task=demo_arith", f"run.results_dir={tmp_path}",
                                            "run.max_new_tokens=12", "run.progress=false", *over])


def run_dirs(tmp_path):
    """Run folders (with rows) under tmp_path."""
    return sorted(p for p in Path(tmp_path).iterdir() if (p / "rows.jsonl").exists())


class CrashDemo(DemoArithmetic):
    """With HARNESS_TEST_CRASH_AT=N in the environment, the process dies (os._exit, no cleanup, like
    a killed worker) when it reaches example N; without it, the plain demo. For interrupted sweeps."""

    def prompt(self, example):
        import os

        at = os.environ.get("HARNESS_TEST_CRASH_AT")
        if at and int(example["id"].split("-")[1]) >= int(at):
            os._exit(3)
        return super().prompt(example)
