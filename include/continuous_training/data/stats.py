"""Profile a dataset with Spark into stats.json (the drift reference of later runs) and report.html."""

from __future__ import annotations

import datetime as dt
import math
from functools import partial, reduce
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from continuous_training import profiles as profile
from continuous_training.data.stats_report import render_report
from continuous_training.errors import PipelineError
from continuous_training.paths import STATS_FILE, STATS_REPORT_FILE, write_result, write_text_atomic
from continuous_training.spark import col, in_parallel, literal_array
from continuous_training.spec import INTEGRAL_TYPES, DatasetSpec, is_numeric_type

QUANTILES: dict[str, float] = {
    "p01": 0.01, "p05": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99,
}
HISTOGRAM_BINS = 20
TOP_K = 20
QUANTILE_ACCURACY = profile.PERCENTILE_ACCURACY
RANK_POINTS = 1_000
SPEARMAN_TOLERANCE = 1e-3  # |rho - exact rho| above RANK_POINTS complete rows
SKETCH_POINTS = sorted({*QUANTILES.values(), *profile.PERCENTILES})



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
    """Profile the spec's features and label into the stats.json document (strict JSON: NaN and infinities become
    null). Raises PipelineError when a profiled column is missing or the input has no rows.

    Numeric columns (cast to double, NaN counted as null): count, nulls, min, max, sum, mean, the sample standard
    deviation (ddof=1, null for fewer than two values), population skewness and excess kurtosis
    (scipy.stats.skew(bias=True), scipy.stats.kurtosis(fisher=True, bias=True); null for a constant column),
    QUANTILES from percentile_approx (relative rank error 1/QUANTILE_ACCURACY, each a value of the column) and a
    histogram of `bins` equal-width bins as numpy.histogram builds them (a constant column gets [v-0.5, v+0.5], one
    with no values empty edges and counts). Categorical columns: count, nulls, the exact distinct count and the
    `top_k` top values (ties by value).

    Pearson and Spearman matrices over the complete rows (every numeric feature set). Spearman is Pearson's on rank
    fractions read from each feature's sketch at min(rows_used, RANK_POINTS) points (ties get their average rank,
    values between points the linear interpolation): exact up to RANK_POINTS complete rows, within
    SPEARMAN_TOLERANCE above. The diagonal is 1; undefined entries (a column constant on the complete rows, fewer
    than two rows) are null. `drift_reference` holds each column's drift profile (`continuous_training.profiles`).
    """
    missing = [column for column, _ in profiled_columns(spec) if column not in df.columns]
    if missing:
        raise PipelineError(f"stats for {spec.name}: columns {missing} are not in the data ({df.columns})")
    columns = profiled_columns(spec)
    numeric = [(name, f"n{i}") for i, (name, kind) in enumerate(columns) if kind == "numeric"]
    categorical = [(name, f"c{i}") for i, (name, kind) in enumerate(columns) if kind == "categorical"]
    features = [alias for name, alias in numeric if name in spec.features.numeric]

    prepared = df.select(
        *(F.nanvl(col(name).cast("double"), F.lit(None).cast("double")).alias(alias) for name, alias in numeric),
        *(col(name).alias(alias) for name, alias in categorical),
    )
    first = _summary(prepared, numeric, categorical, features)
    rows = first["rows"]
    if rows == 0:
        raise PipelineError(f"stats for {spec.name}: the input has no rows, nothing to profile")
    sketches = {alias: dict(zip(SKETCH_POINTS, (first[f"{alias}_sketch"] or [None] * len(SKETCH_POINTS))
                                [:len(SKETCH_POINTS)], strict=True)) for _, alias in numeric}
    histogram_edges = {alias: _histogram_edges(_finite(first[f"{alias}_min"]), _finite(first[f"{alias}_max"]), bins)
                       if first[f"{alias}_count"] > 0 else [] for _, alias in numeric}
    reference_edges = {alias: profile.reference_edges([sketches[alias].get(p) for p in profile.PERCENTILES])
                       for _, alias in numeric}
    numeric_categories = {alias: is_numeric_type(spec.schema_[name]) for name, alias in categorical}
    sums, (histograms, reference_bins, values) = in_parallel(
        df.sparkSession, partial(_centered_sums, prepared, numeric, features, first),
        partial(_cell_counts, prepared, histogram_edges, reference_edges, numeric_categories, top_k))

    result: dict[str, dict] = {}
    reference: dict[str, dict] = {}
    for name, alias in numeric:
        count = first[f"{alias}_count"]
        result[name] = {
            "type": "numeric",
            "count": count,
            "nulls": rows - count,
            **_moments(first, sums, alias),
            "quantiles": {key: _finite(sketches[alias].get(p)) for key, p in QUANTILES.items()},
        }
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
        "correlation": _correlations(numeric, features, first, sums),
        "drift_reference": {"columns": {name: reference[name] for name, _ in columns}},
    }


def _summary(prepared: DataFrame, numeric: list[tuple[str, str]], categorical: list[tuple[str, str]],
             features: list[str]) -> dict:
    """The first aggregation of `compute_stats`: row count, per numeric column its count, min, max, sum and
    percentile sketch, per categorical column its count, and the complete rows (`rows_used`)."""
    aggregates = [F.count(F.lit(1)).alias("rows")]
    for _, alias in numeric:
        value = F.col(alias)
        points = SKETCH_POINTS + (_rank_points(RANK_POINTS) if alias in features else [])
        aggregates += [
            F.count(value).alias(f"{alias}_count"),
            F.min(value).alias(f"{alias}_min"),
            F.max(value).alias(f"{alias}_max"),
            F.sum(value).alias(f"{alias}_sum"),
            F.percentile_approx(value, literal_array(points, "double"), QUANTILE_ACCURACY).alias(f"{alias}_sketch"),
        ]
    aggregates += [F.count(alias).alias(f"{alias}_count") for _, alias in categorical]
    if features:
        aggregates.append(F.count_if(_complete(features)).alias("rows_used"))
    return prepared.agg(*aggregates).head().asDict()


def _complete(features: list[str]) -> Column:
    return reduce(lambda a, b: a & b, [F.col(alias).isNotNull() for alias in features])


def _rank_sketches(prepared: DataFrame, features: list[str], first: dict) -> dict[str, list[float]]:
    """Per feature (when at least two rows are complete), its values among the complete rows at `_rank_points`:
    from its `_summary` sketch when it is set on exactly the complete rows and they are at least RANK_POINTS, else
    from a sketch of its values on the complete rows."""
    rows_used = first.get("rows_used", 0)
    if rows_used < 2:
        return {}
    shared = [alias for alias in features if rows_used >= RANK_POINTS and first[f"{alias}_count"] == rows_used]
    sketches = {alias: first[f"{alias}_sketch"][len(SKETCH_POINTS):] for alias in shared}
    others = [alias for alias in features if alias not in shared]
    if others:
        row = prepared.where(_complete(features)).agg(*(
            F.percentile_approx(alias, literal_array(_rank_points(rows_used), "double"), QUANTILE_ACCURACY).alias(alias)
            for alias in others)).head()
        sketches |= {alias: row[alias] for alias in others}
    return sketches


def _cell_counts(prepared: DataFrame, histogram_edges: dict[str, list[float]],
                 reference_edges: dict[str, list[float]], numeric_categories: dict[str, bool], top_k: int,
                 ) -> tuple[dict[str, dict[int, int]], dict[str, dict[int, int]], dict[str, dict]]:
    """Rows per histogram bin and per reference bin of each numeric column, and per categorical column its
    distinct count, its `top_k` values for the report (by count, then value in the column's own order) and its
    drift-reference values (by count, then text)."""
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
    at_value, middle, last, slope = (F.element_at(literal_array(items, "double"), knot) for items in knots)
    return F.when(value == at_value, middle).otherwise(last + (value - at_value) * slope)


def _centered_sums(prepared: DataFrame, numeric: list[tuple[str, str]], features: list[str], first: dict) -> dict:
    """Sums of powers of each numeric column's deviations from its mean (`<alias>_m<k>`); over the complete rows,
    the sums of the features' (`p<i>`) and their rank fractions' (`s<i>`) deviations and of their pairwise products
    (`p<i>_<j>`, `s<i>_<j>`), and each feature's range there."""
    deviations = {f"d_{alias}": F.col(alias) - F.lit(_mean(first, alias)) for _, alias in numeric}
    sums = [F.sum(reduce(Column.__mul__, [F.col(f"d_{alias}")] * power)).alias(f"{alias}_m{power}")
            for _, alias in numeric for power in range(1, 5)]
    rank_sketches = _rank_sketches(prepared, features, first)
    if rank_sketches:
        rows_used = first["rows_used"]
        knots = {alias: _rank_knots(rank_sketches[alias], first[f"{alias}_min"], first[f"{alias}_max"], rows_used)
                 for alias in features}
        prepared, knot_columns = profile.with_numeric_bins(
            prepared, {alias: feature_knots[0] for alias, feature_knots in knots.items()}, prefix="_rank")
        complete = _complete(features)
        for i, (alias, knot) in enumerate(zip(features, knot_columns, strict=True)):
            deviations[f"p{i}"] = F.when(complete, F.col(alias) - F.lit(_mean(first, alias)))
            deviations[f"s{i}"] = F.when(complete, _rank_fraction(F.col(alias), knot, knots[alias]) - F.lit(0.5))
        pairs = [(i, j) for i in range(len(features)) for j in range(i, len(features))]
        sums += [F.sum(f"{prefix}{i}").alias(f"{prefix}{i}") for prefix in "ps" for i in range(len(features))]
        sums += [F.sum(F.col(f"{prefix}{i}") * F.col(f"{prefix}{j}")).alias(f"{prefix}{i}_{j}")
                 for prefix in "ps" for i, j in pairs]
        sums += [aggregate(F.when(complete, F.col(alias))).alias(f"{alias}_complete_{name}")
                 for alias in features for name, aggregate in (("min", F.min), ("max", F.max))]
    if not sums:
        return {}
    return prepared.select("*", *(value.alias(name) for name, value in deviations.items())).agg(*sums).head().asDict()


def _mean(first: dict, alias: str) -> float:
    return first[f"{alias}_sum"] / first[f"{alias}_count"] if first[f"{alias}_count"] else 0.0


def _moments(first: dict, sums: dict, alias: str) -> dict[str, float | None]:
    """A numeric column's moments from `_summary` and its sums of deviations d^k (k = 1..4) from its mean."""
    count, low, high = first[f"{alias}_count"], first[f"{alias}_min"], first[f"{alias}_max"]
    moments = {"mean": None, "std": None, "min": _finite(low), "max": _finite(high),
               "sum": _finite(first[f"{alias}_sum"]), "skewness": None, "kurtosis": None}
    if count == 0:
        return moments
    s1, s2, s3, s4 = (sums[f"{alias}_m{power}"] for power in range(1, 5))
    shift = s1 / count
    m2 = 0.0 if low == high else max(s2 - count * shift ** 2, 0.0)
    m3 = s3 - 3 * shift * s2 + 2 * count * shift ** 3
    m4 = s4 - 4 * shift * s3 + 6 * shift ** 2 * s2 - 3 * count * shift ** 4
    moments["mean"] = _finite(_mean(first, alias))
    if count > 1:
        moments["std"] = _finite(math.sqrt(m2 / (count - 1)))
    if m2 > 0:
        moments["skewness"] = _finite(math.sqrt(count) * m3 / m2 ** 1.5)
        moments["kurtosis"] = _finite(count * m4 / m2 ** 2 - 3)
    return moments


def _correlation_matrix(sums: dict, prefix: str, size: int, rows: int, varies: list[bool]) -> list[list[float | None]]:
    """Pearson's matrix from the sums of deviations (`prefix`i) and of their products (`prefix`i_j) over `rows` rows;
    null where a column does not vary."""
    mean = [sums[f"{prefix}{i}"] / rows for i in range(size)]
    covariance = {(i, j): sums[f"{prefix}{i}_{j}"] / rows - mean[i] * mean[j]
                  for i in range(size) for j in range(i, size)}
    matrix: list[list[float | None]] = [[1.0 if varies[i] and i == j else None for j in range(size)]
                                        for i in range(size)]
    for i in range(size):
        for j in range(i + 1, size):
            spread = covariance[i, i] * covariance[j, j]
            if varies[i] and varies[j] and spread > 0:
                matrix[i][j] = matrix[j][i] = _finite(covariance[i, j] / math.sqrt(spread))
    return matrix


def _correlations(numeric: list[tuple[str, str]], features: list[str], first: dict, sums: dict) -> dict:
    """Pearson and Spearman matrices over the complete rows, from the sums of `_centered_sums`."""
    rows_used = first.get("rows_used", 0)
    names = [name for name, alias in numeric if alias in features]
    size = len(names)
    pearson = [[None] * size for _ in range(size)]
    spearman = [[None] * size for _ in range(size)]
    if size and rows_used >= 2:
        varies = [sums[f"{alias}_complete_min"] != sums[f"{alias}_complete_max"] for alias in features]
        pearson = _correlation_matrix(sums, "p", size, rows_used, varies)
        spearman = _correlation_matrix(sums, "s", size, rows_used, varies)
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
    write_result(out_dir / STATS_FILE, stats)
    write_text_atomic(out_dir / STATS_REPORT_FILE, render_report(stats))
    return stats
