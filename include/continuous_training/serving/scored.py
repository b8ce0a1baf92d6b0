"""Where batch scoring writes: `$DATA_DIR/<dataset>/predictions/scored_for=<date>/`, one partition per scored
date, complete once its `_summary.json` (which names the model version that scored it) is there. A summary that
cannot be read is skipped and named: its date counts as not scored."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from continuous_training.config import Settings, get_settings
from continuous_training.spec import DatasetSpec

log = logging.getLogger(__name__)

PREDICTIONS = "predictions"
PARTITION = "scored_for"
SUMMARY_FILE = "_summary.json"


@dataclass(frozen=True)
class ScoredDate:
    """A scored partition, the model version that scored it and the Airflow run that wrote it."""

    day: date
    model: dict[str, str]
    airflow_run_id: str | None = None


@dataclass(frozen=True)
class DamagedSummary:
    """A summary that cannot be read (a kill or a full disk left it): its date counts as not scored."""

    path: Path
    day: date | None
    error: str


@dataclass(frozen=True)
class ScoredPartitions:
    """The completed scoring partitions by date, and the damaged summaries left out."""

    dates: list[ScoredDate]
    damaged: list[DamagedSummary]


def scored_partitions(spec: DatasetSpec, settings: Settings | None = None) -> ScoredPartitions:
    """Every scoring partition of the dataset with a summary; a summary that cannot be read is logged as a warning
    naming it and left out."""
    found, damaged = [], []
    for path in sorted(predictions_dir(spec, settings).glob(f"{PARTITION}=*/{SUMMARY_FILE}")):
        try:
            summary = json.loads(path.read_text())
            found.append(ScoredDate(date.fromisoformat(summary[PARTITION]), summary["model"],
                                    summary.get("airflow_run_id")))
        except (OSError, ValueError, TypeError, KeyError) as error:
            log.warning("skipping the damaged scoring summary %s (its date counts as not scored): %s", path, error)
            damaged.append(DamagedSummary(path, partition_day(path.parent), str(error)))
    return ScoredPartitions(sorted(found, key=lambda scored: scored.day), damaged)


def scored_dates(spec: DatasetSpec, settings: Settings | None = None) -> list[ScoredDate]:
    """Every completed scoring partition of the dataset (one with a readable summary), by date."""
    return scored_partitions(spec, settings).dates


def partition_day(partition: Path) -> date | None:
    """The date of a `scored_for=<date>` folder; None for another name."""
    try:
        return date.fromisoformat(partition.name.removeprefix(f"{PARTITION}="))
    except ValueError:
        return None


def predictions_dir(spec: DatasetSpec, settings: Settings | None = None) -> Path:
    return (settings or get_settings()).data_dir / spec.name / PREDICTIONS


def partition_dir(spec: DatasetSpec, scored_for: date, settings: Settings | None = None) -> Path:
    return predictions_dir(spec, settings) / f"{PARTITION}={scored_for.isoformat()}"
