"""A training run reports each epoch as it ends: its metrics reach MLflow (step = epoch) and the task's log gets one
line per epoch from rank 0, while the barrier stage is still training (real Spark barrier stage and Horovod ranks,
MLflow on SQLite). The Keras workers write their epoch records through the same `RankTrainer` loop."""

from __future__ import annotations

import logging

import pytest
from continuous_training.demo import generate
from continuous_training.pipeline import run_data_stages
from continuous_training.spec import TrainParams, load_spec
from continuous_training.tracking import mlflow_client
from continuous_training.training.train import AirflowContext, train_candidate

pytestmark = [pytest.mark.integration, pytest.mark.barrier]

EPOCHS = 3


def test_each_epoch_reaches_mlflow_and_the_task_log_as_it_ends(spark, settings, caplog):
    generate(rows=800, batches=2, seed=3, data_dir=settings.data_dir)
    spec = load_spec("churn", settings)
    run_id = "manual__2026-11-21T10:00:00+00:00"
    run_data_stages(spark, spec, run_id, settings, max_quarantine_fraction=0.05)
    caplog.set_level(logging.INFO, logger="continuous_training.training.train")

    mlflow_run_id = train_candidate(spark, spec, run_id, TrainParams(num_proc=2, epochs=EPOCHS, patience=EPOCHS),
                                    AirflowContext(), settings)

    lines = [record.getMessage() for record in caplog.records if " (rank 0): " in record.getMessage()]
    assert [line.split(" (rank 0)")[0] for line in lines] == [f"epoch {epoch}/{EPOCHS}" for epoch in (1, 2, 3)]
    assert all("train_loss=" in line and "val_loss=" in line for line in lines)
    client = mlflow_client(settings)
    losses = sorted(client.get_metric_history(mlflow_run_id, "train_loss"), key=lambda metric: metric.step)
    assert [metric.step for metric in losses] == [1, 2, 3]
    seconds = {metric.step: metric.value for metric in client.get_metric_history(mlflow_run_id, "epoch_seconds")}
    # Logged as each epoch ended, not all at once when the stage returned: the first and the last epoch's metrics
    # are about the later epochs' training time apart.
    assert (losses[2].timestamp - losses[0].timestamp) / 1000 >= 0.5 * (seconds[2] + seconds[3])
