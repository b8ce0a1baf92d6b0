"""The one typed settings object, read from environment variables with documented defaults."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    """Project settings. Each field is read from the upper-case env var of the same name."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    data_dir: Path = Field(PROJECT_ROOT / "data", description="Root of landing files (relative spec paths resolve "
                           "here) and stage outputs.")
    mlflow_tracking_uri: str = Field(
        f"sqlite:///{PROJECT_ROOT / '.mlflow' / 'mlflow.db'}",
        description="MLflow tracking and registry store.",
    )
    mlflow_artifact_root: Path = Field(
        PROJECT_ROOT / ".mlflow" / "artifacts",
        description="Artifact location for experiments created by the project (local MLflow only).",
    )
    mlflow_backend_store_uri: SecretStr | None = Field(
        None, description="Store of the MLflow server `make up` starts (a database URI, e.g. PostgreSQL's); default: "
        "MLFLOW_TRACKING_URI, when the tasks track to that database directly.")
    mlflow_request_retries: int = Field(2, ge=0, description="Retries of an MLflow HTTP request that failed to "
                                        "connect, seconds apart: a stopped tracking server fails the task within "
                                        "seconds (not minutes of client retries), and the task's Airflow retry "
                                        "goes on.")
    mlflow_request_timeout_seconds: int = Field(30, gt=0, description="Timeout of one MLflow HTTP request.")
    mlflow_ui_url: str = Field("http://127.0.0.1:5000", description="MLflow UI base URL used by task links.")
    airflow_home: Path = Field(PROJECT_ROOT / ".airflow", description="Airflow home (metadata DB on SQLite, logs, "
                               "the generated logins of `make up`).")
    datasets_dir: Path = Field(PROJECT_ROOT / "include" / "datasets", description="Where named specs live.")
    jobs_dir: Path = Field(PROJECT_ROOT / "jobs", description="Spark job scripts submitted by the DAGs.")
    pyspark_python: str = Field(sys.executable, description="Python interpreter for Spark driver/executors.")
    spark_driver_memory: str = Field("2g", description="spark-submit --driver-memory for every job.")
    quarantine_max_fraction: float = Field(0.05, ge=0, le=1, description="Validate fails above this fraction of "
                                           "quarantined rows (the DAG param max_quarantine_fraction overrides it).")
    parquet_target_file_mb: int = Field(128, gt=0, description="Ingest compacts to about one Parquet file per this "
                                        "many MB of input.")
    feature_files: int = Field(8, gt=0, description="Minimum files per featurized split, each at most "
                                                          "rows / FEATURE_FILES rows (Petastorm shards by row group: "
                                                          "keep it at least num_proc).")
    split_fractions: tuple[float, float, float] = Field(
        (0.7, 0.15, 0.15), description="Train / validation / test fractions of the deterministic split (a hash of "
                                         "the id column)."
    )
    train_feed_memory_mb: int = Field(1024, ge=0, description="A training rank holds its shard of the train and "
                                      "validation splits in memory (on its GPU, if it has one) up to this many MB; "
                                      "larger shards are streamed (tag `feed` on the MLflow run).")
    task_retries: int = Field(2, ge=0, description="Airflow retries per task.")
    task_retry_delay_seconds: int = Field(30, gt=0, description="Airflow delay before a task's first retry "
                                          "(doubling for each later one, up to 10 minutes).")
    task_timeout_minutes: int = Field(60, gt=0, description="Airflow execution timeout per task.")
    retention_runs: int = Field(3, ge=1, description="Cleanup keeps the whole run folders of the last N training "
                                "runs per stage; older runs that produced a registered model version keep their "
                                "records (inputs.json, manifests, stats, evaluation, promotion), the @champion's and "
                                "@challenger's also their featurize folder (the test split); other runs go.")
    retention_days: int = Field(30, ge=1, description="Cleanup keeps this many days of scoring run folders, "
                                "predictions partitions and monitoring outputs (at least the spec's drift window "
                                "and labels_complete_after_days).")
    mlflow_retention_days: int = Field(90, ge=1, description="Cleanup deletes finished MLflow runs of the "
                                       "`<dataset>-scoring` and `<dataset>-monitoring` experiments started longer "
                                       "ago than this (training runs are never deleted).")
    landing_poll_seconds: float = Field(30.0, gt=0, description="How often the triggerer looks for new batches in "
                                                                "the landing areas of datasets trained on new data.")
    alert_email_to: str | None = Field(None, description="Comma-separated addresses that get each alert by email "
                                       "through the Airflow SMTP connection `alert_smtp_conn_id`; unset: no email.")
    alert_smtp_conn_id: str = Field("smtp_default", description="Airflow connection of the SMTP server for alert "
                                    "emails (its `from_email` extra is the sender).")
    alert_webhook_url: SecretStr | None = Field(None, description="URL that gets each alert as a JSON POST "
                                                "`{\"text\": ...}` (a Slack incoming webhook takes it as is); unset: "
                                                "no webhook.")
    alert_timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one alert webhook POST.")

    @field_validator("data_dir", "mlflow_artifact_root", "airflow_home", "datasets_dir", "jobs_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.expanduser().resolve()

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, fractions: tuple[float, float, float]) -> tuple[float, float, float]:
        if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) <= 0:
            raise ValueError(f"split_fractions must be three positive numbers summing to 1, got {fractions}")
        return fractions


@cache
def get_settings() -> Settings:
    """Settings for this process (read once)."""
    return Settings()
