"""Evaluation tasks: one file per task, each with a YAML in conf/task/."""
