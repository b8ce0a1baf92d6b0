"""Where batch scoring writes: `$DATA_DIR/<dataset>/predictions/scored_for=<date>/`, one partition per scored
date, complete once its `_summary.json` (which names the model version that scored it) is there."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from continuous_training.config import Settings, get_settings
from continuous_training.spec import DatasetSpec

PREDICTIONS = "predictions"
PARTITION = "scored_for"
SUMMARY_FILE = "_summary.json"


@dataclass(frozen=True)
class ScoredDate:
    """A scored partition and the model version that scored it."""

    day: date
    model: dict[str, str]


def scored_dates(spec: DatasetSpec, settings: Settings | None = None) -> list[ScoredDate]:
    """Every completed scoring partition of the dataset (one with a summary), by date."""
    found = []
    for path in predictions_dir(spec, settings).glob(f"{PARTITION}=*/{SUMMARY_FILE}"):
        summary = json.loads(path.read_text())
        found.append(ScoredDate(date.fromisoformat(summary[PARTITION]), summary["model"]))
    return sorted(found, key=lambda scored: scored.day)


def predictions_dir(spec: DatasetSpec, settings: Settings | None = None) -> Path:
    return (settings or get_settings()).data_dir / spec.name / PREDICTIONS


def partition_dir(spec: DatasetSpec, scored_for: date, settings: Settings | None = None) -> Path:
    return predictions_dir(spec, settings) / f"{PARTITION}={scored_for.isoformat()}"
