"""GSM8K's strict_match / flexible_match are lm-eval's gsm8k metrics exactly (#18 item 8): probe
strings where the harness's lenient extraction and lm-eval's rules disagree."""

import json
import os
import re
from pathlib import Path

import pytest

from tasks.answers import LM_EVAL_IGNORE, strict_final_number
from tasks.gsm8k import GSM8K

EX = {"id": "x", "question": "q", "gold": "18"}


@pytest.mark.parametrize("output,strict,flexible,lenient", [
    ("#### 18", 1, 1, 1),
    ("#### 18.00", 0, 0, 1),         # lm-eval compares strings: '18.00' != '18'
    ("#### $18", 0, 1, 1),           # the strict regex wants digits right after '#### '
    ("####18", 0, 1, 1),             # ... and exactly one space
    ("#### 18\n#### 20", 1, 0, 0),   # strict takes the FIRST match, flexible the last; lenient the last
    ("She makes $18.00 per day.", 0, 0, 1),
    ("The answer is 18.", 0, 1, 1),  # the trailing '.' is one of regexes_to_ignore
    ("#### 1,8", 1, 1, 1),           # ',' ignored on both sides
    ("#### -18", 0, 0, 0),
    ("no number", 0, 0, 0),
])
def test_probe_strings(output, strict, flexible, lenient):
    s = GSM8K().score(EX, output)
    assert (s["strict_match"], s["flexible_match"], s["quality"]) == (strict, flexible, lenient), s


def test_reference_after_lm_eval_regexes_is_our_gold():
    root = os.environ.get("HARNESS_DATA_DIR")
    files = [Path(root) / "gsm8k" / f for f in ("train.jsonl", "test.jsonl")] if root else []
    files = [f for f in files if f.exists()]
    if not files:
        pytest.skip("GSM8K data not available")
    n = 0
    for f in files:
        for line in f.read_text().splitlines():
            a = json.loads(line)["answer"]
            ref = a
            for p in LM_EVAL_IGNORE:
                ref = re.sub(p, "", ref)
            assert ref.lower() == strict_final_number(a)
            n += 1
    assert n > 8000
