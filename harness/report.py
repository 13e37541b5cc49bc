"""A self-contained HTML report of the leaderboard: sortable per-task tables, the plots, and a
per-example view of every strategy's output beside a reference, with the differences marked.

Written by `make leaderboard` (harness.leaderboard) as <out>/report.html. One file, no network:
the plots are embedded as PNG data, the sorting script is inline, the styles are inline.
"""

from __future__ import annotations

import base64
import difflib
import html
import math
from pathlib import Path

MAX_EXAMPLES = 40  # per task in the per-example view (the full rows stay in the run folders)
SHOWN = ["strategy", "model", "dtype", "max_new_tokens", "n", "errors", "quality", "quality_ci_low", "quality_ci_high",
         "tokens_per_s", "speedup", "mat", "forwards_per_token", "run"]

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#222;max-width:1400px}
h1{font-size:1.5rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f2f4f7;cursor:pointer;user-select:none} th.sorted-asc::after{content:" \\25B2"}
th.sorted-desc::after{content:" \\25BC"} td.num{text-align:right;font-variant-numeric:tabular-nums}
img.plot{max-width:640px;border:1px solid #eee;margin:.5rem 1rem .5rem 0}
.ex{border:1px solid #ddd;border-radius:4px;margin:.6rem 0;padding:.4rem .6rem}
.ex pre{white-space:pre-wrap;margin:.2rem 0;font-size:.8rem}
ins{background:#d4f7d4;text-decoration:none} del{background:#f9d2d2}
.meta{color:#666;font-size:.8rem} .good{color:#17743b} .bad{color:#b3261e}
"""

SCRIPT = """
function cellValue(td){const v=td.getAttribute('data-v');if(v!==null&&v!==''&&!isNaN(+v))return +v;return td.textContent.trim().toLowerCase();}
function sortTable(th){const table=th.closest('table');const idx=[...th.parentNode.children].indexOf(th);
 const asc=!th.classList.contains('sorted-asc');table.querySelectorAll('th').forEach(h=>h.classList.remove('sorted-asc','sorted-desc'));
 th.classList.add(asc?'sorted-asc':'sorted-desc');const body=table.tBodies[0];const rows=[...body.rows];
 rows.sort((a,b)=>{const x=cellValue(a.cells[idx]),y=cellValue(b.cells[idx]);if(x===y)return 0;
  if(typeof x==='number'&&typeof y==='number')return asc?x-y:y-x;return asc?(''+x).localeCompare(''+y):(''+y).localeCompare(''+x);});
 rows.forEach(r=>body.appendChild(r));}
document.querySelectorAll('table.sortable th').forEach(th=>th.addEventListener('click',()=>sortTable(th)));
window.addEventListener('load',()=>{const imgs=[...document.images];
 document.body.setAttribute('data-plots-rendered',imgs.filter(i=>i.complete&&i.naturalWidth>0).length);
 document.body.setAttribute('data-tables',document.querySelectorAll('table.sortable tbody tr').length);});
"""


def _num(v) -> str | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return None if isinstance(v, float) and math.isnan(v) else repr(float(v))
    return None


def _cell(v) -> str:
    n = _num(v)
    if n is not None:
        text = f"{v:.3f}" if isinstance(v, float) else str(v)
        return f'<td class="num" data-v="{n}">{html.escape(text)}</td>'
    text = "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    return f"<td>{html.escape(text)}</td>"


def table_html(df) -> str:
    cols = [c for c in SHOWN if c in df.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(_cell(rec[c]) for c in cols) + "</tr>" for rec in df.to_dict("records"))
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def diff_html(ref: str, other: str) -> str:
    """Word-level difference of `other` against `ref`: inserted words <ins>, removed words <del>."""
    a, b = ref.split(" "), other.split(" ")
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(html.escape(" ".join(a[i1:i2])))
        if op in ("delete", "replace"):
            out.append(f"<del>{html.escape(' '.join(a[i1:i2]))}</del>")
        if op in ("insert", "replace"):
            out.append(f"<ins>{html.escape(' '.join(b[j1:j2]))}</ins>")
    return " ".join(x for x in out if x)


def examples_html(task_runs: list[dict]) -> str:
    """Per example: the reference run's output (greedy where there is one), every other run's output
    with its differences from it, and each row's quality."""
    if not task_runs:
        return ""
    ref = next((r for r in task_runs if r["meta"].get("strategy") == "greedy"), task_runs[0])
    others = [r for r in task_runs if r is not ref]
    by_run = [{(row.get("example_id"), row.get("sample", 0)): row for row in r["rows"]} for r in [ref] + others]
    keys = [k for k in by_run[0] if k[1] in (0, None)][:MAX_EXAMPLES]
    parts = [f'<p class="meta">Reference: <b>{html.escape(_label(ref))}</b>; other outputs show words '
             f'<ins>added</ins> and <del>removed</del> relative to it. First {len(keys)} examples.</p>']
    for key in keys:
        base = by_run[0][key]
        base_text = base.get("output_text") or ""
        items = [f"<div class='meta'>{html.escape(_label(ref))} · {_quality(base)}</div><pre>{html.escape(base_text)}</pre>"]
        for r, rows in zip(others, by_run[1:]):
            row = rows.get(key)
            if row is None:
                items.append(f"<div class='meta'>{html.escape(_label(r))}: no row</div>")
                continue
            text = row.get("output_text") or ""
            same = " (identical)" if text == base_text else ""
            items.append(f"<div class='meta'>{html.escape(_label(r))} · {_quality(row)}{same}</div>"
                         f"<pre>{diff_html(base_text, text) if not same else html.escape(text)}</pre>")
        parts.append(f"<div class='ex'><b>example {html.escape(str(key[0]))}</b>{''.join(items)}</div>")
    return "".join(parts)


def _label(run: dict) -> str:
    m = run["meta"]
    return f"{m.get('strategy')} / {m.get('model_name') or m.get('model')} ({run['dir'].name})"


def _quality(row: dict) -> str:
    if row.get("error"):
        return f"<span class='bad'>error: {html.escape(str(row['error'])[:120])}</span>"
    q = row.get("quality")
    return "quality n/a" if q is None else f"quality {q:.3g}"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img class="plot" alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def write_report(sections: list[dict], path: Path, note: str) -> Path:
    """sections: one per task: {task, label, df, plots: [png paths], runs: [run dicts]}."""
    toc = "".join(f'<li><a href="#t{i}">{html.escape(str(s["task"]))}</a> ({len(s["df"])} runs)</li>'
                  for i, s in enumerate(sections))
    body = [f"<h1>Decoding leaderboard</h1><p class='meta'>{html.escape(note)} Click a column header to sort.</p>"
            f"<ul>{toc}</ul>"]
    for i, s in enumerate(sections):
        body.append(f'<h2 id="t{i}">{html.escape(str(s["task"]))} <span class="meta">quality: '
                    f'{html.escape(s["label"])}</span></h2>')
        body.append(table_html(s["df"]))
        body.append("".join(_img(p) for p in s["plots"] if p.exists()))
        body.append(f"<details><summary>Outputs side by side</summary>{examples_html(s['runs'])}</details>")
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Decoding leaderboard</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}<script>{SCRIPT}</script></body></html>")
    path.write_text(page)
    return path
