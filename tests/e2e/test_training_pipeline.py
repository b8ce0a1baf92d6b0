"""training_pipeline end to end through `airflow dags test`: real Airflow, Spark, Horovod or TensorFlow workers,
Petastorm, MLflow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from continuous_training.demo import generate
from continuous_training.paths import stage_dir
from continuous_training.registry import promote_candidate, register_candidate
from continuous_training.spec import TrainParams, load_spec
from continuous_training.tracking import find_airflow_run
from continuous_training.training.epochs import MIN_STEPS_PER_EPOCH
from continuous_training.training.evaluate import evaluate_candidate
from continuous_training.training.train import AirflowContext, train_candidate
from e2e_workspace import FRAMEWORK, ON_CLUSTER, TRAIN_CONF, Workspace, dag_run_finished, task_final_state

pytestmark = [pytest.mark.e2e, pytest.mark.barrier]

# Through the whole DAG: binary with Horovod ranks, and regression with Keras workers on the standalone cluster.
# Binary with Keras workers runs under the real scheduler in test_services.py; multiclass is covered stage by stage
# (tests/data, tests/training, tests/registry, tests/serving).
DATASETS = {
    "churn": ("test_auc", "test_accuracy", "test_f1", "test_logloss"),
    "churn_value": ("test_rmse", "test_mae", "test_r2"),
}
SPARK_STAGES = ("ingest", "validate", "stats", "featurize", "train", "evaluate", "promote")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_pipeline_trains_registers_and_promotes(e2e: Workspace, dataset: str, monkeypatch) -> None:
    run_id = e2e.train(dataset)
    monkeypatch.setenv("DATA_DIR", str(e2e.data_dir))
    spec = load_spec(dataset)
    on_cluster = dataset in ON_CLUSTER
    assert e2e.training_applications[dataset] == sorted(f"{stage}-{dataset}" for stage in SPARK_STAGES
                                                        if on_cluster), \
        "every Spark stage of a run on the cluster is one application of the standalone master; none of the others"

    ingest = read_json(stage_dir(dataset, "ingest", run_id, e2e.settings) / "manifest.json")
    pinned = read_json(stage_dir(dataset, "ingest", run_id, e2e.settings) / "inputs.json")
    validation = read_json(stage_dir(dataset, "validate", run_id, e2e.settings) / "validation.json")
    features = read_json(stage_dir(dataset, "featurize", run_id, e2e.settings) / "featurize.json")
    assert ingest["rows"] >= 3000
    assert sorted(ingest["files"]) == [file["path"] for file in pinned["files"]]
    assert ingest["input_fingerprint"] == pinned["fingerprint"]
    assert validation["rows_in"] == ingest["rows"] == validation["valid"] + validation["quarantined"]
    assert validation["quarantined"] > 0
    assert sum(features["rows"].values()) == validation["valid"]

    client = e2e.client()
    champion = client.get_model_version_by_alias(spec.registered_model_name, "champion")
    assert champion.tags["validation_status"] == "approved"
    assert champion.tags["airflow.run_id"] == champion.tags["data_run_id"] == run_id
    assert client.get_model_version(spec.registered_model_name, champion.version).current_stage == "Production"
    run = client.get_run(champion.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == dataset
    params = run.data.params
    assert {"framework", "num_proc", "epochs", "batch_size", "learning_rate", "dataset", "data_run_id",
            "spark_master", "data_fingerprint"} <= set(params)
    assert params["framework"] == FRAMEWORK[dataset] and params["num_proc"] == "2" and params["data_run_id"] == run_id
    assert params["data_fingerprint"] == features["data_fingerprint"]
    assert params["batch_size"] == "auto", "the DAG's empty batch_size reaches the job as None"
    assert params["rank_batch_size"] == str(features["rows"]["train"] // (2 * MIN_STEPS_PER_EPOCH))
    assert params["spark_master"] == (e2e.cluster.master_url if on_cluster else "local[2]")
    tags = run.data.tags
    workers_tag = {"torch": "horovod.size", "tensorflow": "tensorflow.workers"}[FRAMEWORK[dataset]]
    assert tags[workers_tag] == "2" and tags["spark.barrier"] == "true" and tags["gpu.addresses"] == "none"
    assert tags["airflow.dag_id"] == "training_pipeline" and tags["airflow.task_id"] == "train"
    assert tags["airflow.run_id"] == run_id
    for metric in ("train_loss", "val_loss", "samples_per_s"):
        assert len(client.get_metric_history(run.info.run_id, metric)) >= 1, metric
    assert set(DATASETS[dataset]) <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "data")}
    assert {"data/stats.json", "data/report.html", "feature_pipeline"} <= artifacts

    model = mlflow.pyfunc.load_model(f"models:/{spec.registered_model_name}@champion")
    raw = pd.read_csv(next((e2e.data_dir / "landing" / "churn").glob("*/*.csv")), nrows=20)
    raw = raw.astype(dict.fromkeys(spec.features.numeric, "float64"))  # the signature types numeric inputs as double
    predictions = model.predict(raw[spec.feature_columns])
    assert len(predictions) == 20 and predictions["prediction"].notna().all()
    assert model.metadata.get_input_schema().input_names() == spec.feature_columns


def test_rerunning_a_run_reads_its_pinned_inputs_and_duplicates_nothing(e2e: Workspace) -> None:
    run_id = e2e.train("churn")
    settings, client = e2e.settings, e2e.client()
    name = load_spec("churn").registered_model_name
    ingest_dir = stage_dir("churn", "ingest", run_id, settings)
    before = {
        "manifest": read_json(ingest_dir / "manifest.json"),
        "inputs": read_json(ingest_dir / "inputs.json"),
        "features": read_json(stage_dir("churn", "featurize", run_id, settings) / "featurize.json"),
        "versions": {v.version for v in client.search_model_versions(f"name = '{name}'")},
        "champion": client.get_model_version_by_alias(name, "champion").version,
    }
    late = generate(rows=200, batches=1, start_date="2026-12-01", seed=8, data_dir=e2e.data_dir, overwrite=False)

    for task in ("ingest", "validate", "featurize", "train", "evaluate", "register", "promote"):
        result = e2e.airflow("tasks", "test", "training_pipeline", task, run_id)
        assert task_final_state(result.stdout + result.stderr) == "success", f"{task}:\n{result.stdout[-4000:]}"

    manifest = read_json(ingest_dir / "manifest.json")
    assert manifest["files"] == before["manifest"]["files"] and manifest["rows"] == before["manifest"]["rows"]
    assert not {f"file:{path}" for path in late.files} & set(manifest["files"]), "a file that landed later was read"
    assert read_json(ingest_dir / "inputs.json") == before["inputs"]
    features = read_json(stage_dir("churn", "featurize", run_id, settings) / "featurize.json")
    assert features == before["features"]
    assert {v.version for v in client.search_model_versions(f"name = '{name}'")} == before["versions"]
    assert client.get_model_version_by_alias(name, "champion").version == before["champion"]
    runs = client.search_runs([client.get_experiment_by_name("churn").experiment_id],
                              f"tags.`airflow.run_id` = '{run_id}'")
    assert len(runs) == 1
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.params["data_fingerprint"] == before["features"]["data_fingerprint"]


def test_a_failing_rank_fails_the_task_and_its_mlflow_run(e2e: Workspace) -> None:
    source_run, run_id = e2e.train("churn_value"), "failing-rank"
    for stage in ("stats", "featurize"):
        shutil.copytree(stage_dir("churn_value", stage, source_run, e2e.settings),
                        stage_dir("churn_value", stage, run_id, e2e.settings))
    checkpoint = stage_dir("churn_value", "train", run_id, e2e.settings) / "checkpoints" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"not a checkpoint")

    e2e.airflow("dags", "trigger", "training_pipeline", "--run-id", run_id, "--conf",
                json.dumps({"dataset": "churn_value", **TRAIN_CONF}))
    result = e2e.airflow("tasks", "test", "training_pipeline", "train", run_id)

    output = result.stdout + result.stderr
    assert task_final_state(output) == "failed"
    assert "a rank of the 2-rank barrier stage failed" in output
    assert "Traceback (most recent call last)" in output
    assert "in _restore" in output and "torch.load" in output, "the failing rank's own frames are in the log"
    run = find_airflow_run(e2e.client(), "churn_value", run_id)
    assert run is not None and run.info.status == "FAILED"


# The spec errors themselves are covered by tests/shared/test_spec.py and tests/data/test_data_jobs.py.
@pytest.mark.parametrize("case", ["unknown dataset", "no input files"])
def test_a_user_error_fails_the_run_at_once_without_retries(e2e: Workspace, case: str, tmp_path: Path) -> None:
    document = yaml.safe_load((e2e.settings.datasets_dir / "churn.yaml").read_text())
    spec_file = tmp_path / "spec.yaml"
    if case == "unknown dataset":
        dataset, expected = "chrun", "unknown dataset 'chrun'"
    else:
        spec_file.write_text(yaml.safe_dump({**document, "source": {**document["source"], "path": "nowhere/*.csv"}}))
        dataset, expected = str(spec_file), "no input files match"

    result = e2e.airflow("dags", "test", "training_pipeline", "--conf", json.dumps({"dataset": dataset}),
                         check=False, env={**e2e.env, "TASK_RETRIES": "2"})

    output = result.stdout + result.stderr
    assert dag_run_finished(output)["state"] == "failed"
    assert output.count("[DAG TEST] end task task_id=check_spec") == 1, "check_spec ran more than once"
    assert "[DAG TEST] end task task_id=ingest" not in output
    assert expected in output


def test_gate_keeps_the_champion_against_a_worse_candidate_on_the_same_holdout(e2e: Workspace, spark) -> None:
    source_run, settings, run_id = e2e.train("churn"), e2e.settings, "gate-worse"
    spec, client = load_spec("churn", settings), e2e.client()
    champion = client.get_model_version_by_alias(spec.registered_model_name, "champion")
    for stage in ("stats", "featurize"):
        shutil.copytree(stage_dir("churn", stage, source_run, settings), stage_dir("churn", stage, run_id, settings))
    worse = TrainParams(num_proc=2, epochs=1, learning_rate=1e-6, batch_size=32)

    train_candidate(spark, spec, run_id, worse, AirflowContext("training_pipeline", "train"), settings)
    evaluation = evaluate_candidate(spark, spec, run_id, settings)
    register_candidate(spec, run_id, settings)
    decision = promote_candidate(spark, spec, run_id, threshold=0.0, settings=settings)

    assert evaluation.champion_version == str(champion.version)
    assert evaluation.metrics["test_auc"] < evaluation.metrics["champion_test_auc"], evaluation.metrics
    assert not decision.promoted and "does not beat the champion" in decision.reason, decision.reason
    assert client.get_model_version_by_alias(spec.registered_model_name, "champion").version == champion.version
    rejected = client.get_model_version(spec.registered_model_name, decision.version)
    assert rejected.tags["validation_status"] == "rejected"
    assert rejected.current_stage == "Archived"
