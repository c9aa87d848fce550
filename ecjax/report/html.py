"""One self-contained HTML page (figures embedded as base64 PNG; no external files)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from .tables import Table

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 0.3em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
p.note { font-size: 0.8em; color: #555; max-width: 1000px; }
ul.cols { font-size: 0.8em; color: #555; max-width: 1000px; margin: 0.2em 0; padding-left: 1.2em; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; }
figcaption { font-size: 0.85em; color: #444; }
code { background: #f5f5f5; padding: 0 0.2em; }
"""


def _table(t: Table) -> str:
    e = html.escape
    means = t.meanings or [""] * len(t.header)
    head = "".join(f'<th title="{e(m)}">{e(str(h))}</th>' if m else f"<th>{e(str(h))}</th>"
                   for h, m in zip(t.header, means))
    body = "".join("<tr>" + "".join(f"<td>{e(str(x))}</td>" for x in row) + "</tr>" for row in t.rows)
    cols = ""
    if t.meanings:
        items = "".join(f"<li><b>{e(str(h))}</b>: {e(m)}</li>" for h, m in zip(t.header, t.meanings))
        cols = f'<ul class="cols">{items}</ul>'
    note = f'<p class="note">{e(t.note)}</p>' if t.note else ""
    return (f'<h2 id="{e(t.key)}">{e(t.title)}</h2>\n<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            f"</table>{cols}{note}\n")


def render(title: str, intro: list[str], tables: list[Table], figures: list[tuple[str, Path]]) -> str:
    """`figures`: (caption, PNG path); each image is embedded in the page."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        *(f"<p>{e(p)}</p>" for p in intro),
    ]
    parts += [_table(t) for t in tables]
    if figures:
        parts.append("<h2>Figures</h2>")
        for caption, path in figures:
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{e(caption)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{e(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
