"""Task variants used by the runner tests (targets for Hydra `_target_` overrides)."""

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
