"""training_pipeline end to end through `airflow dags test`: real Airflow, Spark, Horovod, Petastorm, MLflow."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from continuous_training.config import Settings
from continuous_training.demo_data import generate
from continuous_training.evaluation import evaluate_candidate
from continuous_training.paths import stage_dir
from continuous_training.registry import promote_candidate, register_candidate
from continuous_training.spec import load_spec, parse_spec
from continuous_training.training.candidate import AirflowContext, TrainParams, train_candidate
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e

DATASETS = {
    "churn": ("test_auc", "test_accuracy", "test_f1", "test_logloss"),
    "churn_value": ("test_rmse", "test_mae", "test_r2"),
    "churn_plan": ("test_accuracy", "test_f1", "test_logloss"),
}
TRAIN_CONF = {"epochs": 4, "batch_size": 32, "num_proc": 2, "learning_rate": 0.003}


def airflow(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real airflow CLI; output is kept for assertions and shown on failure."""
    result = subprocess.run(["airflow", *args], env=env, capture_output=True, text=True, timeout=1200)
    if check and result.returncode != 0:
        pytest.fail(f"airflow {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-6000:]}\n"
                    f"{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, airflow_env) -> dict:
    root = tmp_path_factory.mktemp("e2e")
    env = airflow_env(root)
    generate(rows=3000, batches=2, seed=7, bad_fraction=0.01, data_dir=Path(env["DATA_DIR"]))
    airflow(env, "db", "migrate")
    return {"root": root, "env": env, "runs": {}}


def run_pipeline(workspace: dict, dataset: str) -> str:
    conf = json.dumps({"dataset": dataset, **TRAIN_CONF})
    result = airflow(workspace["env"], "dags", "test", "training_pipeline", "--conf", conf)
    output = result.stdout + result.stderr
    run_id = re.search(r"DagRun Finished: dag_id=training_pipeline, .*?run_id=(\S+?),", output).group(1)
    assert "state=success" in output.split("DagRun Finished")[-1].splitlines()[0]
    workspace["runs"][dataset] = run_id
    return run_id


def client_for(workspace: dict) -> MlflowClient:
    mlflow.set_tracking_uri(workspace["env"]["MLFLOW_TRACKING_URI"])
    return MlflowClient(workspace["env"]["MLFLOW_TRACKING_URI"])


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_pipeline_trains_registers_and_promotes(workspace: dict, dataset: str, monkeypatch) -> None:
    run_id = run_pipeline(workspace, dataset)
    monkeypatch.setenv("DATA_DIR", workspace["env"]["DATA_DIR"])
    data_dir = Path(workspace["env"]["DATA_DIR"])
    spec = load_spec(dataset)

    ingest = json.loads((data_dir / dataset / "ingest" / _dir(run_id) / "manifest.json").read_text())
    validation = json.loads((data_dir / dataset / "validate" / _dir(run_id) / "validation.json").read_text())
    features = json.loads((data_dir / dataset / "featurize" / _dir(run_id) / "featurize.json").read_text())
    assert ingest["rows"] >= 3000
    assert validation["rows_in"] == ingest["rows"] == validation["valid"] + validation["quarantined"]
    assert validation["quarantined"] > 0
    assert sum(features["rows"].values()) == validation["valid"]

    client = client_for(workspace)
    champion = client.get_model_version_by_alias(spec.registered_model_name, "champion")
    assert champion.tags["validation_status"] == "approved"
    assert champion.tags["airflow.run_id"] == champion.tags["data_run_id"] == run_id
    assert client.get_model_version(spec.registered_model_name, champion.version).current_stage == "Production"
    run = client.get_run(champion.run_id)
    assert client.get_experiment(run.info.experiment_id).name == dataset
    params = run.data.params
    assert {"framework", "num_proc", "epochs", "batch_size", "learning_rate", "dataset", "data_run_id",
            "spark_master"} <= set(params)
    assert params["framework"] == "pytorch" and params["num_proc"] == "2" and params["data_run_id"] == run_id
    tags = run.data.tags
    assert tags["horovod.size"] == "2" and tags["spark.barrier"] == "true" and tags["gpu.addresses"] == "none"
    assert tags["airflow.dag_id"] == "training_pipeline" and tags["airflow.task_id"] == "train"
    assert tags["airflow.run_id"] == run_id
    for metric in ("train_loss", "val_loss", "samples_per_s"):
        assert len(client.get_metric_history(run.info.run_id, metric)) >= 1, metric
    assert set(DATASETS[dataset]) <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "data")}
    assert {"data/stats.json", "data/report.html", "feature_pipeline"} <= artifacts

    model = mlflow.pyfunc.load_model(f"models:/{spec.registered_model_name}@champion")
    raw = pd.read_csv(next((data_dir / "landing" / "churn").glob("*/*.csv")), nrows=20)
    raw = raw.astype(dict.fromkeys(spec.features.numeric, "float64"))  # the signature types numeric inputs as double
    predictions = model.predict(raw[spec.feature_columns])
    assert len(predictions) == 20 and predictions["prediction"].notna().all()
    assert model.metadata.get_input_schema().input_names() == spec.feature_columns


def _dir(run_id: str) -> str:
    return stage_dir("x", "x", run_id).name


def test_rerunning_the_same_run_creates_no_duplicates(workspace: dict) -> None:
    run_id = workspace["runs"].get("churn") or pytest.fail("the churn pipeline test must run first")
    client = client_for(workspace)
    name = load_spec("churn").registered_model_name
    before = {v.version for v in client.search_model_versions(f"name = '{name}'")}
    champion_before = client.get_model_version_by_alias(name, "champion").version
    for task in ("train", "evaluate", "register", "promote"):
        airflow(workspace["env"], "tasks", "test", "training_pipeline", task, run_id)
    assert {v.version for v in client.search_model_versions(f"name = '{name}'")} == before
    assert client.get_model_version_by_alias(name, "champion").version == champion_before
    experiment = client.get_experiment_by_name("churn")
    runs = client.search_runs([experiment.experiment_id], f"tags.`airflow.run_id` = '{run_id}'")
    assert len(runs) == 1


def test_a_failing_rank_fails_the_task_with_its_traceback_in_the_log(workspace: dict) -> None:
    run_id = workspace["runs"].get("churn_value") or pytest.fail("the churn_value pipeline test must run first")
    checkpoint = Path(workspace["env"]["DATA_DIR"]) / "churn_value" / "train" / _dir(run_id) / "checkpoints"
    (checkpoint / "checkpoint.pt").write_bytes(b"not a checkpoint")
    result = airflow(workspace["env"], "tasks", "test", "training_pipeline", "train", run_id, check=False)
    output = result.stdout + result.stderr
    # `airflow tasks test` exits 0 either way; the task's own log says it failed.
    assert "Task failed with exception" in output
    assert "a rank of the 2-rank barrier stage failed" in output
    assert "Traceback (most recent call last)" in output
    assert "in _restore" in output and "torch.load" in output, "the failing rank's own frames are in the log"


def test_gate_promotes_a_better_candidate_and_never_a_worse_one(workspace: dict, spark, tmp_path: Path) -> None:
    source_run = workspace["runs"].get("churn") or pytest.fail("the churn pipeline test must run first")
    env = workspace["env"]
    settings = Settings(data_dir=env["DATA_DIR"], mlflow_tracking_uri=env["MLFLOW_TRACKING_URI"],
                        mlflow_artifact_root=env["MLFLOW_ARTIFACT_ROOT"])
    document = yaml.safe_load((settings.datasets_dir / "churn.yaml").read_text())
    spec = parse_spec({**document, "name": "churn_gate", "model_name": "churn_gate_model"})
    worse = TrainParams(num_proc=2, epochs=1, learning_rate=1e-6, batch_size=32)
    better = TrainParams(num_proc=2, epochs=4, learning_rate=0.003, batch_size=32)
    decisions = {}
    for run_id, params in (("gate-1-worse", worse), ("gate-2-better", better), ("gate-3-worse", worse)):
        for stage in ("stats", "featurize"):
            shutil.copytree(stage_dir("churn", stage, source_run, settings),
                            stage_dir(spec.name, stage, run_id, settings))
        train_candidate(spark, spec, run_id, params, AirflowContext("training_pipeline", "train"), settings)
        evaluate_candidate(spark, spec, run_id, settings)
        register_candidate(spec, run_id, settings)
        decisions[run_id] = promote_candidate(spec, run_id, threshold=0.0, settings=settings)

    assert decisions["gate-1-worse"].promoted, "a first model that passes the threshold is promoted"
    assert decisions["gate-2-better"].promoted, decisions["gate-2-better"].reason
    assert decisions["gate-2-better"].champion_version == decisions["gate-1-worse"].version
    assert not decisions["gate-3-worse"].promoted, decisions["gate-3-worse"].reason
    assert "does not beat the champion" in decisions["gate-3-worse"].reason
    client = client_for(workspace)
    champion = client.get_model_version_by_alias(spec.registered_model_name, "champion")
    assert champion.version == decisions["gate-2-better"].version
    rejected = client.get_model_version(spec.registered_model_name, decisions["gate-3-worse"].version)
    assert rejected.tags["validation_status"] == "rejected"
    assert rejected.current_stage == "Archived"
    assert client.get_model_version(spec.registered_model_name, decisions["gate-1-worse"].version).current_stage \
        == "Archived"
