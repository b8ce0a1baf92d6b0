"""Evaluate scores candidate and champion on the same rows; promote gates against the version that holds
`@champion` when it decides (re-evaluating if it moved since evaluate), one registry move at a time.

Candidates are small pyfuncs with chosen weights, logged into runs that look like training runs, over a test split
written as featurize writes it: real Spark and MLflow (SQLite), no Horovod."""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from continuous_training.config import Settings
from continuous_training.data.features import SPLIT
from continuous_training.model.pyfunc import log_pyfunc_model
from continuous_training.model.transform import FeatureTransform
from continuous_training.paths import stage_dir
from continuous_training.registry import (
    CHAMPION_EVALUATED_TAG,
    promote_candidate,
    register_candidate,
    registry_lock_path,
)
from continuous_training.spec import DatasetSpec, parse_spec
from continuous_training.tracking import CANDIDATE_MODEL_TAG, CHAMPION, mlflow_client, start_training_run
from continuous_training.training.evaluate import evaluate_candidate

pytestmark = pytest.mark.integration

NUMERIC = ["signal", "noise"]


def make_spec(task: str) -> DatasetSpec:
    return parse_spec({
        "name": f"gate_{task}", "source": {"path": "unused.csv", "format": "csv"},
        "schema": {"id": "string", "signal": "double", "noise": "double", "label": "string"},
        "label": "label", "task": task, "id_column": "id", "features": {"numeric": NUMERIC},
        "promotion": {"threshold": 0.5} if task == "binary_classification" else {},
    })


def write_test_split(spec: DatasetSpec, run_id: str, rows: pd.DataFrame, settings) -> None:
    """The run's `raw_splits` as featurize writes them (partitioned by data_split), holding only a test split."""
    folder = stage_dir(spec.name, "featurize", run_id, settings) / "raw_splits" / f"{SPLIT}=test"
    folder.mkdir(parents=True)
    rows.to_parquet(folder / "part-00000.parquet", index=False)


def linear_weights(weight: list[list[float]], bias: list[float], framework: str) -> dict[str, np.ndarray]:
    """The weights of a hidden-layer-free MLP (outputs × inputs `weight`) by the framework's names."""
    weight_array, bias_array = np.asarray(weight, dtype=np.float32), np.asarray(bias, dtype=np.float32)
    if framework == "tensorflow":
        return {"mlp/output/kernel": weight_array.T, "mlp/output/bias": bias_array}
    return {"0.weight": weight_array, "0.bias": bias_array}


def log_candidate(spec: DatasetSpec, run_id: str, classes: list[str], weight: list[list[float]],
                  bias: list[float], settings, framework: str = "torch") -> None:
    """A training run of `run_id` whose candidate is a linear model over the raw (unscaled) numeric columns, as a
    torch or a Keras network."""
    client = mlflow_client(settings)
    run = start_training_run(client, spec.name, run_id, {"dataset": spec.name}, settings)
    transform = FeatureTransform(numeric=NUMERIC, numeric_types=["double", "double"], surrogates=[0.0, 0.0],
                                 means=[0.0, 0.0], stds=[1.0, 1.0], categorical=[], categorical_types=[],
                                 labels=[], category_sizes=[])
    num_classes = len(classes) if spec.task == "multiclass_classification" else None
    with mlflow.start_run(run_id=run.info.run_id):
        info = log_pyfunc_model(
            weights=linear_weights(weight, bias, framework), framework=framework, transform=transform,
            task=spec.task, feature_dim=len(NUMERIC), num_classes=num_classes, hidden=(), classes=classes,
            input_example=pd.DataFrame({"signal": [0.5, -1.0], "noise": [0.1, 0.2]}),
        )
    client.set_tag(run.info.run_id, CANDIDATE_MODEL_TAG, info.model_uri)


def test_candidate_and_champion_are_scored_on_the_same_rows(spark, settings, caplog):
    spec = make_spec("multiclass_classification")
    labels = ["a"] * 4 + ["b"] * 4 + ["c"] * 3 + [None]
    rows = pd.DataFrame({"id": [f"r{i}" for i in range(len(labels))], "signal": np.linspace(-1, 1, len(labels)),
                         "noise": 0.0, "label": labels})
    for run_id, classes in (("champion", ["a", "b"]), ("candidate", ["a", "b", "c"])):
        write_test_split(spec, run_id, rows, settings)
        # Both always predict "a" (zero weights, the largest bias): their accuracy is the share of "a" rows.
        log_candidate(spec, run_id, classes, [[0.0, 0.0]] * len(classes), [5.0] + [0.0] * (len(classes) - 1),
                      settings)
    evaluate_candidate(spark, spec, "champion", settings)
    register_candidate(spec, "champion", settings)
    assert promote_candidate(spark, spec, "champion", settings=settings).promoted

    with caplog.at_level(logging.WARNING, logger="continuous_training.training.evaluate"):
        evaluation = evaluate_candidate(spark, spec, "candidate", settings)

    assert evaluation.rows_evaluated == 8
    assert evaluation.unknown_labels == {"c": 3, None: 1}
    assert evaluation.metrics["test_accuracy"] == evaluation.metrics["champion_test_accuracy"] == 0.5
    run = mlflow_client(settings).get_run(evaluation.mlflow_run_id)
    assert run.data.metrics["test_rows_evaluated"] == 8
    assert run.data.metrics["test_rows_unknown_label"] == 4
    assert run.data.metrics["test_accuracy"] == run.data.metrics["champion_test_accuracy"] == 0.5
    assert run.data.tags[CHAMPION_EVALUATED_TAG] == "1"
    written = json.loads((stage_dir(spec.name, "evaluate", "candidate", settings) / "evaluation.json").read_text())
    assert written["rows_evaluated"] == 8 and written["rows_unknown_label"] == 4
    assert written["unknown_labels"] == [{"label": "c", "rows": 3}, {"label": None, "rows": 1}]
    assert written["champion_version"] == "1" and written["metrics"] == evaluation.metrics
    assert "4 of 12 test rows are left out" in caplog.text and "'c': 3" in caplog.text


NOISE_WEIGHT = {"v1": 3.0, "A": 0.0, "B": 1.0}
"""Candidates score `signal + w * noise` where the label is `signal > 0`: the larger w, the worse the AUC."""
FRAMEWORK = {"v1": "tensorflow", "A": "torch", "B": "tensorflow"}
"""The gate compares models of either framework on the same holdout."""


@pytest.fixture(scope="module")
def gate_template(spark, tmp_path_factory):
    """v1 holds @champion; candidates A (best) and B (better than v1, worse than A) are evaluated against v1 and
    registered, not promoted yet. Built once; each test gets a copy of its MLflow database and DATA_DIR."""
    root = tmp_path_factory.mktemp("gate")
    settings = Settings(data_dir=root / "data", mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                        mlflow_artifact_root=root / "artifacts")
    spec = make_spec("binary_classification")
    rng = np.random.default_rng(11)
    signal, noise = rng.normal(size=200), rng.normal(size=200)
    rows = pd.DataFrame({"id": [f"r{i}" for i in range(200)], "signal": signal, "noise": noise,
                         "label": np.where(signal > 0, "yes", "no")})
    for run_id, weight in NOISE_WEIGHT.items():
        write_test_split(spec, run_id, rows, settings)
        log_candidate(spec, run_id, ["no", "yes"], [[1.0, weight]], [0.0], settings, FRAMEWORK[run_id])
    evaluate_candidate(spark, spec, "v1", settings)
    register_candidate(spec, "v1", settings)
    assert promote_candidate(spark, spec, "v1", settings=settings).promoted
    auc = {}
    for run_id in ("A", "B"):
        evaluation = evaluate_candidate(spark, spec, run_id, settings)
        register_candidate(spec, run_id, settings)
        auc[run_id], auc["v1"] = evaluation.metrics["test_auc"], evaluation.metrics["champion_test_auc"]
        assert evaluation.champion_version == "1"
    assert auc["A"] > auc["B"] > auc["v1"] > 0.5, auc
    return spec, settings, auc


@pytest.fixture
def gate(gate_template, tmp_path):
    """A copy of the template's registry and DATA_DIR (the model artifacts stay where they were logged)."""
    spec, template, auc = gate_template
    shutil.copyfile(template.mlflow_tracking_uri.removeprefix("sqlite:///"), tmp_path / "mlflow.db")
    shutil.copytree(template.data_dir, tmp_path / "data")
    settings = Settings(data_dir=tmp_path / "data", mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                        mlflow_artifact_root=template.mlflow_artifact_root)
    return spec, settings, auc


def champion_version(spec: DatasetSpec, settings) -> str:
    return str(mlflow_client(settings).get_model_version_by_alias(spec.registered_model_name, CHAMPION).version)


def test_promote_gates_against_the_champion_of_the_moment_not_the_one_evaluated(spark, gate):
    spec, settings, auc = gate

    promoted_a = promote_candidate(spark, spec, "A", settings=settings)
    decision_b = promote_candidate(spark, spec, "B", settings=settings)

    assert promoted_a.promoted and promoted_a.version == "2" and promoted_a.champion_version == "1"
    assert not promoted_a.reevaluated
    assert not decision_b.promoted, decision_b.reason
    assert "does not beat the champion" in decision_b.reason
    assert decision_b.champion_version == "2" and decision_b.champion_version_at_evaluate == "1"
    assert decision_b.reevaluated
    assert decision_b.champion_value == pytest.approx(auc["A"])
    assert decision_b.candidate_value == pytest.approx(auc["B"])
    client = mlflow_client(settings)
    run_b = client.get_run(client.get_model_version(spec.registered_model_name, "3").run_id)
    assert run_b.data.tags[CHAMPION_EVALUATED_TAG] == "2"
    assert run_b.data.metrics["champion_test_auc"] == pytest.approx(auc["A"])
    assert run_b.data.tags["promotion"] == "rejected"
    version_b = client.get_model_version(spec.registered_model_name, "3")
    assert version_b.tags["validation_status"] == "rejected" and version_b.current_stage == "Archived"
    assert float(version_b.tags["champion_test_auc"]) == pytest.approx(auc["A"])
    written = json.loads((stage_dir(spec.name, "promote", "B", settings) / "promotion.json").read_text())
    assert written["champion_version"] == "2" and written["reevaluated"] is True
    assert champion_version(spec, settings) == "2"
    rerun = promote_candidate(spark, spec, "A", settings=settings)
    assert rerun.promoted and "already holds @champion" in rerun.reason
    assert champion_version(spec, settings) == "2"


def lock_is_held(path: Path) -> bool:
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


@pytest.mark.parametrize("first", ["A", "B"])
def test_racing_promotes_end_with_the_best_champion(spark, gate, first, caplog):
    """Two promotes at once: the second starts while the first holds the registry lock, so it must wait, then
    gate against the first's outcome."""
    spec, settings, _ = gate
    second = "B" if first == "A" else "A"
    lock = registry_lock_path(spec.registered_model_name, settings)

    with caplog.at_level(logging.INFO, logger="continuous_training.registry"), ThreadPoolExecutor(2) as pool:
        first_promote = pool.submit(promote_candidate, spark, spec, first, settings=settings)
        while not first_promote.done() and not lock_is_held(lock):
            time.sleep(0.005)
        second_promote = pool.submit(promote_candidate, spark, spec, second, settings=settings)
        decisions = {first: first_promote.result(), second: second_promote.result()}

    version = {"A": "2", "B": "3"}
    first_decided = f"PROMOTED {spec.registered_model_name} version {version[first]}:"
    first_thread = next(record.threadName for record in caplog.records if record.getMessage().startswith(first_decided))
    assert any(record.getMessage().startswith(f"waiting for the registry lock {lock}")
               and record.threadName != first_thread for record in caplog.records), "the promotes did not overlap"
    assert decisions[first].promoted and decisions[first].champion_version == "1"
    assert not decisions[first].reevaluated
    assert decisions[second].champion_version == version[first] and decisions[second].reevaluated
    assert decisions[second].promoted is (second == "A"), decisions[second].reason
    assert [decision.champion_version for decision in decisions.values()].count("1") == 1
    assert champion_version(spec, settings) == "2"
    client = mlflow_client(settings)
    versions = client.search_model_versions(f"name = '{spec.registered_model_name}'")
    assert {str(v.version): v.current_stage for v in versions} == {"1": "Archived", "2": "Production", "3": "Archived"}
