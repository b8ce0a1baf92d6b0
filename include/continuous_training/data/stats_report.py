"""A self-contained HTML page from a stats.json document: tables, histograms, top values, correlation heatmaps."""

from __future__ import annotations

import math
from html import escape

import numpy as np
from matplotlib.figure import Figure

from continuous_training.reports import PLAIN_TEXT, figure_html, number, page_head, table


def _histogram(name: str, histogram: dict) -> Figure:
    figure = Figure(figsize=(4.5, 3))
    axes = figure.add_subplot()
    edges, counts = histogram["edges"], histogram["counts"]
    if counts:
        axes.stairs(counts, edges, fill=True, alpha=0.7)
    else:
        axes.text(0.5, 0.5, "no values", ha="center", va="center", transform=axes.transAxes)
    axes.set_title(name, **PLAIN_TEXT)
    axes.set_ylabel("rows")
    return figure


def _top_values(name: str, top_values: list[dict]) -> Figure:
    labels = [str(entry["value"]) for entry in top_values][::-1]
    counts = [entry["count"] for entry in top_values][::-1]
    figure = Figure(figsize=(4.5, 0.6 + 0.25 * max(len(labels), 1)))
    axes = figure.add_subplot()
    axes.barh(range(len(labels)), counts)
    axes.set_yticks(range(len(labels)), labels, **PLAIN_TEXT)
    axes.set_title(name, **PLAIN_TEXT)
    axes.set_xlabel("rows")
    return figure


def _heatmap(title: str, columns: list[str], matrix: list[list[float | None]]) -> Figure:
    size = len(columns)
    values = np.array([[math.nan if v is None else v for v in row] for row in matrix], dtype=float)
    figure = Figure(figsize=(2 + 0.6 * size, 1.5 + 0.6 * size))
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="coolwarm", vmin=-1, vmax=1)
    axes.set_xticks(range(size), columns, rotation=45, ha="right", **PLAIN_TEXT)
    axes.set_yticks(range(size), columns, **PLAIN_TEXT)
    if size <= 12:
        for i in range(size):
            for j in range(size):
                text = "n/a" if math.isnan(values[i, j]) else f"{values[i, j]:.2f}"
                axes.text(j, i, text, ha="center", va="center", fontsize=8)
    figure.colorbar(image, ax=axes)
    axes.set_title(title)
    return figure


def _numeric_table(columns: dict[str, dict]) -> str:
    heads = ["column", "count", "nulls", "mean", "std", "min", "p25", "p50", "p75", "max", "skewness", "kurtosis"]
    rows = []
    for name, column in columns.items():
        quantiles = column["quantiles"]
        cells = [column["count"], column["nulls"], column["mean"], column["std"], column["min"],
                 quantiles["p25"], quantiles["p50"], quantiles["p75"], column["max"],
                 column["skewness"], column["kurtosis"]]
        rows.append(f"<tr><td>{escape(name)}</td>" + "".join(f"<td>{number(c)}</td>" for c in cells) + "</tr>")
    return table(heads, rows)


def _categorical_table(columns: dict[str, dict]) -> str:
    heads = ["column", "count", "nulls", "distinct", "most frequent", "its count"]
    rows = []
    for name, column in columns.items():
        top = column["top_values"][0] if column["top_values"] else {"value": None, "count": None}
        value = "&ndash;" if top["value"] is None else escape(str(top["value"]))
        rows.append(f"<tr><td>{escape(name)}</td><td>{number(column['count'])}</td>"
                    f"<td>{number(column['nulls'])}</td><td>{number(column['distinct'])}</td>"
                    f"<td>{value}</td><td>{number(top['count'])}</td></tr>")
    return table(heads, rows)


def render_report(stats: dict) -> str:
    """The HTML page for a stats.json document; figures are drawn from its aggregates, PNGs inlined as base64."""
    numeric = {name: c for name, c in stats["columns"].items() if c["type"] == "numeric"}
    categorical = {name: c for name, c in stats["columns"].items() if c["type"] == "categorical"}
    label = stats.get("label")
    title = f"Dataset profile: {stats['dataset']}"
    parts = [
        page_head(title),
        f"<p>{number(stats['rows'])} rows"
        + (f"; label: <code>{escape(label)}</code>" if label else "") + ".</p>",
    ]
    if numeric:
        parts += ["<h2>Numeric columns</h2>", _numeric_table(numeric), '<div class="figures">']
        parts += [figure_html(_histogram(name, c["histogram"]), f"histogram of {name}") for name, c in numeric.items()]
        parts.append("</div>")
    if categorical:
        parts += ["<h2>Categorical columns</h2>", _categorical_table(categorical), '<div class="figures">']
        parts += [figure_html(_top_values(name, c["top_values"]), f"top values of {name}")
                  for name, c in categorical.items()]
        parts.append("</div>")
    correlation = stats["correlation"]
    if correlation["pearson"]["columns"]:
        parts += [
            "<h2>Correlations of the numeric features</h2>",
            f"<p>Over the {number(correlation['rows_used'])} rows where every numeric feature is set.</p>",
            '<div class="figures">',
            *(figure_html(_heatmap(method.capitalize(), correlation[method]["columns"], correlation[method]["matrix"]),
                     f"{method} correlation") for method in ("pearson", "spearman")),
            "</div>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
