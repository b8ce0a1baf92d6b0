"""Profile a dataset with Spark into stats.json (the drift reference of later runs) and report.html."""

from __future__ import annotations

import datetime as dt
import json
import math
from functools import reduce
from operator import add
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.stat import Correlation
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from continuous_training.data.report import render_report
from continuous_training.errors import PipelineError
from continuous_training.monitoring.profile import reference_profiles
from continuous_training.spec import DatasetSpec

QUANTILES: dict[str, float] = {
    "p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99,
}
HISTOGRAM_BINS = 20
TOP_K = 20
QUANTILE_ACCURACY = 10_000


def _quoted(name: str) -> Column:
    """A column reference that takes the name verbatim (spaces, dots, parentheses, backticks)."""
    return F.col(f"`{name.replace('`', '``')}`")


def profiled_columns(spec: DatasetSpec) -> list[tuple[str, str]]:
    """(column, "numeric" | "categorical") for the numeric features, categorical features, then the label."""
    label_kind = "numeric" if spec.task == "regression" else "categorical"
    return [
        *((column, "numeric") for column in spec.features.numeric),
        *((column, "categorical") for column in spec.features.categorical),
        (spec.label, label_kind),
    ]


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _json_value(value: Any) -> Any:
    """A categorical value as JSON: booleans, integers and strings as they are, other types as text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


def _histogram_edges(low: float, high: float, bins: int) -> list[float]:
    """Equal-width edges over [low, high], as numpy.histogram builds them (a constant column gets ±0.5)."""
    if low == high:
        low, high = low - 0.5, high + 0.5
    return [float(edge) for edge in np.linspace(low, high, bins + 1)]


def _bin_index(value: Column, edges: list[float]) -> Column:
    """Bin of a value: bins are [e_i, e_i+1) and the last one also holds the max, as in numpy.histogram."""
    return reduce(add, [(value >= F.lit(edge)).cast("int") for edge in edges[1:-1]], F.lit(0))


def _correlation_matrix(vectors: DataFrame, method: str, size: int) -> list[list[float | None]]:
    matrix = Correlation.corr(vectors, "features", method).head()[0].toArray()
    return [[_finite(matrix[i][j]) for j in range(size)] for i in range(size)]


def compute_stats(df: DataFrame, spec: DatasetSpec, bins: int = HISTOGRAM_BINS, top_k: int = TOP_K) -> dict:
    """Profile the spec's features and label in a few Spark passes; returns the stats.json document.

    Pass 1 is one aggregation: row count; for numeric columns (cast to double, NaN counted as null) the
    non-null count, mean, sample standard deviation (ddof=1, null for fewer than two values), min, max, sum,
    population skewness and population excess kurtosis (the biased estimators: scipy.stats.skew(bias=True)
    and scipy.stats.kurtosis(fisher=True, bias=True); null for a constant column) and approximate quantiles
    (percentile_approx, relative rank error 1/QUANTILE_ACCURACY, each a value of the column); for categorical
    columns the non-null count and the exact distinct count. Pass 2 counts `bins` equal-width histogram bins
    for all numeric columns at once over [min, max] (bins [e_i, e_i+1), the last closed, as numpy.histogram;
    a constant column gets [v-0.5, v+0.5]; a column with no values gets empty edges and counts). Top values
    (at most `top_k`, nulls excluded, ties by value) come from one groupBy per categorical column. Pearson and
    Spearman correlations (ranks averaged over ties) over the numeric features use pyspark.ml.stat.Correlation
    on the rows where every numeric feature is set (`rows_used`); the diagonal is 1 and entries that are
    undefined (a constant column, fewer than two rows) are null. `drift_reference` holds each column's drift
    profile (`continuous_training.monitoring.profile`): the bins drift checks compare later windows on. Only
    aggregates reach the driver; the result is strict JSON (NaN and infinities become null).
    """
    missing = [column for column, _ in profiled_columns(spec) if column not in df.columns]
    if missing:
        raise PipelineError(f"stats for {spec.name}: columns {missing} are not in the data ({df.columns})")
    columns = profiled_columns(spec)
    numeric = [(name, f"n{i}") for i, (name, kind) in enumerate(columns) if kind == "numeric"]
    categorical = [(name, f"c{i}") for i, (name, kind) in enumerate(columns) if kind == "categorical"]
    features = [alias for name, alias in numeric if name in spec.features.numeric]

    prepared = df.select(
        *(F.nanvl(_quoted(name).cast("double"), F.lit(None).cast("double")).alias(alias) for name, alias in numeric),
        *(_quoted(name).alias(alias) for name, alias in categorical),
    )
    first = _first_pass(prepared, numeric, categorical, features)
    rows = first["rows"]
    if rows == 0:
        raise PipelineError(f"stats for {spec.name}: the input has no rows, nothing to profile")

    result: dict[str, dict] = {}
    for name, alias in numeric:
        quantiles = first[f"{alias}_quantiles"]
        result[name] = {
            "type": "numeric",
            "count": first[f"{alias}_count"],
            "nulls": rows - first[f"{alias}_count"],
            **{stat: _finite(first[f"{alias}_{stat}"]) for stat in
               ("mean", "std", "min", "max", "sum", "skewness", "kurtosis")},
            "quantiles": {key: _finite(quantiles[i]) if quantiles else None for i, key in enumerate(QUANTILES)},
        }
    for name, histogram in zip([n for n, _ in numeric], _histograms(prepared, numeric, result, bins), strict=True):
        result[name]["histogram"] = histogram
    for name, alias in categorical:
        result[name] = {
            "type": "categorical",
            "count": first[f"{alias}_count"],
            "nulls": rows - first[f"{alias}_count"],
            "distinct": first[f"{alias}_distinct"],
            "top_values": _top_values(prepared, alias, top_k),
        }

    return {
        "dataset": spec.name,
        "label": spec.label,
        "rows": rows,
        "columns": {name: result[name] for name, _ in columns},
        "correlation": _correlations(prepared, numeric, features, first.get("rows_used", 0)),
        "drift_reference": {"columns": reference_profiles(df, columns)},
    }


def _first_pass(prepared: DataFrame, numeric: list[tuple[str, str]], categorical: list[tuple[str, str]],
                features: list[str]) -> dict:
    aggregates = [F.count(F.lit(1)).alias("rows")]
    for _, alias in numeric:
        value = F.col(alias)
        aggregates += [
            F.count(value).alias(f"{alias}_count"),
            F.mean(value).alias(f"{alias}_mean"),
            F.stddev_samp(value).alias(f"{alias}_std"),
            F.min(value).alias(f"{alias}_min"),
            F.max(value).alias(f"{alias}_max"),
            F.sum(value).alias(f"{alias}_sum"),
            F.skewness(value).alias(f"{alias}_skewness"),
            F.kurtosis(value).alias(f"{alias}_kurtosis"),
            F.percentile_approx(value, list(QUANTILES.values()), QUANTILE_ACCURACY).alias(f"{alias}_quantiles"),
        ]
    for _, alias in categorical:
        aggregates += [F.count(alias).alias(f"{alias}_count"), F.count_distinct(alias).alias(f"{alias}_distinct")]
    if features:
        complete = reduce(lambda a, b: a & b, [F.col(alias).isNotNull() for alias in features])
        aggregates.append(F.count_if(complete).alias("rows_used"))
    return prepared.agg(*aggregates).head().asDict()


def _histograms(prepared: DataFrame, numeric: list[tuple[str, str]], result: dict[str, dict],
                bins: int) -> list[dict]:
    edges = {
        i: _histogram_edges(result[name]["min"], result[name]["max"], bins)
        for i, (name, _) in enumerate(numeric)
        if result[name]["count"] > 0
    }
    counts = {i: [0] * bins for i in edges}
    if edges:
        cells = F.explode(F.array(*(
            F.struct(F.lit(i).alias("column"), _bin_index(F.col(numeric[i][1]), column_edges).alias("bin"))
            for i, column_edges in edges.items()
        ))).alias("cell")
        grouped = (prepared.select(cells).where(F.col("cell.bin").isNotNull())
                   .groupBy(F.col("cell.column").alias("column"), F.col("cell.bin").alias("bin")).count())
        for row in grouped.collect():
            counts[row["column"]][row["bin"]] = row["count"]
    return [
        {"edges": edges[i], "counts": counts[i]} if i in edges else {"edges": [], "counts": []}
        for i in range(len(numeric))
    ]


def _top_values(prepared: DataFrame, alias: str, top_k: int) -> list[dict]:
    top = (prepared.where(F.col(alias).isNotNull()).groupBy(alias).count()
           .orderBy(F.desc("count"), F.asc(alias)).limit(top_k).collect())
    return [{"value": _json_value(row[alias]), "count": row["count"]} for row in top]


def _correlations(prepared: DataFrame, numeric: list[tuple[str, str]], features: list[str],
                  rows_used: int) -> dict:
    names = [name for name, alias in numeric if alias in features]
    size = len(names)
    if size and rows_used >= 2:
        vectors = VectorAssembler(inputCols=features, outputCol="features", handleInvalid="skip").transform(
            prepared.select(*features)).select("features")
        pearson = _correlation_matrix(vectors, "pearson", size)
        spearman = _correlation_matrix(vectors, "spearman", size)
    else:
        pearson = spearman = [[None] * size for _ in range(size)]
    return {
        "rows_used": rows_used,
        "pearson": {"columns": names, "matrix": pearson},
        "spearman": {"columns": names, "matrix": spearman},
    }


def write_stats(df: DataFrame, spec: DatasetSpec, out_dir: Path) -> dict:
    """Compute the stats of `df` and write out_dir/stats.json and out_dir/report.html; returns the stats."""
    stats = compute_stats(df, spec)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stats.json").write_text(json.dumps(stats, indent=2, allow_nan=False) + "\n")
    (out_dir / "report.html").write_text(render_report(stats), encoding="utf-8")
    return stats
