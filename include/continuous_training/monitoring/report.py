"""The HTML report of a drift check: the verdict first, the window's missing dates, a summary table of every
column, the performance check, and reference-vs-window plots of each drifted feature and of the predictions (PNGs
inlined)."""

from __future__ import annotations

from html import escape
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from continuous_training.reports import PLAIN_TEXT, figure_html, number, page_head, table

_SHOWN_VALUES = 20
_VERDICT_STYLE = """
.verdict { font-size: 1.3em; font-weight: bold; padding: 0.5em 0.8em; display: inline-block; }
.drift { background: #f8d7da; } .no_drift { background: #d4edda; } .nothing_to_check { background: #e2e3e5; }
"""


def _distribution_figure(name: str, reference: dict[str, Any], window: dict[str, Any]) -> Figure:
    figure = Figure(figsize=(5, 3.2))
    axes = figure.add_subplot()
    ref_counts, win_counts = np.asarray(reference["counts"], float), np.asarray(window["counts"], float)
    ref_share = ref_counts / max(ref_counts.sum(), 1)
    win_share = win_counts / max(win_counts.sum(), 1)
    if reference["kind"] == "numeric":
        edges = reference["edges"]
        axes.step(edges, np.cumsum(ref_share)[:-1], where="post", label="reference")
        axes.step(edges, np.cumsum(win_share)[:-1], where="post", label="window")
        axes.set_ylabel("share below")
    else:
        labels = [*map(str, reference["values"][:_SHOWN_VALUES]), "other"]
        shown = min(len(reference["values"]), _SHOWN_VALUES)
        ref_shown = [*ref_share[:shown], ref_share[shown:].sum()]
        win_shown = [*win_share[:shown], win_share[shown:].sum()]
        positions = np.arange(len(labels))
        axes.bar(positions - 0.2, ref_shown, width=0.4, label="reference")
        axes.bar(positions + 0.2, win_shown, width=0.4, label="window")
        axes.set_xticks(positions, labels, rotation=45, ha="right", **PLAIN_TEXT)
        axes.set_ylabel("share")
    axes.set_title(name, **PLAIN_TEXT)
    axes.legend()
    return figure


def _columns_table(columns: dict[str, dict[str, Any]]) -> str:
    heads = ["column", "kind", "drifted", "PSI", "KS (max error)", "outside reference", "null rate (ref → window)",
             "why"]
    rows = []
    for name, column in columns.items():
        ks = "&ndash;" if column.get("ks") is None else f"{column['ks']:.4f} (±{column['ks_max_error']:.3f})"
        unseen = "&ndash;" if column.get("unseen_share") is None else f"{column['unseen_share']:.2%}"
        rows.append(
            f"<tr><td>{escape(name)}</td><td>{column['kind']}</td><td>{'yes' if column['drifted'] else 'no'}</td>"
            f"<td>{number(column.get('psi'))}</td><td>{ks}</td><td>{unseen}</td>"
            f"<td>{column['null_rate_reference']:.2%} → {column['null_rate_window']:.2%}</td>"
            f"<td>{escape('; '.join(column['reasons']))}</td></tr>")
    return table(heads, rows)


def _performance_table(performance: dict[str, Any]) -> str:
    heads = ["metric", "status", "at training (test split)", "window", "standard error", "worse by",
             "worse by at least (95%)", "labelled rows", "without label"]
    drop, lower = performance.get("drop"), performance.get("drop_lower")
    row = (f"<tr><td>{escape(performance['metric'])}</td><td>{escape(performance['status'])}</td>"
           f"<td>{number(performance.get('reference'))}</td><td>{number(performance.get('window'))}</td>"
           f"<td>{number(performance.get('standard_error'))}</td>"
           f"<td>{'&ndash;' if drop is None else f'{drop:.2%}'}</td>"
           f"<td>{'&ndash;' if lower is None else f'{lower:.2%}'}</td>"
           f"<td>{number(performance.get('rows_labelled'))}</td>"
           f"<td>{number(performance.get('rows_without_label'))}</td></tr>")
    return table(heads, [row])


def render_drift_report(result: dict[str, Any]) -> str:
    """The HTML page of one drift check result (drift.json)."""
    title = f"Drift check: {result['dataset']}, {result['checked_for']}"
    outcome = result["outcome"]
    headline = {"drift": "Drift detected", "no_drift": "No drift",
                "nothing_to_check": "Nothing to check"}[outcome]
    parts = [page_head(title, _VERDICT_STYLE), f'<p class="verdict {outcome}">{headline}</p>']
    if result["reasons"]:
        parts.append("<ul>" + "".join(f"<li>{escape(reason)}</li>" for reason in result["reasons"]) + "</ul>")
    if result["window"].get("missing"):
        parts.append(f"<p>Missing (no scored batch): {escape(', '.join(result['window']['missing']))}</p>")
    if outcome == "nothing_to_check":
        parts += [f"<p>{escape(result['message'])}</p>", "</body></html>"]
        return "\n".join(parts) + "\n"
    model, window = result["model"], result["window"]
    parts.append(f"<p>Window: {escape(', '.join(window['dates']))} ({number(result['rows'])} scored rows), scored "
                 f"by {escape(model['name'])} version {escape(model['version'])} and compared with that version's "
                 "reference.</p>")
    if window["left_out"]:
        parts.append("<p>Left out (scored by another version): " + escape(", ".join(
            f"{entry['scored_for']} (version {entry['model_version']})" for entry in window["left_out"])) + "</p>")
    parts += [
        f"<h2>Features ({len(result['drifted_features'])} of {len(result['features'])} drifted)</h2>",
        _columns_table(result["features"]),
        "<h2>Predictions</h2>", _columns_table(result["predictions"]),
        "<h2>Performance on delayed labels</h2>", _performance_table(result["performance"]),
        "<h2>Distributions</h2>", '<div class="figures">',
    ]
    plotted = {name: column for name, column in result["features"].items() if column["drifted"]}
    plotted |= result["predictions"]
    parts += [figure_html(_distribution_figure(name, column["reference_profile"], column["window_profile"]),
                          f"{name}: reference vs window") for name, column in plotted.items()]
    parts += ["</div>", "</body></html>"]
    return "\n".join(parts) + "\n"
