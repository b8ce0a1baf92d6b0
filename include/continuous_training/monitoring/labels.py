"""Delayed labels: read a scored date's labels feed once it is complete, and land its scored rows with their labels
as training batches, each labelled row exactly once.

A date's labels feed (`monitoring.labels.path` rendered for the date) is complete once its folder holds a
`_SUCCESS` marker, or, when the spec declares `monitoring.labels_complete_after_days`, that many days after the
date; until then nothing of it is read. Once complete, the date's labelled rows land in
`monitoring.labelled_batches` rendered for the date, in the source's format and options, with the spec's schema
columns in order (inputs from the scored partition, the label and any other schema column from the labels feed).
Labels that arrive later (the feed's files changed since the last batch) land as a follow-up batch beside it,
`<batch>.followup-<n>`, holding only rows no earlier batch of the date holds. Rows whose label has not arrived stay
out and are counted. Each batch is written under `$DATA_DIR/_staging/` and renamed into place, so a reader never
sees half of it, and a batch is what the next run reads back to know which rows landed.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from continuous_training.config import Settings, get_settings
from continuous_training.data.ingest import read_source
from continuous_training.errors import PipelineError
from continuous_training.paths import SUCCESS_MARKER, dated_path, local_matches, write_result
from continuous_training.serving.scored import partition_dir, scored_dates
from continuous_training.spark import col
from continuous_training.spec import DatasetSpec

log = logging.getLogger(__name__)

LANDED_FILE = "labelled_batches.json"
LANDING_MANIFEST = "_landed.json"
FOLLOW_UP = ".followup-"


def batch_marker(path: str) -> Path:
    """The `_SUCCESS` marker of the batch folder a rendered file or glob names: its parent folder (the path itself
    when it ends in `/`). A PipelineError when the marker cannot be checked: a non-local URI, or a wildcard in the
    folder part (one folder per date is needed)."""
    local = path.removeprefix("file:").replace("///", "/", 1) if path.startswith("file:") else path
    if "://" in local:
        raise PipelineError(f"cannot check the {SUCCESS_MARKER} marker of {path}: not a local path")
    folder = Path(local) if local.endswith("/") else Path(local).parent
    if any(char in str(folder) for char in "*?[{"):
        raise PipelineError(f"the folder of {path} holds a wildcard: its batch needs one folder, with a "
                            f"{SUCCESS_MARKER} marker")
    return folder / SUCCESS_MARKER


def labels_pending(spec: DatasetSpec, day: date, up_to: date, settings: Settings | None = None) -> str | None:
    """Why the labels feed of `day` is not complete by `up_to`; None once it is."""
    monitoring = spec.monitoring
    delay = monitoring.labels_complete_after_days
    if delay is not None and day + timedelta(days=delay) <= up_to:
        return None
    feed = dated_path(monitoring.labels.path, day, settings)
    try:
        marker = batch_marker(feed)
    except PipelineError as error:
        raise PipelineError(f"labels of {day}: {error}; declare monitoring.labels_complete_after_days for such a "
                            "feed") from None
    if marker.is_file():
        return None
    return f"waiting for {marker}" + (f" or {day + timedelta(days=delay)}" if delay is not None else "")


def read_labels(spark: SparkSession, spec: DatasetSpec, days: Sequence[date], up_to: date,
                settings: Settings | None = None) -> DataFrame | None:
    """The labels feed of those `days` whose feed is complete by `up_to`, with every column it has of the spec's
    schema, cast to the schema's types (a value that does not parse becomes null, so its row counts as
    unlabelled); None when no complete feed has files (a non-local URI counts as having them: Spark decides)."""
    labels = spec.monitoring.labels if spec.monitoring else None
    if labels is None:
        return None
    paths = [path for path in (dated_path(labels.path, day, settings) for day in days
                               if labels_pending(spec, day, up_to, settings) is None)
             if local_matches(path) != []]
    if not paths:
        return None
    frame = spark.read.format(labels.format).options(**{k: str(v) for k, v in labels.options.items()}).load(paths)
    columns = [column for column in spec.schema_ if column in frame.columns]
    for required in (spec.id_column, spec.label):
        if required not in columns:
            raise PipelineError(f"labels feed {paths} has no column {required!r} (columns: {frame.columns})")
    return frame.select(*[col(column).cast(spec.schema_[column]).alias(column) for column in columns])


def _feed_fingerprint(path: str) -> str | None:
    """A digest of the names, sizes and modification times of the files a labels feed glob matches; None when
    Python cannot list them (a non-local URI)."""
    matches = local_matches(path)
    if matches is None:
        return None
    listing = [(match, stat.st_size, stat.st_mtime_ns) for match in matches for stat in [Path(match).stat()]]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


def landed_batches(target: Path) -> list[Path]:
    """The batches a date landed, in order: its folder, then its follow-ups. A PipelineError for a folder there
    without its marker (half a batch)."""
    follow_ups = {int(path.name.rsplit(FOLLOW_UP, 1)[1]): path
                  for path in target.parent.glob(f"{glob.escape(target.name)}{FOLLOW_UP}*")
                  if path.name.rsplit(FOLLOW_UP, 1)[1].isdigit()}
    batches = [path for path in [target, *(follow_ups[n] for n in sorted(follow_ups))] if path.exists()]
    for batch in batches:
        if not (batch / SUCCESS_MARKER).is_file():
            raise PipelineError(f"{batch} exists but holds no {SUCCESS_MARKER}: a batch is half there; remove it to "
                                "land its labelled rows again")
    return batches


def _manifest(batch: Path) -> dict[str, Any]:
    manifest = batch / LANDING_MANIFEST
    return json.loads(manifest.read_text()) if manifest.is_file() else {}


def land_labelled_batch(spark: SparkSession, spec: DatasetSpec, day: date, up_to: date,
                        settings: Settings | None = None) -> dict[str, Any]:
    """Land one scored date's labelled rows that no earlier batch of the date holds, once its labels feed is
    complete by `up_to`; returns what happened: status (`labels_incomplete`, `no_labels_yet`, `landed`: rows this
    batch holds, or `already_landed`: rows all batches of the date hold), rows, the batch folders."""
    settings = settings or get_settings()
    target = Path(dated_path(spec.monitoring.labelled_batches, day, settings))
    outcome: dict[str, Any] = {"scored_for": day.isoformat(), "path": str(target)}
    if spec.monitoring.labels is None:
        return {**outcome, "status": "no_labels_yet"}
    pending = labels_pending(spec, day, up_to, settings)
    if pending is not None:
        return {**outcome, "status": "labels_incomplete", "reason": pending}
    landed = landed_batches(target)
    manifests = [_manifest(batch) for batch in landed]
    before = sum(manifest.get("rows_landed", 0) for manifest in manifests)
    fingerprint = _feed_fingerprint(dated_path(spec.monitoring.labels.path, day, settings))
    done = {**outcome, "status": "already_landed", "rows_landed": before, "batches": [str(b) for b in landed],
            **({"rows_without_label": manifests[-1].get("rows_without_label")} if manifests else {})}
    if landed and fingerprint is not None and manifests[-1].get("labels_fingerprint") == fingerprint:
        return done
    labels = read_labels(spark, spec, [day], up_to, settings)
    if labels is None:
        return done if landed else {**outcome, "status": "no_labels_yet"}
    scored = spark.read.parquet(str(partition_dir(spec, day, settings)))
    if landed:
        earlier = read_source(spark, spec, [str(batch) for batch in landed]).select(spec.id_column)
        scored = scored.join(earlier, on=spec.id_column, how="left_anti")
    from_labels = [column for column in labels.columns if column != spec.id_column]
    inputs = scored.select(*[col(column) for column in spec.schema_
                             if column in scored.columns and column not in from_labels])
    labelled = inputs.join(labels.dropDuplicates([spec.id_column]), on=spec.id_column, how="left")
    batch = labelled.select(*[
        (col(column) if column in labelled.columns else F.lit(None)).cast(spec.schema_[column]).alias(column)
        for column in spec.schema_
    ])
    counts = batch.agg(F.count(F.lit(1)).alias("rows"), F.count(col(spec.label)).alias("labelled")).head()
    if counts["labelled"] == 0:
        if not landed:
            return {**outcome, "status": "no_labels_yet", "rows_without_label": counts["rows"]}
        # Nothing new in the changed feed: remember that it was read, so the next run does not read it again.
        write_result(landed[-1] / LANDING_MANIFEST, {**manifests[-1], "rows_without_label": counts["rows"],
                                                     "labels_fingerprint": fingerprint})
        return {**done, "rows_without_label": counts["rows"]}
    landing = {"rows_scored": before + counts["rows"], "rows_landed": counts["labelled"],
               "rows_landed_before": before, "rows_without_label": counts["rows"] - counts["labelled"]}
    folder = target.with_name(f"{target.name}{FOLLOW_UP}{len(landed)}") if landed else target
    staging = settings.data_dir / "_staging" / spec.name / folder.name
    shutil.rmtree(staging, ignore_errors=True)
    (batch.where(col(spec.label).isNotNull()).write.format(spec.source.format)
     .options(**{k: str(v) for k, v in spec.source.options.items()}).mode("overwrite").save(str(staging)))
    write_result(staging / LANDING_MANIFEST, {"scored_for": day.isoformat(), **landing,
                                              "labels_fingerprint": fingerprint})
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(folder)
    log.info("landed %d labelled rows of %s scored for %s in %s (%d landed before, %d without a label kept out)",
             counts["labelled"], spec.name, day, folder, before, landing["rows_without_label"])
    return {**outcome, **landing, "path": str(folder), "status": "landed",
            "batches": [*map(str, landed), str(folder)]}


def land_labelled_batches(spark: SparkSession, spec: DatasetSpec, up_to: date,
                          settings: Settings | None = None) -> list[dict[str, Any]]:
    """Land the labelled rows of every scored date up to `up_to` whose labels feed is complete and that no batch of
    the date holds yet; one outcome per scored date (nothing when the spec lands no labelled batches)."""
    if spec.monitoring is None or spec.monitoring.labelled_batches is None:
        return []
    return [land_labelled_batch(spark, spec, scored.day, up_to, settings)
            for scored in scored_dates(spec, settings) if scored.day <= up_to]
