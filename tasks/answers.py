"""Answer extraction and comparison shared by tasks (one place, never copied per task)."""

from __future__ import annotations

import re

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
