"""Reruns reproduce their result: training refuses data that changed since its MLflow run was trained, and a failed
training run is marked FAILED."""

from __future__ import annotations

import pytest
from continuous_training.demo import generate
from continuous_training.errors import PipelineError
from continuous_training.paths import FEATURIZE, read_featurize_result, stage_dir
from continuous_training.pipeline import run_data_stages
from continuous_training.spec import TrainParams, load_spec
from continuous_training.tracking import find_airflow_run, mlflow_client
from continuous_training.training.barrier import BarrierStageError
from continuous_training.training.epochs import MIN_STEPS_PER_EPOCH
from continuous_training.training.train import AirflowContext, train_candidate

pytestmark = [pytest.mark.integration, pytest.mark.barrier]

RUN_ID = "manual__2026-11-21T10:00:00+00:00"


def prepare_run(spark, settings, spec, run_id: str) -> None:
    """ingest → validate → featurize of one run with the library, as the DAG's jobs do."""
    run_data_stages(spark, spec, run_id, settings, max_quarantine_fraction=0.05)


def test_training_refuses_a_rerun_whose_data_changed_and_marks_failures(spark, settings):
    generate(rows=800, batches=2, seed=3, data_dir=settings.data_dir)
    spec = load_spec("churn", settings)
    params = TrainParams(num_proc=2, epochs=1)
    prepare_run(spark, settings, spec, RUN_ID)
    mlflow_run_id = train_candidate(spark, spec, RUN_ID, params, AirflowContext(), settings)
    client = mlflow_client(settings)
    logged = client.get_run(mlflow_run_id).data.params
    featurized = read_featurize_result(stage_dir(spec.name, FEATURIZE, RUN_ID, settings))
    assert logged["data_fingerprint"] == featurized.data_fingerprint
    assert logged["batch_size"] == "auto", "no batch_size given: the default, sized to the train split"
    assert logged["rank_batch_size"] == str(featurized.rows["train"] // (2 * MIN_STEPS_PER_EPOCH))

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
    assert find_airflow_run(client, spec.name, failing_run).info.status == "FAILED"
