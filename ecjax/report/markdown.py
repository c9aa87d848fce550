"""Markdown rendering of the report (tables as pipe tables, figures as relative PNG links)."""

from __future__ import annotations

from .tables import Table


def _cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def table(t: Table) -> str:
    lines = [f"## {t.title}", ""]
    lines.append("| " + " | ".join(_cell(h) for h in t.header) + " |")
    lines.append("|" + "|".join("---" for _ in t.header) + "|")
    for row in t.rows:
        lines.append("| " + " | ".join(_cell(x) for x in row) + " |")
    if t.meanings:
        lines += ["", "Columns:", ""]
        lines += [f"- **{_cell(h)}**: {_cell(m)}" for h, m in zip(t.header, t.meanings)]
    if t.note:
        lines += ["", t.note]
    return "\n".join(lines) + "\n"


def render(title: str, intro: list[str], tables: list[Table], figures: list[tuple[str, str]]) -> str:
    """`figures`: (caption, file name relative to the Markdown file)."""
    parts = [f"# {title}", "", *intro, ""]
    parts += [table(t) for t in tables]
    if figures:
        parts.append("## Figures\n")
        for caption, name in figures:
            parts.append(f"![{caption}]({name})\n\n*{caption}*\n")
    return "\n".join(parts)
