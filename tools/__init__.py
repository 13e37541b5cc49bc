"""Command-line tools that build artifacts: acceptance heads, n-gram LMs, step profiles,
ParallelBench data. Each is `python -m tools.<name> --help`."""
