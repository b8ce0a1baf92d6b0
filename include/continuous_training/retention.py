"""Retention: what cleanup removes from DATA_DIR and from MLflow, so storage stays bounded.

Training stage folders (`$DATA_DIR/<dataset>/<stage>/run_id=<id>/`): the last RETENTION_RUNS runs per stage stay
whole. An older run that produced a registered model version (its version tag `data_run_id`) keeps its records and
loses its bulk data (ingest `data/`, validate `valid/` and `quarantine/`, featurize splits, train `checkpoints/`);
the runs of `@champion` and `@challenger` also keep their whole featurize folder, the test split they are
re-evaluated on. Other runs go. Scoring run folders, predictions partitions and monitoring outputs for a date more
than RETENTION_DAYS before the cleanup's date go, and so do finished MLflow runs of `<dataset>-scoring` and
`<dataset>-monitoring` for a date more than MLFLOW_RETENTION_DAYS before it. Ages are those of the data's dates
(`scored_for`, `checked_for`), so a backfill and a simulated month age like a real one; an output without a
readable date ages from the day it was written.

Fail closed: nothing is removed when the registry cannot be read; a folder whose stage lock is held (a task may be
writing it) is skipped, and the lock is held while it is removed; a folder is renamed into `$DATA_DIR/_trash/` before
it is deleted, so a half-deleted folder never looks whole.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from mlflow.entities import Run, ViewType
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import SQLAlchemyError

from continuous_training.config import Settings, get_settings
from continuous_training.errors import PipelineError
from continuous_training.monitoring.drift import CHECKED_FOR_TAG, DRIFT_FILE, monitoring_experiment
from continuous_training.paths import (
    CHECKPOINTS_DIR,
    EVALUATE,
    FEATURIZE,
    INGEST,
    INGESTED_DATA,
    MONITORING,
    PROMOTE,
    QUARANTINE_DATA,
    RAW_SPLITS_DATA,
    STATS,
    TRAIN,
    VALID_DATA,
    VALIDATE,
    run_dir_name,
    stage_for,
    stage_lock,
)
from continuous_training.registry import DATA_RUN_TAG
from continuous_training.serving.batch import scoring_experiment
from continuous_training.serving.scored import PARTITION, PREDICTIONS, partition_day, predictions_dir, scored_dates
from continuous_training.spec import DatasetSpec, load_spec, named_specs
from continuous_training.tracking import (
    AIRFLOW_RUN_ID_TAG,
    CHALLENGER,
    CHAMPION,
    alias_version,
    filter_literal,
    mlflow_client,
    redacted_uri,
)

log = logging.getLogger(__name__)

TRASH_DIR = "_trash"
TRAINING_STAGES = (INGEST, VALIDATE, STATS, FEATURIZE, TRAIN, EVALUATE, PROMOTE)
SCORING_STAGES = (stage_for(INGEST, True), stage_for(VALIDATE, True))
# What an older registered run loses per stage; the rest of its folder (its records) stays.
BULK = {INGEST: (INGESTED_DATA,), VALIDATE: (VALID_DATA, QUARANTINE_DATA),
        FEATURIZE: (RAW_SPLITS_DATA, "train", "validation", "test"), TRAIN: (CHECKPOINTS_DIR,)}
# The lock jobs/land_labels.py holds while it reads predictions and writes monitoring outputs.
LAND_LABELS_LOCK = ("land_labels", "every-date")
_FINISHED = {"FINISHED", "FAILED", "KILLED"}


@dataclass(frozen=True)
class Removal:
    """A folder to remove, why, and the stage locks (stage, key) that guard it."""

    path: Path
    reason: str
    locks: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class RunRemoval:
    """An MLflow run to delete."""

    experiment: str
    run_id: str
    reason: str


@dataclass
class Plan:
    """What cleanup removes from one dataset."""

    dataset: str
    folders: list[Removal] = field(default_factory=list)
    runs: list[RunRemoval] = field(default_factory=list)


@dataclass
class Outcome:
    """What a cleanup removed (or, in a dry run, would remove) and what it skipped, one line each."""

    removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Protected:
    """The run folder names (`run_id=...`) of registered versions, and of those holding @champion or @challenger,
    and the MLflow runs the versions came from."""

    registered: frozenset[str]
    serving: frozenset[str]
    mlflow_runs: frozenset[str]


def protected_runs(client: MlflowClient, spec: DatasetSpec) -> Protected:
    """The runs the registered versions of the dataset's model came from; a PipelineError (one line) when a version
    does not name its run."""
    name = spec.registered_model_name
    versions, token = [], None
    while True:
        page = client.search_model_versions(f"name = {filter_literal(name)}", page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            break
    data_runs = {version.version: _data_run(client, version) for version in versions}
    serving = [alias_version(client, name, alias) for alias in (CHAMPION, CHALLENGER)]
    return Protected(registered=frozenset(map(run_dir_name, data_runs.values())),
                     serving=frozenset(run_dir_name(data_runs[v.version]) for v in serving if v is not None),
                     mlflow_runs=frozenset(version.run_id for version in versions if version.run_id))


def _data_run(client: MlflowClient, version: ModelVersion) -> str:
    """The Airflow run id a version was trained in: its tag, else its training run's."""
    run_id = version.tags.get(DATA_RUN_TAG) or version.tags.get(AIRFLOW_RUN_ID_TAG)
    if not run_id and version.run_id:
        run_id = client.get_run(version.run_id).data.tags.get(AIRFLOW_RUN_ID_TAG)
    if not run_id:
        raise PipelineError(f"cleanup refused: {version.name} version {version.version} names no Airflow run (tag "
                            f"{DATA_RUN_TAG!r}), so its run folders cannot be told apart; nothing is deleted")
    return run_id


def _run_folders(stage_path: Path) -> list[Path]:
    """The run folders of a stage, newest first (by modification time)."""
    if not stage_path.is_dir():
        return []
    return sorted(stage_path.glob("run_id=*"), key=lambda path: path.stat().st_mtime, reverse=True)


def _key(folder: Path) -> str:
    return folder.name.split("=", 1)[1]


def _keep_days(spec: DatasetSpec, settings: Settings) -> int:
    """Days of scoring and monitoring outputs kept: RETENTION_DAYS, at least the drift window and the labels'
    delay (a daily scoring schedule)."""
    monitoring = spec.monitoring
    if monitoring is None:
        return settings.retention_days
    return max(settings.retention_days, monitoring.window, monitoring.labels_complete_after_days or 0)


def plan_dataset(client: MlflowClient, spec: DatasetSpec, now: datetime, settings: Settings) -> Plan:
    """What cleanup removes from one dataset as of `now`."""
    protected = protected_runs(client, spec)
    root, plan = settings.data_dir / spec.name, Plan(spec.name)
    for stage in TRAINING_STAGES:
        for folder in _run_folders(root / stage)[settings.retention_runs:]:
            locks = ((stage, _key(folder)),)
            if folder.name not in protected.registered:
                plan.folders.append(Removal(folder, f"training run older than the last {settings.retention_runs}",
                                            locks))
            elif not (stage == FEATURIZE and folder.name in protected.serving):
                plan.folders.extend(Removal(folder / bulk, "bulk data of an older registered run", locks)
                                    for bulk in BULK.get(stage, ()) if (folder / bulk).exists())
    keep_days = _keep_days(spec, settings)
    cutoff = (now - timedelta(days=keep_days)).date()
    old = f"older than {keep_days} days"
    partitions = {day: partition for partition in sorted(predictions_dir(spec, settings).glob(f"{PARTITION}=*"))
                  if (day := partition_day(partition)) is not None}
    scored_for = {run_dir_name(scored.airflow_run_id): scored.day for scored in scored_dates(spec, settings)
                  if scored.airflow_run_id}
    for stage in SCORING_STAGES:
        plan.folders.extend(Removal(folder, f"scoring run {old}", ((stage, _key(folder)),))
                            for folder in _run_folders(root / stage)
                            if scored_for.get(folder.name, _mtime(folder)) < cutoff)
    plan.folders.extend(Removal(folder, f"monitoring output {old}", ((MONITORING, _key(folder)), LAND_LABELS_LOCK))
                        for folder in _run_folders(root / MONITORING) if _checked_for(folder) < cutoff)
    plan.folders.extend(Removal(partition, f"predictions {old}", ((PREDICTIONS, day.isoformat()), LAND_LABELS_LOCK))
                        for day, partition in partitions.items() if day < cutoff)
    plan.runs = _old_runs(client, spec, (now - timedelta(days=settings.mlflow_retention_days)).date(), protected,
                          settings.mlflow_retention_days)
    return plan


def _json(path: Path) -> dict | None:
    """A result file's content; None when it is missing or damaged."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _mtime(path: Path) -> date:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).date()


def _checked_for(folder: Path) -> date:
    """The date a monitoring output is for (its drift.json), else the day it was written."""
    result = _json(folder / DRIFT_FILE) or {}
    return date.fromisoformat(result["checked_for"]) if "checked_for" in result else _mtime(folder)


def _old_runs(client: MlflowClient, spec: DatasetSpec, cutoff: date, protected: Protected,
              days: int) -> list[RunRemoval]:
    """Finished scoring and monitoring runs for a date before `cutoff` (their `scored_for` or `checked_for` tag;
    the day they started for a run without one), never one a registered version came from."""
    found = []
    for name, date_tag in ((scoring_experiment(spec), PARTITION), (monitoring_experiment(spec), CHECKED_FOR_TAG)):
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            continue
        token = None
        while True:
            page = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ACTIVE_ONLY,
                                      page_token=token)
            found.extend(RunRemoval(name, run.info.run_id, f"MLflow run older than {days} days") for run in page
                         if run.info.status in _FINISHED and run.info.run_id not in protected.mlflow_runs
                         and _run_day(run, date_tag) < cutoff)
            token = page.token
            if not token:
                break
    return found


def _run_day(run: Run, date_tag: str) -> date:
    if date_tag in run.data.tags:
        return date.fromisoformat(run.data.tags[date_tag])
    return datetime.fromtimestamp(run.info.start_time / 1000, UTC).date()


def plan_cleanup(datasets: Iterable[DatasetSpec], now: datetime, settings: Settings) -> list[Plan]:
    """The plans of every dataset, all read before anything is removed; a PipelineError when the registry cannot
    be read (a SQLite store that does not exist counts as unreadable: MLflow would create an empty one)."""
    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise PipelineError(f"cleanup refused: the model registry {redacted_uri(uri)} does not exist, so nothing "
                            "is deleted")
    try:
        client = mlflow_client(settings)
        return [plan_dataset(client, spec, now, settings) for spec in datasets]
    except (MlflowException, SQLAlchemyError) as error:
        raise PipelineError(f"cleanup refused: the model registry {redacted_uri(uri)} cannot be read, so nothing is "
                            f"deleted: {str(error).strip().splitlines()[0]}") from None


def apply_plans(plans: list[Plan], settings: Settings, dry_run: bool) -> Outcome:
    """Remove what the plans name (a dry run removes nothing and reports the same lines): a folder only while it
    holds all of its stage locks, renamed into the trash and then deleted."""
    outcome, verb = Outcome(), "would remove" if dry_run else "removed"
    trash = settings.data_dir / TRASH_DIR
    for leftover in sorted(trash.iterdir()) if trash.is_dir() else []:
        outcome.removed.append(f"{verb} {leftover} (left in the trash by an earlier cleanup)")
        if not dry_run:
            shutil.rmtree(leftover)
    for plan in plans:
        for removal in plan.folders:
            with ExitStack() as held:
                try:
                    for stage, key in removal.locks:
                        held.enter_context(stage_lock(plan.dataset, stage, key, settings))
                except PipelineError:
                    outcome.skipped.append(f"skipped {removal.path}: a task holds its stage lock")
                    continue
                if not dry_run:
                    _remove(removal.path, trash)
                outcome.removed.append(f"{verb} {removal.path} ({removal.reason})")
        if plan.runs and not dry_run:
            client = mlflow_client(settings)
            for run in plan.runs:
                client.delete_run(run.run_id)
        outcome.removed.extend(f"{verb} MLflow run {run.run_id} of {run.experiment} ({run.reason})"
                               for run in plan.runs)
    return outcome


def _remove(path: Path, trash: Path) -> None:
    """Rename into the trash, then delete: a reader sees the folder whole or not at all."""
    trash.mkdir(parents=True, exist_ok=True)
    target = trash / f"{uuid.uuid4().hex}-{path.name}"
    parent = path.parent.stat()
    path.rename(target)
    # The run folder keeps its time, by which the last RETENTION_RUNS are told.
    os.utime(path.parent, ns=(parent.st_atime_ns, parent.st_mtime_ns))
    shutil.rmtree(target)


def cleanup(dataset: str | None, now: datetime, dry_run: bool = False, settings: Settings | None = None) -> Outcome:
    """Apply retention to one dataset (a name or spec path) or to every named spec; logs each line."""
    settings = settings or get_settings()
    specs = [load_spec(dataset, settings)] if dataset else named_specs(settings)
    outcome = apply_plans(plan_cleanup(specs, now, settings), settings, dry_run)
    for line in [*outcome.removed, *outcome.skipped]:
        log.info("%s", line)
    log.info("cleanup of %s: %d %s, %d skipped", dataset or "every named dataset", len(outcome.removed),
             "to remove" if dry_run else "removed", len(outcome.skipped))
    return outcome


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Apply the retention settings to DATA_DIR and MLflow.")
    parser.add_argument("--dataset", help="A spec name or path (default: every spec under DATASETS_DIR).")
    parser.add_argument("--dry-run", action="store_true", help="List what would be removed; remove nothing.")
    args = parser.parse_args(argv)
    try:
        outcome = cleanup(args.dataset, datetime.now(UTC), args.dry_run)
    except PipelineError as error:
        raise SystemExit(str(error)) from None
    print("\n".join([*outcome.removed, *outcome.skipped]) or "nothing to remove")


if __name__ == "__main__":
    main()
