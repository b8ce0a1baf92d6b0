"""Reruns reproduce their result: a run's input files are pinned, training refuses data that changed since its
MLflow run was trained, and a failed training run is marked FAILED."""

from __future__ import annotations

import json

import pytest
from continuous_training.demo_data import generate
from continuous_training.errors import PipelineError
from continuous_training.features import featurize, read_featurize_result
from continuous_training.ingest import ingest
from continuous_training.paths import stage_dir
from continuous_training.spec import load_spec
from continuous_training.tracking import find_training_run, mlflow_client
from continuous_training.training.barrier import BarrierStageError
from continuous_training.training.candidate import AirflowContext, TrainParams, train_candidate
from continuous_training.validation import validate

pytestmark = pytest.mark.integration

RUN_ID = "manual__2026-11-21T10:00:00+00:00"


def ingest_run(spark, settings, run_id: str = RUN_ID):
    spec = load_spec("churn", settings)
    return ingest(spark, spec, run_id, stage_dir(spec.name, "ingest", run_id, settings), settings)


def test_files_landing_after_the_first_attempt_belong_to_the_next_run(spark, settings):
    generate(rows=300, batches=2, seed=1, data_dir=settings.data_dir)
    first = ingest_run(spark, settings)
    late = generate(rows=40, batches=1, start_date="2026-12-01", seed=2, data_dir=settings.data_dir, overwrite=False)

    retried = ingest_run(spark, settings)
    next_run = ingest_run(spark, settings, "manual__2026-11-22T10:00:00+00:00")

    assert first.rows == retried.rows == 300
    assert retried.files == first.files and retried.input_fingerprint == first.input_fingerprint
    assert next_run.rows == 340
    assert {f"file:{path}" for path in late.files} <= set(next_run.files)
    assert next_run.input_fingerprint != first.input_fingerprint
    pinned = json.loads((stage_dir("churn", "ingest", RUN_ID, settings) / "inputs.json").read_text())
    assert [file["path"] for file in pinned["files"]] == sorted(first.files)
    assert all(file["size"] > 0 and file["modified_ms"] > 0 for file in pinned["files"])


def test_a_pinned_file_that_changed_or_vanished_stops_the_rerun(spark, settings):
    demo = generate(rows=300, batches=2, seed=1, data_dir=settings.data_dir)
    ingest_run(spark, settings)
    changed = demo.files[0]
    with changed.open("a") as handle:
        handle.write(changed.read_text().splitlines()[1] + "\n")

    with pytest.raises(PipelineError, match=r"changed since the first attempt of this run pinned it .*trigger a new"):
        ingest_run(spark, settings)
    changed.unlink()
    with pytest.raises(PipelineError, match="no longer exists; trigger a new run"):
        ingest_run(spark, settings)


def prepare_run(spark, settings, spec, run_id: str) -> None:
    """ingest → validate → featurize of one run with the library, as the DAG's jobs do."""
    manifest = ingest(spark, spec, run_id, stage_dir(spec.name, "ingest", run_id, settings), settings)
    validate_dir = stage_dir(spec.name, "validate", run_id, settings)
    validate(spark.read.parquet(str(stage_dir(spec.name, "ingest", run_id, settings) / "data")), spec, run_id,
             validate_dir, max_quarantine_fraction=0.05)
    featurize(spark.read.parquet(str(validate_dir / "valid")), spec, run_id,
              stage_dir(spec.name, "featurize", run_id, settings), manifest.input_fingerprint, settings)


def test_training_refuses_a_rerun_whose_data_changed_and_marks_failures(spark, settings):
    generate(rows=800, batches=2, seed=3, data_dir=settings.data_dir)
    spec = load_spec("churn", settings)
    params = TrainParams(num_proc=2, epochs=1, batch_size=32)
    prepare_run(spark, settings, spec, RUN_ID)
    mlflow_run_id = train_candidate(spark, spec, RUN_ID, params, AirflowContext(), settings)
    client = mlflow_client(settings)
    fingerprint = client.get_run(mlflow_run_id).data.params["data_fingerprint"]
    featurized = read_featurize_result(stage_dir(spec.name, "featurize", RUN_ID, settings))
    assert fingerprint == featurized.data_fingerprint

    edited = spec.model_copy(update={"features": spec.features.model_copy(
        update={"numeric": spec.features.numeric[:-1]})})
    prepare_run(spark, settings, edited, RUN_ID)
    with pytest.raises(PipelineError, match=r"changed since its MLflow run .* trigger a new run"):
        train_candidate(spark, edited, RUN_ID, params, AirflowContext(), settings)
    assert client.get_run(mlflow_run_id).info.status == "FINISHED", "a refused rerun leaves the run as it was"

    failing_run = "manual__2026-11-23T10:00:00+00:00"
    prepare_run(spark, settings, spec, failing_run)
    with pytest.raises(BarrierStageError, match="training loss is (inf|nan)"):
        train_candidate(spark, spec, failing_run, TrainParams(num_proc=2, epochs=1, learning_rate=1e30),
                        AirflowContext(), settings)
    assert find_training_run(client, spec.name, failing_run).info.status == "FAILED"
