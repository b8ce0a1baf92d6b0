"""Validate: apply the spec's rules and type checks; bad rows go to quarantine with a reason per row.

Beyond the rules, every row is checked for what would break later stages silently: NaN or infinite floats, a
numeric feature (or regression label) that float32, the training dtype, cannot hold, and text that holds U+FFFD,
the character a decoder puts in place of bytes it could not decode.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from functools import partial, reduce
from pathlib import Path

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Observation
from pyspark.sql import functions as F

from continuous_training.data.ingest import CORRUPT_RECORD, SOURCE_FILE
from continuous_training.errors import PipelineError
from continuous_training.paths import QUARANTINE_DATA, VALID_DATA, VALIDATION_FILE, ValidationResult, write_result
from continuous_training.spark import col, in_parallel
from continuous_training.spec import DatasetSpec, is_numeric_type

REASONS = "_quarantine_reasons"
REASON = "quarantine_reason"
FLOAT32_MAX = float(np.finfo(np.float32).max)
REPLACEMENT_CHARACTER = "\ufffd"


def _literal_list(values: list) -> list[Column]:
    return [F.lit(value) for value in values]


def rule_checks(spec: DatasetSpec, columns: Collection[str] | None = None,
                labelled: bool = True) -> list[tuple[str, Column]]:
    """(reason, failed-condition) pairs over `columns` (default: every spec column); a row fails a check when its
    condition is true. Unlabelled rows (batches to score) may lack the label or have it null."""
    columns = set(spec.schema_ if columns is None else columns)
    undecodable = "holds undecodable bytes (U+FFFD)"
    checks: list[tuple[str, Column]] = [
        ("malformed record: does not parse against the schema", F.col(CORRUPT_RECORD).isNotNull()),
        (f"the raw record {undecodable}", F.col(CORRUPT_RECORD).contains(REPLACEMENT_CHARACTER)),
    ]
    if labelled:
        checks.append((f"label {spec.label!r} is null", col(spec.label).isNull()))
    as_float32 = {*spec.features.numeric, *([spec.label] if spec.task == "regression" else [])}
    for column, spark_type in spec.schema_.items():
        if column not in columns:
            continue
        value = col(column)
        if spark_type in {"double", "float"}:
            checks.append((f"{column!r} is NaN or infinite", F.isnan(value) | value.isin(float("inf"), float("-inf"))))
        if spark_type == "double" and column in as_float32:  # the other numeric types all fit float32's range
            checks.append((f"{column!r} is beyond the float32 range (|x| > {FLOAT32_MAX:.8g})",
                           (F.abs(value) > F.lit(FLOAT32_MAX)) & (F.abs(value) < F.lit(float("inf")))))
        if spark_type == "string":
            checks.append((f"{column!r} {undecodable}", value.contains(REPLACEMENT_CHARACTER)))
    for column, rules in spec.rules.items():
        if column not in columns:
            continue
        value = col(column)
        if rules.not_null and column != spec.label:
            checks.append((f"{column!r} is null", value.isNull()))
        if rules.min is not None:
            checks.append((f"{column!r} below min {rules.min}", value < F.lit(rules.min)))
        if rules.max is not None:
            checks.append((f"{column!r} above max {rules.max}", value > F.lit(rules.max)))
        if rules.allowed is not None:
            allowed = rules.allowed
            if not is_numeric_type(spec.schema_[column]):
                allowed = [str(v).lower() if isinstance(v, bool) else str(v) for v in allowed]
            checks.append((f"{column!r} not in allowed values", ~value.isin(*_literal_list(allowed))))
    for column in (c for c in _unique_columns(spec) if c in columns):
        checks.append((f"duplicate {column!r}", F.col(_duplicate_flag(column, spec)).isNotNull()))
    return checks


def _duplicate_flag(column: str, spec: DatasetSpec) -> str:
    return f"_duplicate_{_unique_columns(spec).index(column)}"


def duplicated_values(frame: DataFrame, spec: DatasetSpec) -> dict[str, DataFrame]:
    """Per unique column the frame has, its non-null values that occur more than once."""
    return {
        column: frame.where(col(column).isNotNull()).groupBy(col(column).alias(_duplicate_flag(column, spec)))
        .count().where(F.col("count") > 1).select(_duplicate_flag(column, spec))
        for column in _unique_columns(spec) if column in frame.columns
    }


def _unique_columns(spec: DatasetSpec) -> list[str]:
    unique = [column for column, rules in spec.rules.items() if rules.unique]
    if spec.id_column and spec.id_column not in unique:
        unique.insert(0, spec.id_column)
    return unique


def _with_checks(frame: DataFrame, spec: DatasetSpec, labelled: bool,
                 duplicates: dict[str, DataFrame] | None) -> tuple[DataFrame, list[tuple[str, Column]]]:
    """The frame joined with its duplicate flags, and the (reason, failed) checks over it (null counts as passed)."""
    checks = rule_checks(spec, [column for column in frame.columns if column in spec.schema_], labelled)
    flagged = frame
    for column, values in (duplicated_values(frame, spec) if duplicates is None else duplicates).items():
        flagged = flagged.join(values, col(column) == F.col(_duplicate_flag(column, spec)), "left")
    return flagged, [(reason, F.coalesce(condition, F.lit(False))) for reason, condition in checks]


def _reasons(checks: list[tuple[str, Column]]) -> Column:
    reasons = F.array(*(F.when(failed, F.lit(reason)) for reason, failed in checks))
    return F.filter(reasons, lambda reason: reason.isNotNull())


def annotate(frame: DataFrame, spec: DatasetSpec, labelled: bool = True,
             duplicates: dict[str, DataFrame] | None = None) -> DataFrame:
    """Add an array column of every reason a row fails (empty when valid), checking the spec columns the frame has.

    A check on a null value passes; only not_null rules and the label check catch nulls. `duplicates` are the
    frame's `duplicated_values` (computed here when not given), each joined on its column.
    """
    flagged, checks = _with_checks(frame, spec, labelled, duplicates)
    return flagged.select(*(col(column) for column in frame.columns), _reasons(checks).alias(REASONS))


def _outputs(frame: DataFrame, spec: DatasetSpec, labelled: bool, duplicates: dict[str, DataFrame],
             observations: tuple[Observation, Observation, Observation],
             ) -> tuple[list[tuple[str, Column]], DataFrame, DataFrame]:
    """The checks, the valid rows and the quarantined rows (with `quarantine_reason`) of `validate`, observing the
    rows read, the rows of each output and the quarantined rows per check."""
    read, kept, quarantine = observations
    rows = F.count(F.lit(1)).alias("rows")
    columns = [col(column) for column in spec.schema_ if column in frame.columns]
    flagged, checks = _with_checks(frame, spec, labelled, duplicates)
    failing = reduce(lambda a, b: a | b, [condition for _, condition in checks])
    valid = flagged.observe(read, rows).where(~failing).observe(kept, rows).select(*columns)
    per_reason = [F.count_if(condition).alias(f"reason_{i}") for i, (_, condition) in enumerate(checks)]
    quarantined = (flagged.where(failing).observe(quarantine, rows, *per_reason)
                   .select(F.array_join(_reasons(checks), "; ").alias(REASON), *columns, CORRUPT_RECORD, SOURCE_FILE))
    return checks, valid, quarantined


def validate(frame: DataFrame, spec: DatasetSpec, run_id: str, out_dir: Path,
             max_quarantine_fraction: float, labelled: bool = True,
             quarantined_files: Mapping[str, str] | None = None) -> ValidationResult:
    """Write `out_dir/valid`, `out_dir/quarantine` (with `quarantine_reason`) and `validation.json`.

    The spec columns the frame has are checked and kept (a batch to score may lack the label and other non-feature
    columns; with `labelled=False` a null label is no reason to quarantine). `quarantined_files` (the manifest's:
    files ingest could not read, with their reasons) are listed in `validation.json`. Raises PipelineError after
    writing when the quarantined fraction exceeds `max_quarantine_fraction`.
    """
    duplicates = {column: values.persist(StorageLevel.MEMORY_AND_DISK)
                  for column, values in duplicated_values(frame, spec).items()}
    read, kept, quarantine = Observation("read"), Observation("valid"), Observation("quarantined")
    try:
        _, (checks, valid, quarantined_rows) = in_parallel(
            frame.sparkSession, lambda: [values.count() for values in duplicates.values()],
            partial(_outputs, frame, spec, labelled, duplicates, (read, kept, quarantine)))
        valid.write.mode("overwrite").parquet(str(out_dir / VALID_DATA))
        quarantined_rows.write.mode("overwrite").parquet(str(out_dir / QUARANTINE_DATA))
    finally:
        for values in duplicates.values():
            values.unpersist()
    quarantine_counts = quarantine.get  # read once: each `get` converts the whole observed row
    rows_in, valid_rows, quarantined = read.get["rows"], kept.get["rows"], quarantine_counts["rows"]
    if valid_rows + quarantined != rows_in:
        raise PipelineError(f"validate: {rows_in} rows in but {valid_rows} valid + {quarantined} quarantined")
    reason_counts = [(reason, quarantine_counts[f"reason_{i}"]) for i, (reason, _) in enumerate(checks)]
    fraction = quarantined / rows_in if rows_in else 0.0
    result = ValidationResult(
        dataset=spec.name,
        run_id=run_id,
        rows_in=rows_in,
        valid=valid_rows,
        quarantined=quarantined,
        quarantine_fraction=round(fraction, 6),
        max_quarantine_fraction=max_quarantine_fraction,
        reasons=dict(sorted(((reason, count) for reason, count in reason_counts if count), key=lambda rc: -rc[1])),
        quarantined_files=dict(quarantined_files or {}),
    )
    write_result(out_dir / VALIDATION_FILE, result)
    if fraction > max_quarantine_fraction:
        top = ", ".join(f"{reason}: {count}" for reason, count in list(result.reasons.items())[:5])
        raise PipelineError(
            f"validate: {quarantined} of {rows_in} rows ({fraction:.2%}) quarantined for {spec.name!r}, above the "
            f"limit of {max_quarantine_fraction:.2%}. Top reasons: {top}. Quarantined rows: {out_dir / QUARANTINE_DATA}"
        )
    if valid_rows == 0:
        raise PipelineError(f"validate: no valid rows left for {spec.name!r}; see {out_dir / QUARANTINE_DATA}")
    return result
