"""Delayed labels: read a scored date's labels feed, and land its scored rows with their labels as a training batch.

A scored date's labelled batch lands once, in `monitoring.labelled_batches` rendered for the date, in the source's
format and options, with the spec's schema columns in order (inputs from the scored partition, the label and any
other schema column from the labels feed). Rows whose label has not arrived stay out and are counted. The batch is
written under `$DATA_DIR/_staging/` and renamed into place, so a reader never sees half of it; a date that already
landed is left as it is.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from continuous_training.config import Settings, get_settings
from continuous_training.errors import PipelineError
from continuous_training.paths import SUCCESS_MARKER, dated_path, local_matches
from continuous_training.serving.scored import partition_dir, scored_dates
from continuous_training.spark import col
from continuous_training.spec import DatasetSpec

log = logging.getLogger(__name__)

LANDED_FILE = "labelled_batches.json"
LANDING_MANIFEST = "_landed.json"


def read_labels(spark: SparkSession, spec: DatasetSpec, days: Sequence[date],
                settings: Settings | None = None) -> DataFrame | None:
    """The labels feed of `days` with every column it has of the spec's schema, cast to the schema's types (a
    value that does not parse becomes null, so its row counts as unlabelled); None when no labels have arrived (a
    non-local URI counts as arrived: Spark decides)."""
    labels = spec.monitoring.labels if spec.monitoring else None
    if labels is None:
        return None
    paths = [path for path in (dated_path(labels.path, day, settings) for day in days) if local_matches(path) != []]
    if not paths:
        return None
    frame = spark.read.format(labels.format).options(**{k: str(v) for k, v in labels.options.items()}).load(paths)
    columns = [column for column in spec.schema_ if column in frame.columns]
    for required in (spec.id_column, spec.label):
        if required not in columns:
            raise PipelineError(f"labels feed {paths} has no column {required!r} (columns: {frame.columns})")
    return frame.select(*[col(column).cast(spec.schema_[column]).alias(column) for column in columns])


def land_labelled_batch(spark: SparkSession, spec: DatasetSpec, day: date,
                        settings: Settings | None = None) -> dict[str, Any]:
    """Land one scored date's rows with their labels, once; returns what happened (status, rows, path)."""
    settings = settings or get_settings()
    target = Path(dated_path(spec.monitoring.labelled_batches, day, settings))
    outcome: dict[str, Any] = {"scored_for": day.isoformat(), "path": str(target)}
    if (target / SUCCESS_MARKER).is_file():
        manifest = target / LANDING_MANIFEST
        return {**outcome, **(json.loads(manifest.read_text()) if manifest.is_file() else {}),
                "status": "already_landed"}
    labels = read_labels(spark, spec, [day], settings)
    if labels is None:
        return {**outcome, "status": "no_labels_yet"}
    scored = spark.read.parquet(str(partition_dir(spec, day, settings)))
    from_labels = [column for column in labels.columns if column != spec.id_column]
    inputs = scored.select(*[col(column) for column in spec.schema_
                             if column in scored.columns and column not in from_labels])
    labelled = inputs.join(labels.dropDuplicates([spec.id_column]), on=spec.id_column, how="left")
    batch = labelled.select(*[
        (col(column) if column in labelled.columns else F.lit(None)).cast(spec.schema_[column]).alias(column)
        for column in spec.schema_
    ])
    counts = batch.agg(F.count(F.lit(1)).alias("rows"), F.count(col(spec.label)).alias("labelled")).head()
    landed = {"rows_scored": counts["rows"], "rows_landed": counts["labelled"],
              "rows_without_label": counts["rows"] - counts["labelled"]}
    staging = settings.data_dir / "_staging" / spec.name / target.name
    shutil.rmtree(staging, ignore_errors=True)
    (batch.where(col(spec.label).isNotNull()).write.format(spec.source.format)
     .options(**{k: str(v) for k, v in spec.source.options.items()}).mode("overwrite").save(str(staging)))
    (staging / LANDING_MANIFEST).write_text(json.dumps({"scored_for": day.isoformat(), **landed}, indent=2))
    if target.exists():
        raise PipelineError(f"{target} exists but holds no {SUCCESS_MARKER}: a batch is half there; remove it to land "
                            f"the labelled rows of {day} again")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)
    log.info("landed %d labelled rows of %s scored for %s in %s (%d without a label kept out)",
             counts["labelled"], spec.name, day, target, landed["rows_without_label"])
    return {**outcome, **landed, "status": "landed"}


def land_labelled_batches(spark: SparkSession, spec: DatasetSpec, up_to: date,
                          settings: Settings | None = None) -> list[dict[str, Any]]:
    """Land every scored date up to `up_to` whose labels arrived and that has not landed yet; one outcome per
    scored date (nothing when the spec lands no labelled batches)."""
    if spec.monitoring is None or spec.monitoring.labelled_batches is None:
        return []
    return [land_labelled_batch(spark, spec, scored.day, settings)
            for scored in scored_dates(spec, settings) if scored.day <= up_to]
