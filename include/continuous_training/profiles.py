"""Drift profiles: a column's distribution on fixed bins, so that a reference and a later window compare bin by bin.

A numeric column is binned on the reference's percentiles p1..p99 (duplicates merged, so a discrete column gets
one bin per value): bins `(-inf, e0)`, `[e0, e1)`, ..., `[e_last, inf)`. A categorical column (cast to string)
keeps its `MAX_REFERENCE_VALUES` most frequent reference values plus one last slot for every other value. Nulls
(and NaN) are counted apart. Only per-bin counts reach the driver. A profile is JSON:

    {"kind": "numeric", "rows": 100, "nulls": 2, "edges": [...], "counts": [... len(edges) + 1 ...]}
    {"kind": "categorical", "rows": 100, "nulls": 0, "values": [...], "counts": [... len(values) + 1 ...]}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pyspark.ml.feature import Bucketizer
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from continuous_training.spark import col, literal_array

Kind = Literal["numeric", "categorical"]

PERCENTILES = [p / 100 for p in range(1, 100)]
PERCENTILE_ACCURACY = 10_000
MAX_REFERENCE_VALUES = 1_000


def _value(name: str, kind: Kind) -> Column:
    """The column as profiled: numeric as double with NaN as null, categorical as string."""
    if kind == "numeric":
        return F.nanvl(col(name).cast("double"), F.lit(None).cast("double"))
    return col(name).cast("string")


def _bin_counts(df: DataFrame, keys: Sequence[Column]) -> dict[int, dict[int | None, int]]:
    """Rows per (column position, bin), a null bin for nulls."""
    cells = F.explode(F.array(*(F.struct(F.lit(i).alias("column"), key.alias("bin"))
                                for i, key in enumerate(keys)))).alias("cell")
    grouped = df.select(cells).groupBy(F.col("cell.column").alias("column"), F.col("cell.bin").alias("bin")).count()
    counts: dict[int, dict[int | None, int]] = {i: {} for i in range(len(keys))}
    for row in grouped.collect():
        counts[row["column"]][row["bin"]] = row["count"]
    return counts


def with_numeric_bins(df: DataFrame, edges: Mapping[str, Sequence[float]],
                      prefix: str = "_bin") -> tuple[DataFrame, list[Column]]:
    """`df` with the bin index of each numeric column (how many of its edges are <= the value; null stays null),
    and those bin columns, in the order of `edges`."""
    binned = [name for name, column_edges in edges.items() if column_edges]
    values = {name: f"{prefix}_value_{i}" for i, name in enumerate(binned)}
    bins = {name: f"{prefix}_{i}" for i, name in enumerate(binned)}
    if binned:
        df = df.select("*", *(_value(name, "numeric").alias(values[name]) for name in binned))
        df = Bucketizer(splitsArray=[[-math.inf, *edges[name], math.inf] for name in binned],
                        inputCols=[values[name] for name in binned], outputCols=[bins[name] for name in binned],
                        handleInvalid="keep").transform(df)
    return df, [F.col(bins[name]).cast("int") if name in bins
                else F.when(_value(name, "numeric").isNotNull(), F.lit(0)) for name in edges]


def _categorical_bin(value: Column, values: Sequence[str]) -> Column:
    """Position of the value among the reference values; the last slot for any other value (null stays null)."""
    if not values:
        return F.when(value.isNotNull(), F.lit(0))
    position = F.array_position(literal_array(values, "string"), value).cast("int")
    return F.when(value.isNotNull(), F.when(position > 0, position - 1).otherwise(F.lit(len(values))))


def window_profiles(df: DataFrame, references: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The profiles of `df` on the bins of `references` (column name -> reference profile)."""
    numeric = {name: reference["edges"] for name, reference in references.items() if reference["kind"] == "numeric"}
    df, numeric_keys = with_numeric_bins(df, numeric)
    keys_by_name = dict(zip(numeric, numeric_keys, strict=True))
    keys = [keys_by_name[name] if name in keys_by_name else _categorical_bin(_value(name, "categorical"), ref["values"])
            for name, ref in references.items()]
    profiles = {}
    for (name, reference), per_bin in zip(references.items(), _bin_counts(df, keys).values(), strict=True):
        layout = {"edges": reference["edges"]} if reference["kind"] == "numeric" else {"values": reference["values"]}
        profiles[name] = {
            "kind": reference["kind"], "rows": sum(per_bin.values()), "nulls": per_bin.get(None, 0), **layout,
            "counts": [per_bin.get(slot, 0) for slot in range(len(reference["counts"]))],
        }
    return profiles


def reference_edges(values: Sequence[float | None] | None) -> list[float]:
    """Bin edges from a column's percentiles: the finite ones, sorted, duplicates merged."""
    return sorted({float(p) for p in values or [] if p is not None and math.isfinite(p)})


def numeric_reference(rows: int, nulls: int, edges: Sequence[float], per_bin: Mapping[int, int]) -> dict[str, Any]:
    """A numeric reference profile from its edges and its rows per bin."""
    return {"kind": "numeric", "rows": rows, "nulls": nulls, "edges": list(edges),
            "counts": [per_bin.get(slot, 0) for slot in range(len(edges) + 1)]}


def categorical_reference(rows: int, non_null: int, top: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """A categorical reference profile from its most frequent values (value as text, rows), most frequent first."""
    listed = [count for _, count in top]
    return {"kind": "categorical", "rows": rows, "nulls": rows - non_null, "values": [value for value, _ in top],
            "counts": [*listed, non_null - sum(listed)]}


def reference_profiles(df: DataFrame, columns: Sequence[tuple[str, Kind]],
                       max_values: int = MAX_REFERENCE_VALUES) -> dict[str, dict[str, Any]]:
    """Reference profiles of `columns` ((name, kind) pairs), fixing their bins from `df`; a categorical keeps its
    top `max_values` values."""
    numeric = [name for name, kind in columns if kind == "numeric"]
    categorical = [name for name, kind in columns if kind == "categorical"]
    aggregates = [F.count(F.lit(1)).alias("rows")]
    points = literal_array(PERCENTILES, "double")
    for i, name in enumerate(numeric):
        value = _value(name, "numeric")
        aggregates += [F.count(value).alias(f"n{i}_count"),
                       F.percentile_approx(value, points, PERCENTILE_ACCURACY).alias(f"n{i}_pct")]
    aggregates += [F.count(_value(name, "categorical")).alias(f"c{i}_count") for i, name in enumerate(categorical)]
    first = df.agg(*aggregates).head().asDict()
    rows = first["rows"]

    profiles: dict[str, dict[str, Any]] = {}
    edges = {name: reference_edges(first[f"n{i}_pct"]) for i, name in enumerate(numeric)}
    counts = _bin_counts(*with_numeric_bins(df, edges)) if numeric else {}
    for i, name in enumerate(numeric):
        profiles[name] = numeric_reference(rows, rows - first[f"n{i}_count"], edges[name], counts[i])
    top = top_values(df, categorical, max_values) if categorical else []
    for i, name in enumerate(categorical):
        profiles[name] = categorical_reference(rows, first[f"c{i}_count"], top[i])
    return {name: profiles[name] for name, _ in columns}


def top_values(df: DataFrame, names: Sequence[str], limit: int) -> list[list[tuple[str, int]]]:
    """Per column, its `limit` most frequent non-null values as Spark casts them to strings, with their counts
    (ties by value)."""
    cells = F.explode(F.array(*(F.struct(F.lit(i).alias("column"), _value(name, "categorical").alias("value"))
                                for i, name in enumerate(names)))).alias("cell")
    counted = (df.select(cells).where(F.col("cell.value").isNotNull())
               .groupBy(F.col("cell.column").alias("column"), F.col("cell.value").alias("value")).count())
    rank = F.row_number().over(Window.partitionBy("column").orderBy(F.desc("count"), F.asc("value")))
    top: list[list[tuple[str, int]]] = [[] for _ in names]
    for row in counted.withColumn("rank", rank).where(F.col("rank") <= limit).orderBy("column", "rank").collect():
        top[row["column"]].append((row["value"], row["count"]))
    return top
