"""The data stages of one training run in this process, as the DAG's jobs run them one after the other:
ingest → validate → (stats) → featurize, each writing its usual folder under DATA_DIR."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession

from continuous_training.config import Settings, get_settings
from continuous_training.data.features import featurize
from continuous_training.data.ingest import ingest
from continuous_training.data.stats import write_stats
from continuous_training.data.validation import validate
from continuous_training.paths import (
    FEATURIZE,
    INGEST,
    STATS,
    VALID_DATA,
    VALIDATE,
    FeaturizeResult,
    IngestResult,
    ValidationResult,
    stage_dir,
)
from continuous_training.spec import DatasetSpec


@dataclass(frozen=True)
class DataStagesResult:
    """What each data stage of the run returned (stats: None when skipped)."""

    ingest: IngestResult
    validation: ValidationResult
    stats: dict | None
    featurize: FeaturizeResult


def run_data_stages(spark: SparkSession, spec: DatasetSpec, run_id: str, settings: Settings | None = None, *,
                    max_quarantine_fraction: float = 0.05, stats: bool = False) -> DataStagesResult:
    """Ingest the run's pinned input, validate it, compute its stats (when `stats`) and featurize the valid rows."""
    settings = settings or get_settings()
    ingested = ingest(spark, spec, run_id, stage_dir(spec.name, INGEST, run_id, settings), settings)
    validate_dir = stage_dir(spec.name, VALIDATE, run_id, settings)
    validation = validate(spark.read.parquet(str(ingested.output)), spec, run_id, validate_dir,
                          max_quarantine_fraction, quarantined_files=ingested.quarantined_files)
    valid = spark.read.parquet(str(validate_dir / VALID_DATA))
    computed = write_stats(valid, spec, stage_dir(spec.name, STATS, run_id, settings)) if stats else None
    featurized = featurize(valid, spec, run_id, stage_dir(spec.name, FEATURIZE, run_id, settings),
                           ingested.input_fingerprint, settings)
    return DataStagesResult(ingested, validation, computed, featurized)
