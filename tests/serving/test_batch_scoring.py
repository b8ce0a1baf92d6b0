"""Batch scoring with real Spark and a real registered pyfunc: lineage row by row, idempotent partitions, bad and
partial batches, a missing champion, and a promotion during a run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from continuous_training.config import Settings
from continuous_training.data.ingest import ingest
from continuous_training.data.validation import validate
from continuous_training.demo import generate, generate_scoring
from continuous_training.errors import PipelineError
from continuous_training.model.pyfunc import log_pyfunc_model
from continuous_training.model.torch_mlp import build_mlp, numpy_weights
from continuous_training.model.transform import FeatureTransform
from continuous_training.paths import stage_dir, stage_for
from continuous_training.serving.batch import ResolvedModel, partition_dir, predictions_dir, resolve_model, score_batch
from continuous_training.spec import DatasetSpec, load_spec
from continuous_training.tracking import CHAMPION, mlflow_client

pytestmark = pytest.mark.integration

DAY_ONE, DAY_TWO = date(2026, 11, 5), date(2026, 11, 6)


@dataclass
class Scoring:
    settings: Settings
    spec: DatasetSpec
    versions: list[str]


def log_candidate(spec: DatasetSpec, transform: FeatureTransform, example: pd.DataFrame, seed: int) -> str:
    """A registered version of a small pyfunc over the spec's real fitted feature pipeline (random weights)."""
    network = build_mlp(transform.feature_dim, spec.task, None, hidden=(8,), seed=seed)
    with mlflow.start_run():
        info = log_pyfunc_model(weights=numpy_weights(network), transform=transform, task=spec.task,
                                feature_dim=transform.feature_dim, num_classes=None, hidden=(8,), classes=["0", "1"],
                                input_example=example)
    return str(mlflow.register_model(info.model_uri, spec.registered_model_name).version)


@pytest.fixture(scope="module")
def scoring(spark, tmp_path_factory) -> Scoring:
    from continuous_training.data.features import feature_transform, fit_feature_pipeline

    root = tmp_path_factory.mktemp("scoring")
    settings = Settings(data_dir=root / "data", mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                        mlflow_artifact_root=root / "artifacts")
    spec = load_spec("churn", settings)
    generate(rows=400, batches=1, seed=5, data_dir=settings.data_dir)
    frame = spark.read.csv(str(settings.data_dir / "landing" / "churn"), header=True, schema=spec.ddl_schema)
    transform = feature_transform(fit_feature_pipeline(frame, spec), spec)
    client = mlflow_client(settings)
    mlflow.set_experiment(experiment_id=client.create_experiment(
        "scoring-models", artifact_location=(root / "artifacts").as_uri()))
    example = frame.limit(3).toPandas()
    versions = [log_candidate(spec, transform, example, seed) for seed in (1, 2)]
    # The first passed the gate (as `registry.promote_candidate` tags it); the second never did.
    client.set_model_version_tag(spec.registered_model_name, versions[0], "validation_status", "approved")
    client.set_registered_model_alias(spec.registered_model_name, CHAMPION, versions[0])
    return Scoring(settings, spec, versions)


def run_scoring(spark, scoring: Scoring, run_id: str, scored_for: date, source: Path | str,
                model: ResolvedModel | None = None) -> dict:
    """ingest → validate → score of one batch, as the batch_scoring DAG's jobs do."""
    settings, spec = scoring.settings, scoring.spec
    ingest(spark, spec, run_id, stage_dir(spec.name, stage_for("ingest", True), run_id, settings), settings,
           source=str(source), scoring=True)
    validate_dir = stage_dir(spec.name, stage_for("validate", True), run_id, settings)
    ingested = spark.read.parquet(str(stage_dir(spec.name, stage_for("ingest", True), run_id, settings) / "data"))
    validate(ingested, spec, run_id, validate_dir, max_quarantine_fraction=0.5, labelled=False)
    model = model or resolve_model(spec, CHAMPION, scoring.settings)
    return score_batch(spark.read.parquet(str(validate_dir / "valid")), spec, model, scored_for, run_id, settings)


def write_batch(folder: Path, frame: pd.DataFrame) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "part-00000.csv", index=False)
    return folder / "part-00000.csv"


def test_predictions_carry_lineage_and_equal_the_champion_pyfunc_row_by_row(spark, scoring):
    batch = generate_scoring(days=1, rows_per_day=300, start_date=DAY_ONE, seed=1, data_dir=scoring.settings.data_dir)
    raw = pd.read_csv(batch.batches[0])
    bad = raw.iloc[:3].assign(customer_id=["bad-1", "bad-2", "bad-3"], tenure_months=[-1, -2, -3])
    source = write_batch(batch.batches[0].parent, pd.concat([raw, bad], ignore_index=True))

    summary = run_scoring(spark, scoring, "score-lineage", DAY_ONE, source)

    assert summary["rows_in"] == 303 == summary["scored"] + summary["quarantined"]
    assert summary["quarantined"] == 3 and "'tenure_months' below min 0.0" in summary["quarantine_reasons"]
    predictions = pd.read_parquet(partition_dir(scoring.spec, DAY_ONE, scoring.settings)).sort_values("customer_id")
    assert list(predictions.columns[:9]) == ["customer_id", "signup_date", "prediction", "probability_0",
                                            "probability_1", "model_name", "model_version", "model_run_id",
                                            "airflow_run_id"]
    assert "churned" not in predictions.columns, "a batch without the label is scored as it is"
    assert predictions["customer_id"].is_unique and len(predictions) == 300
    version = mlflow_client(scoring.settings).get_model_version(scoring.spec.registered_model_name,
                                                                scoring.versions[0])
    assert set(predictions["model_version"]) == {scoring.versions[0]}
    assert set(predictions["model_run_id"]) == {version.run_id}
    assert set(predictions["model_name"]) == {scoring.spec.registered_model_name}
    assert set(predictions["airflow_run_id"]) == {"score-lineage"}
    champion = mlflow.pyfunc.load_model(f"models:/{scoring.spec.registered_model_name}@champion")
    inputs = raw.sort_values("customer_id").astype(dict.fromkeys(scoring.spec.features.numeric, "float64"))
    expected = champion.predict(inputs[scoring.spec.feature_columns])
    assert predictions["prediction"].tolist() == expected["prediction"].tolist()
    np.testing.assert_allclose(predictions["probability_1"], expected["probability"], atol=1e-9)
    np.testing.assert_allclose(predictions["probability_0"] + predictions["probability_1"], 1.0, atol=1e-12)
    stored = json.loads((partition_dir(scoring.spec, DAY_ONE, scoring.settings) / "_summary.json").read_text())
    assert stored["model"]["version"] == scoring.versions[0]
    run = mlflow_client(scoring.settings).get_run(stored["mlflow_run_id"])
    assert run.data.tags["airflow.run_id"] == "score-lineage"
    assert run.data.tags["model.version"] == scoring.versions[0]
    assert run.data.metrics["rows_scored"] == 300 and run.data.metrics["rows_quarantined"] == 3


def test_rerunning_a_date_replaces_its_partition_and_touches_no_other(spark, scoring):
    batches = generate_scoring(days=2, rows_per_day=50, start_date=DAY_ONE, seed=2,
                               data_dir=scoring.settings.data_dir / "rerun")
    run_scoring(spark, scoring, "rerun-day-2", DAY_TWO, batches.batches[1])
    day_two = partition_dir(scoring.spec, DAY_TWO, scoring.settings)
    untouched = {path.name: path.stat().st_mtime_ns for path in day_two.iterdir()}

    first = run_scoring(spark, scoring, "rerun-day-1", DAY_ONE, batches.batches[0])
    again = run_scoring(spark, scoring, "rerun-day-1", DAY_ONE, batches.batches[0])

    assert first["scored"] == again["scored"] == 50
    assert again["mlflow_run_id"] == first["mlflow_run_id"], "a rerun logs to the same scoring run"
    everything = spark.read.parquet(str(predictions_dir(scoring.spec, scoring.settings)))
    assert everything.where("scored_for = DATE'2026-11-05'").count() == 50
    assert everything.where("scored_for = DATE'2026-11-05'").select("customer_id").distinct().count() == 50
    assert {path.name: path.stat().st_mtime_ns for path in day_two.iterdir()} == untouched


def test_a_label_in_the_batch_is_carried_through_unchanged(spark, scoring, tmp_path):
    labelled = pd.read_csv(generate(rows=40, batches=1, seed=9, data_dir=tmp_path).files[0])

    run_scoring(spark, scoring, "with-label", DAY_TWO, write_batch(tmp_path / "labelled", labelled))

    predictions = pd.read_parquet(partition_dir(scoring.spec, DAY_TWO, scoring.settings))
    merged = predictions.merge(labelled, on="customer_id", suffixes=("", "_raw"))
    assert len(merged) == 40
    assert merged["churned"].tolist() == merged["churned_raw"].tolist()
    assert merged["plan_tier"].tolist() == merged["plan_tier_raw"].tolist()


def test_a_batch_without_a_feature_column_fails_naming_it(spark, scoring, tmp_path):
    raw = pd.read_csv(generate_scoring(days=1, rows_per_day=10, data_dir=tmp_path).batches[0])
    source = write_batch(tmp_path / "partial", raw.drop(columns=["contract"]))

    with pytest.raises(PipelineError, match=r"required columns \['contract'\] are missing"):
        run_scoring(spark, scoring, "missing-feature", DAY_ONE, source)


def test_no_model_under_the_alias_fails_in_one_line_naming_the_command(scoring):
    with pytest.raises(PipelineError) as caught:
        resolve_model(scoring.spec, "gold", scoring.settings)

    message = str(caught.value)
    assert "\n" not in message
    assert "no version of model 'churn_model' holds @gold" in message and "make train DATASET=churn" in message


def test_a_promotion_during_a_run_does_not_change_the_version_it_scores_with(spark, scoring, tmp_path):
    client = mlflow_client(scoring.settings)
    name = scoring.spec.registered_model_name
    resolved = resolve_model(scoring.spec, CHAMPION, scoring.settings)
    client.set_registered_model_alias(name, CHAMPION, scoring.versions[1])
    try:
        batch = generate_scoring(days=1, rows_per_day=30, start_date=DAY_TWO, data_dir=tmp_path)
        summary = run_scoring(spark, scoring, "promoted-mid-run", DAY_TWO, batch.batches[0], model=resolved)
    finally:
        client.set_registered_model_alias(name, CHAMPION, scoring.versions[0])

    predictions = pd.read_parquet(partition_dir(scoring.spec, DAY_TWO, scoring.settings))
    assert resolved.version == scoring.versions[0] != scoring.versions[1]
    assert set(predictions["model_version"]) == {resolved.version}
    assert summary["model"]["version"] == resolved.version


@pytest.mark.parametrize("status", [None, "rejected", "pending"])
def test_a_version_moved_to_champion_by_hand_is_not_scored(scoring, status):
    """Version 2 never passed the gate (or was rejected by it); someone moved @champion to it by hand."""
    client, name = mlflow_client(scoring.settings), scoring.spec.registered_model_name
    if status is not None:
        client.set_model_version_tag(name, scoring.versions[1], "validation_status", status)
    client.set_registered_model_alias(name, CHAMPION, scoring.versions[1])
    try:
        with pytest.raises(PipelineError) as caught:
            resolve_model(scoring.spec, CHAMPION, scoring.settings)
    finally:
        client.set_registered_model_alias(name, CHAMPION, scoring.versions[0])
        if status is not None:
            client.delete_model_version_tag(name, scoring.versions[1], "validation_status")

    message = str(caught.value)
    assert "\n" not in message
    assert f"'churn_model' version {scoring.versions[1]} holds @champion but the promotion gate did not approve it" \
        in message and f"validation_status={status or 'unset'}" in message
    assert "set_registered_model_alias('churn_model', 'champion'" in message and "promote" in message
    assert resolve_model(scoring.spec, CHAMPION, scoring.settings).version == scoring.versions[0]
