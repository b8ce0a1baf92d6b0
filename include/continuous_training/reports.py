"""The pieces both HTML reports (dataset stats, drift checks) are made of: page head and style, numbers, tables and
inline figures."""

from __future__ import annotations

import base64
import io
from html import escape
from typing import Any

from matplotlib.figure import Figure

PLAIN_TEXT = {"parse_math": False}
STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; }
figcaption { font-size: 0.9em; text-align: center; }
"""


def number(value: Any) -> str:
    """A count with thousands separators, other numbers to 6 significant digits, a dash for None."""
    if value is None:
        return "&ndash;"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.6g}"


def figure_html(figure: Figure, caption: str) -> str:
    """A matplotlib figure as an inline PNG with its caption."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{png}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def table(heads: list[str], rows: list[str]) -> str:
    """An HTML table of header cells and pre-rendered `<tr>` rows."""
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>" + "".join(rows) + "</table>"


def page_head(title: str, extra_style: str = "") -> str:
    """The start of a self-contained page up to and including its `<h1>` title."""
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{escape(title)}</title>\n"
            f"<style>{STYLE}{extra_style}</style></head><body><h1>{escape(title)}</h1>")
