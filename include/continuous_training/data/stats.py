"""Profile a dataset with Spark into stats.json (the drift reference of later runs) and report.html."""

from __future__ import annotations

import datetime as dt
import json
import math
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from continuous_training.data.report import render_report
from continuous_training.errors import PipelineError
from continuous_training.monitoring import profile
from continuous_training.spec import INTEGRAL_TYPES, DatasetSpec, is_numeric_type

QUANTILES: dict[str, float] = {
    "p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99,
}
HISTOGRAM_BINS = 20
TOP_K = 20
QUANTILE_ACCURACY = profile.PERCENTILE_ACCURACY
RANK_POINTS = 1_000
SPEARMAN_TOLERANCE = 1e-3  # |rho - exact rho| above RANK_POINTS complete rows


def _quoted(name: str) -> Column:
    """A column reference that takes the name verbatim (spaces, dots, parentheses, backticks)."""
    return F.col(f"`{name.replace('`', '``')}`")


def _double_array(items: list[float]) -> Column:
    """A literal array<double>, parsed by Spark in one call (it folds to one constant that generated code reads)."""
    return F.expr("array(" + ", ".join(
        f"{item!r}D" if math.isfinite(item) else f"CAST('{item}' AS DOUBLE)" for item in map(float, items)) + ")")


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


def _histogram_edges(low: float, high: float, bins: int) -> list[float]:
    """Equal-width edges over [low, high], as numpy.histogram builds them (a constant column gets ±0.5)."""
    if low == high:
        low, high = low - 0.5, high + 0.5
    return [float(edge) for edge in np.linspace(low, high, bins + 1)]


def _typed_value(text: str, spark_type: str) -> Any:
    """A categorical value grouped as text, back as stats.json shows it: the JSON value of the column's type."""
    spark_type = spark_type.strip().lower()
    if spark_type == "boolean":
        return text == "true"
    if spark_type in INTEGRAL_TYPES:
        return int(text)
    if spark_type in {"float", "double"}:
        return _finite(float(text))
    if spark_type.startswith("timestamp"):
        return dt.datetime.fromisoformat(text).isoformat()
    return text


def compute_stats(df: DataFrame, spec: DatasetSpec, bins: int = HISTOGRAM_BINS, top_k: int = TOP_K) -> dict:
    """Profile the spec's features and label in four Spark passes; returns the stats.json document.

    1. One aggregation: row count; for numeric columns (cast to double, NaN counted as null) the non-null count,
       mean, sample standard deviation (ddof=1, null for fewer than two values), min, max, sum, population
       skewness and population excess kurtosis (the biased estimators: scipy.stats.skew(bias=True) and
       scipy.stats.kurtosis(fisher=True, bias=True); null for a constant column); for categorical columns the
       non-null count.
    2. Approximate percentiles of every numeric column (percentile_approx, relative rank error
       1/QUANTILE_ACCURACY, each a value of the column): the report's QUANTILES, the drift reference's
       percentiles and item 4's rank points in one sketch per column (a feature set on more rows than the complete
       ones gets a second sketch, of its values on the complete rows).
    3. One grouping of every cell: numeric values by their histogram bin (`bins` equal-width bins over
       [min, max], [e_i, e_i+1) and the last closed, as numpy.histogram; a constant column gets [v-0.5, v+0.5];
       a column with no values gets empty edges and counts) and their drift-reference bin; categorical values
       (nulls excluded) by value, which gives the exact distinct count, the `top_k` top values (ties by value)
       and the drift reference's values. Only bins and the top values reach the driver.
    4. Pearson and Spearman correlations over the numeric features, on the rows where every numeric feature is
       set (`rows_used`), in one aggregation with no sort. Spearman is Pearson's on rank fractions read from each
       feature's sketch of pass 2 at min(rows_used, RANK_POINTS) points: a value the sketch returns gets the
       middle of its points (the average rank of its ties), a value between two of them the linear interpolation.
       Up to RANK_POINTS complete rows every value is such a point and Spearman is exact; above, it is within
       SPEARMAN_TOLERANCE of the exact figure. The diagonal is 1 and entries that are undefined (a constant
       column, fewer than two rows) are null.

    `drift_reference` holds each column's drift profile (`continuous_training.monitoring.profile`): the bins drift
    checks compare later windows on. The result is strict JSON (NaN and infinities become null).
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
    first = _moments(prepared, numeric, categorical, features)
    rows = first["rows"]
    if rows == 0:
        raise PipelineError(f"stats for {spec.name}: the input has no rows, nothing to profile")
    sketches, rank_sketches = _percentiles(prepared, numeric, features, first)

    result: dict[str, dict] = {}
    reference: dict[str, dict] = {}
    histogram_edges, reference_edges = {}, {}
    for name, alias in numeric:
        count = first[f"{alias}_count"]
        result[name] = {
            "type": "numeric",
            "count": count,
            "nulls": rows - count,
            **{stat: _finite(first[f"{alias}_{stat}"]) for stat in
               ("mean", "std", "min", "max", "sum", "skewness", "kurtosis")},
            "quantiles": {key: _finite(sketches[alias].get(p)) for key, p in QUANTILES.items()},
        }
        histogram_edges[alias] = (_histogram_edges(result[name]["min"], result[name]["max"], bins)
                                  if count > 0 else [])
        reference_edges[alias] = profile.reference_edges([sketches[alias].get(p) for p in profile.PERCENTILES])
    histograms, reference_bins, values = _cell_counts(
        prepared, histogram_edges, reference_edges,
        {alias: is_numeric_type(spec.schema_[name]) for name, alias in categorical}, top_k)
    for name, alias in numeric:
        edges = histogram_edges[alias]
        result[name]["histogram"] = {"edges": edges, "counts": [histograms[alias].get(b, 0) for b in range(bins)]
                                     if edges else []}
        reference[name] = profile.numeric_reference(rows, rows - first[f"{alias}_count"], reference_edges[alias],
                                                    reference_bins[alias])
    for name, alias in categorical:
        counted = values[alias]
        result[name] = {
            "type": "categorical",
            "count": first[f"{alias}_count"],
            "nulls": rows - first[f"{alias}_count"],
            "distinct": counted["distinct"],
            "top_values": [{"value": _typed_value(value, spec.schema_[name]), "count": count}
                           for value, count in counted["top"]],
        }
        reference[name] = profile.categorical_reference(rows, first[f"{alias}_count"], counted["reference"])

    return {
        "dataset": spec.name,
        "label": spec.label,
        "rows": rows,
        "columns": {name: result[name] for name, _ in columns},
        "correlation": _correlations(prepared, numeric, features, first, rank_sketches),
        "drift_reference": {"columns": {name: reference[name] for name, _ in columns}},
    }


def _moments(prepared: DataFrame, numeric: list[tuple[str, str]], categorical: list[tuple[str, str]],
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
        ]
    aggregates += [F.count(alias).alias(f"{alias}_count") for _, alias in categorical]
    if features:
        aggregates.append(F.count_if(_complete(features)).alias("rows_used"))
    return prepared.agg(*aggregates).head().asDict()


def _complete(features: list[str]) -> Column:
    return reduce(lambda a, b: a & b, [F.col(alias).isNotNull() for alias in features])


def _percentiles(prepared: DataFrame, numeric: list[tuple[str, str]], features: list[str], first: dict,
                 ) -> tuple[dict[str, dict[float, float | None]], dict[str, list[float]]]:
    """Per numeric column, its values at QUANTILES and at the drift reference's percentiles; per feature (when
    at least two rows are complete), its values among the complete rows at `_rank_points`, for Spearman. One sketch
    per column, read at both sets of points for a feature set on exactly the complete rows; a feature set on more
    rows than those gets a second sketch of its values on the complete rows."""
    points = sorted({*QUANTILES.values(), *profile.PERCENTILES})
    if not numeric:
        return {}, {}
    rows_used = first.get("rows_used", 0)
    ranked = features if rows_used >= 2 else []
    rank_points = _rank_points(rows_used) if ranked else []
    shared = {alias for alias in ranked if first[f"{alias}_count"] == rows_used}
    row = prepared.agg(
        *(F.percentile_approx(alias, _double_array(points + rank_points if alias in shared else points),
                              QUANTILE_ACCURACY).alias(alias) for _, alias in numeric),
        *(F.percentile_approx(F.when(_complete(features), F.col(alias)), _double_array(rank_points), QUANTILE_ACCURACY)
          .alias(f"{alias}_ranks") for alias in ranked if alias not in shared),
    ).head()
    sketches = {alias: dict(zip(points, (row[alias] or [None] * len(points))[:len(points)], strict=True))
                for _, alias in numeric}
    return sketches, {alias: row[alias][len(points):] if alias in shared else row[f"{alias}_ranks"]
                      for alias in ranked}


def _cell_counts(prepared: DataFrame, histogram_edges: dict[str, list[float]],
                 reference_edges: dict[str, list[float]], numeric_categories: dict[str, bool], top_k: int,
                 ) -> tuple[dict[str, dict[int, int]], dict[str, dict[int, int]], dict[str, dict]]:
    """Rows per histogram bin and per reference bin of each numeric column, and per categorical column its
    distinct count, its `top_k` values for the report (by count, then value in the column's own order) and its
    drift-reference values (by count, then text); one grouping of every cell."""
    numeric, categorical = list(histogram_edges), list(numeric_categories)
    binned, histogram_bins = profile.with_numeric_bins(
        prepared, {alias: edges[1:-1] for alias, edges in histogram_edges.items()}, prefix="_histogram")
    binned, reference_bins = profile.with_numeric_bins(binned, reference_edges, prefix="_reference")
    text, no_bin = F.lit(None).cast("string"), F.lit(None).cast("int")
    cells = F.explode(F.array(
        *(F.struct(F.lit(alias).alias("column"), histogram_bin.alias("histogram"), reference_bin.alias("reference"),
                   text.alias("value"), F.lit(None).cast("double").alias("order"))
          for alias, histogram_bin, reference_bin in zip(numeric, histogram_bins, reference_bins, strict=True)),
        *(F.struct(F.lit(alias).alias("column"), no_bin.alias("histogram"), no_bin.alias("reference"),
                   F.col(alias).cast("string").alias("value"),
                   (F.col(alias).cast("double") if numeric_categories[alias] else F.lit(None).cast("double"))
                   .alias("order"))
          for alias in categorical),
    )).alias("cell")
    grouped = (binned.select(cells).select("cell.*")
               .where(F.col("histogram").isNotNull() | F.col("value").isNotNull())
               .groupBy("column", "histogram", "reference", "value", "order").count())
    by_column = Window.partitionBy("column")
    ranked = grouped.select(
        "*",
        F.count(F.lit(1)).over(by_column).alias("distinct"),
        F.row_number().over(by_column.orderBy(F.desc("count"), F.asc("order"), F.asc("value"))).alias("top_rank"),
        F.row_number().over(by_column.orderBy(F.desc("count"), F.asc("value"))).alias("reference_rank"),
    ).where(F.col("value").isNull() | (F.col("top_rank") <= top_k)
            | (F.col("reference_rank") <= profile.MAX_REFERENCE_VALUES))
    histograms: dict[str, dict[int, int]] = {alias: {} for alias in numeric}
    references: dict[str, dict[int, int]] = {alias: {} for alias in numeric}
    values: dict[str, dict] = {alias: {"distinct": 0, "top": [], "reference": []} for alias in categorical}
    tops: dict[str, list] = {alias: [] for alias in categorical}
    for row in ranked.collect():
        column = row["column"]
        if column in histograms:
            histograms[column][row["histogram"]] = histograms[column].get(row["histogram"], 0) + row["count"]
            references[column][row["reference"]] = references[column].get(row["reference"], 0) + row["count"]
            continue
        values[column]["distinct"] = row["distinct"]
        if row["top_rank"] <= top_k:
            tops[column].append((row["top_rank"], row["value"], row["count"]))
        if row["reference_rank"] <= profile.MAX_REFERENCE_VALUES:
            values[column]["reference"].append((row["reference_rank"], row["value"], row["count"]))
    for column, entry in values.items():
        entry["top"] = [(value, count) for _, value, count in sorted(tops[column])]
        entry["reference"] = [(value, count) for _, value, count in sorted(entry["reference"])]
    return histograms, references, values


def _rank_points(rows_used: int) -> list[float]:
    """Where a feature's Spearman sketch is read: the middles of min(rows_used, RANK_POINTS) equal slices of [0, 1]."""
    points = min(rows_used, RANK_POINTS)
    return [(k + 0.5) / points for k in range(points)]


def _rank_knots(sketch: list[float], low: float, high: float, rows_used: int) -> list[list[float]]:
    """A feature's knots for `_rank_fraction`: its distinct values among the sketch's values at `_rank_points` and
    its min and max, each with its rank fraction (rank - 1/2) / rows_used (the middle of the points where the sketch
    returns it: the average rank of its ties), and the rank fraction's slope from the knot to the next one."""
    fractions = [0.5 / rows_used, *_rank_points(rows_used), 1 - 0.5 / rows_used]
    spans: dict[float, list[float]] = {}
    for value, fraction in zip([low, *sketch, high], fractions, strict=True):
        spans.setdefault(float(value), []).append(fraction)
    values = sorted(spans)
    firsts, lasts = [min(spans[value]) for value in values], [max(spans[value]) for value in values]
    slopes = [(next_first - last) / (next_value - value) for value, last, next_value, next_first
              in zip(values, lasts, values[1:], firsts[1:], strict=False)]
    return [values, [(first + last) / 2 for first, last in zip(firsts, lasts, strict=True)], lasts, [*slopes, 0.0]]


def _rank_fraction(value: Column, knot: Column, knots: list[list[float]]) -> Column:
    """The value's rank fraction among the complete rows (`knot`: how many knot values are <= it): a knot value
    gets its own, a value between two knots the linear interpolation."""
    at_value, middle, last, slope = (F.element_at(_double_array(items), knot) for items in knots)
    return F.when(value == at_value, middle).otherwise(last + (value - at_value) * slope)


def _correlations(prepared: DataFrame, numeric: list[tuple[str, str]], features: list[str], first: dict,
                  rank_sketches: dict[str, list[float]]) -> dict:
    rows_used = first.get("rows_used", 0)
    names = [name for name, alias in numeric if alias in features]
    size = len(names)
    pearson = [[None] * size for _ in range(size)]
    spearman = [[None] * size for _ in range(size)]
    if size and rows_used >= 2:
        knots = {alias: _rank_knots(rank_sketches[alias], first[f"{alias}_min"], first[f"{alias}_max"], rows_used)
                 for alias in features}
        complete, knot_columns = profile.with_numeric_bins(
            prepared.select(*features).where(_complete(features)),
            {alias: feature_knots[0] for alias, feature_knots in knots.items()}, prefix="_rank")
        ranks = [f"{alias}_rank" for alias in features]
        complete = complete.select(*features, *(
            _rank_fraction(F.col(alias), knot, knots[alias]).alias(rank)
            for alias, knot, rank in zip(features, knot_columns, ranks, strict=True)))
        pairs = [(i, j) for i in range(size) for j in range(i + 1, size)]
        row = complete.agg(*(
            aggregate for prefix, values in (("p", features), ("s", ranks)) for aggregate in (
                *(F.var_pop(values[i]).alias(f"{prefix}{i}") for i in range(size)),
                *(F.covar_pop(values[i], values[j]).alias(f"{prefix}{i}_{j}") for i, j in pairs),
            )
        )).head()
        for matrix, prefix in ((pearson, "p"), (spearman, "s")):
            for i in range(size):
                matrix[i][i] = 1.0 if row[f"{prefix}{i}"] > 0 else None
            for i, j in pairs:
                spread = row[f"{prefix}{i}"] * row[f"{prefix}{j}"]
                value = row[f"{prefix}{i}_{j}"] / math.sqrt(spread) if spread > 0 else None
                matrix[i][j] = matrix[j][i] = _finite(value)
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
