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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from continuous_training.config import Settings, get_settings
from continuous_training.data.features import SPLIT
from continuous_training.errors import PipelineError
from continuous_training.model.pyfunc import log_pyfunc_model
from continuous_training.model.transform import FeatureTransform
from continuous_training.paths import stage_dir, write_result
from continuous_training.registry import (
    CHAMPION_EVALUATED_TAG,
    champion_on,
    promote_candidate,
    promotion_history,
    register_candidate,
    registry_lock_path,
    rollback,
)
from continuous_training.registry import main as registry_main
from continuous_training.spec import DatasetSpec, parse_spec
from continuous_training.tracking import (
    CANDIDATE_MODEL_TAG,
    CHAMPION,
    find_airflow_run,
    mlflow_client,
    start_training_run,
)
from continuous_training.training.evaluate import evaluate_candidate

pytestmark = pytest.mark.integration

NUMERIC = ["signal", "noise"]


def make_spec(task: str) -> DatasetSpec:
    return parse_spec({
        "name": f"gate_{task}", "source": {"path": "unused.csv", "format": "csv"},
        "schema": {"id": "string", "signal": "double", "noise": "double",
                   "label": "double" if task == "regression" else "string"},
        "label": "label", "task": task, "id_column": "id", "features": {"numeric": NUMERIC},
        "promotion": {"threshold": 0.5} if task == "binary_classification" else {},
    })


def write_test_split(spec: DatasetSpec, run_id: str, rows: pd.DataFrame, settings) -> None:
    """The run's `raw_splits` as featurize writes them (partitioned by data_split), holding only a test split."""
    folder = stage_dir(spec.name, "featurize", run_id, settings) / "raw_splits" / f"{SPLIT}=test"
    folder.mkdir(parents=True)
    rows.to_parquet(folder / "part-00000.parquet", index=False)


DATA_AS_OF_TAG = "data_as_of"
DAY_MS = 86_400_000
DATA_MS = {"v1": 1_793_000_000_000, "A": 1_793_000_000_000 + DAY_MS, "B": 1_793_000_000_000 + DAY_MS}
"""The modification time of the newest landing file each run pinned: A and B trained on the same, newer data."""


def pin_inputs(spec: DatasetSpec, run_id: str, modified_ms: list[int], settings) -> None:
    """The run's `inputs.json` as ingest pins it: one landing file per modification time."""
    files = [{"path": f"file:/landing/{spec.name}/batch={ms}/part-0.csv", "size": 100, "modified_ms": ms}
             for ms in modified_ms]
    write_result(stage_dir(spec.name, "ingest", run_id, settings) / "inputs.json",
                 {"source": f"landing/{spec.name}/*/*.csv", "files": files, "fingerprint": run_id})


def as_of(modified_ms: int) -> str:
    return datetime.fromtimestamp(modified_ms / 1000, UTC).isoformat(timespec="milliseconds")


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
        pin_inputs(spec, run_id, [DATA_MS["v1"], DATA_MS[run_id]], settings)
        log_candidate(spec, run_id, ["no", "yes"], [[1.0, weight]], [0.0], settings, FRAMEWORK[run_id])
    evaluate_candidate(spark, spec, "v1", settings)
    register_candidate(spec, "v1", settings)
    assert promote_candidate(spark, spec, "v1", settings=settings).promoted
    assert [(event["action"], event["version"]) for event in promotion_history(spec, settings)] == [("promoted", "1")]
    # The copies share the template's artifact folders: each test records a promotion history of its own.
    client = mlflow_client(settings)
    [history] = client.search_runs([client.get_experiment_by_name(f"{spec.name}-registry").experiment_id])
    client.delete_run(history.info.run_id)
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


def test_each_version_describes_its_data_training_metrics_and_the_gates_verdict(spark, gate):
    """The model card: the version's description and its training run's note, written at register (the gate
    pending) and rewritten by promote with the verdict and the metrics against the champion on the same rows."""
    spec, settings, auc = gate
    client = mlflow_client(settings)
    name = spec.registered_model_name
    assert "- **Gate**: pending until `promote`" in client.get_model_version(name, "2").description

    promote_candidate(spark, spec, "A", settings=settings)
    promote_candidate(spark, spec, "B", settings=settings)

    promoted, rejected = client.get_model_version(name, "2"), client.get_model_version(name, "3")
    assert promoted.description.startswith(f"**{name} version 2** of dataset `{spec.name}`")
    assert "- **Airflow run**: `A` of `" in promoted.description
    assert "- **Data**: 2 input files pinned by ingest, newest modified " in promoted.description
    assert "- **Test metrics**: test_" in promoted.description
    assert f"test_auc {auc['A']:.4g} (champion on the same rows: {auc['v1']:.4g})" in promoted.description
    assert "- **Gate**: promoted to @champion: test_auc=" in promoted.description
    assert "- **Gate**: rejected: test_auc=" in rejected.description and "does not beat" in rejected.description
    assert client.get_run(promoted.run_id).data.tags["mlflow.note.content"] == promoted.description


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


def test_clearing_an_old_runs_promote_does_not_move_the_champion_back_to_older_data(spark, gate):
    """B, trained on a landing batch newer than A's data, holds @champion; clearing the promote of A's older run
    re-scores A on A's own test split, where A is better: the gate refuses in one line, keeps B, tags A, and the
    task stays green."""
    spec, settings, auc = gate
    client, name = mlflow_client(settings), spec.registered_model_name
    newer = DATA_MS["B"] + DAY_MS
    pin_inputs(spec, "B", [DATA_MS["v1"], DATA_MS["B"], newer], settings)
    register_candidate(spec, "B", settings)
    assert promote_candidate(spark, spec, "B", settings=settings).promoted

    decision = promote_candidate(spark, spec, "A", settings=settings)

    assert not decision.promoted, decision.reason
    assert decision.candidate_value > decision.champion_value, "A beats B on A's test split"
    assert "champion version 3 was trained on newer data" in decision.reason and "\n" not in decision.reason
    assert decision.candidate_data_as_of == as_of(DATA_MS["A"]) and decision.champion_data_as_of == as_of(newer)
    assert champion_version(spec, settings) == "3"
    version_a = client.get_model_version(name, "2")
    assert version_a.tags["validation_status"] == "rejected" and version_a.current_stage == "Archived"
    assert version_a.tags["promotion_reason"] == decision.reason
    assert version_a.tags[DATA_AS_OF_TAG] == as_of(DATA_MS["A"])
    assert client.get_model_version(name, "3").tags[DATA_AS_OF_TAG] == as_of(newer)
    assert client.get_run(version_a.run_id).data.tags["promotion"] == "rejected"
    written = json.loads((stage_dir(spec.name, "promote", "A", settings) / "promotion.json").read_text())
    assert written["promoted"] is False and written["champion_data_as_of"] == as_of(newer)


@pytest.mark.parametrize("ingest_kept", [True, False])
def test_a_champion_registered_before_data_ages_were_tagged_does_not_block_the_gate(spark, gate, ingest_kept):
    """A champion without the data-age tag is dated by its run's `inputs.json`; without either its age is unknown
    and the gate decides on the metric alone (an old registry keeps working)."""
    spec, settings, _ = gate
    mlflow_client(settings).delete_model_version_tag(spec.registered_model_name, "1", DATA_AS_OF_TAG)
    if not ingest_kept:
        shutil.rmtree(stage_dir(spec.name, "ingest", "v1", settings))

    decision = promote_candidate(spark, spec, "A", settings=settings)

    assert decision.promoted, decision.reason
    assert decision.champion_data_as_of == (as_of(DATA_MS["v1"]) if ingest_kept else None)
    assert champion_version(spec, settings) == "2"


def test_promote_does_not_approve_a_version_moved_to_champion_by_hand(spark, gate):
    """B never passed the gate; someone moved @champion to it by hand. Promote of B's run refuses to approve it
    (scoring refuses unapproved versions) and says how to gate it."""
    spec, settings, _ = gate
    client, name = mlflow_client(settings), spec.registered_model_name
    client.set_registered_model_alias(name, CHAMPION, "3")

    decision = promote_candidate(spark, spec, "B", settings=settings)

    assert not decision.promoted, decision.reason
    assert "version 3 holds @champion but the gate did not approve it" in decision.reason
    assert client.get_model_version(name, "3").tags["validation_status"] == "rejected"


@pytest.mark.parametrize(("task", "classes", "metric"), [
    ("regression", None, "test_rmse"),
    ("binary_classification", ["no", "yes"], "test_logloss"),
    ("multiclass_classification", ["no", "yes", "maybe"], "test_logloss"),
])
def test_evaluate_fails_naming_the_metric_when_the_candidate_predicts_nan(spark, settings, task, classes, metric):
    """A value of 1e300 is inf in float32; times a zero weight it is NaN: the candidate predicts NaN for that row."""
    spec = make_spec(task)
    labels = [1.0, 2.0, 3.0, 4.0] if classes is None else ["no", "yes", "yes", "no"]
    rows = pd.DataFrame({"id": ["r0", "r1", "r2", "r3"], "signal": [0.5, -1.0, 2.0, 0.0],
                         "noise": [0.1, 1e300, 0.0, 0.3], "label": labels})
    write_test_split(spec, "nan", rows, settings)
    outputs = 1 if task != "multiclass_classification" else len(classes)
    log_candidate(spec, "nan", classes, [[1.0, 0.0]] * outputs, [0.0] * outputs, settings)

    with pytest.raises(PipelineError) as caught:
        evaluate_candidate(spark, spec, "nan", settings)

    message = str(caught.value)
    assert f"the candidate's {metric}=nan" in message and "not finite" in message and "\n" not in message
    assert not (stage_dir(spec.name, "evaluate", "nan", settings) / "evaluation.json").exists()
    assert metric not in find_airflow_run(mlflow_client(settings), spec.name, "nan").data.metrics


def test_a_refused_rerun_of_an_old_champions_promote_keeps_it_a_rollback_target(spark, gate):
    """v1 passed the gate once; A replaced it. Clearing v1's promote refuses v1 again, yet v1 stays approved, so a
    hand rollback to it can still be scored."""
    spec, settings, _ = gate
    assert promote_candidate(spark, spec, "A", settings=settings).promoted

    decision = promote_candidate(spark, spec, "v1", settings=settings)

    assert not decision.promoted, decision.reason
    assert champion_version(spec, settings) == "2"
    version_1 = mlflow_client(settings).get_model_version(spec.registered_model_name, "1")
    assert version_1.tags["validation_status"] == "approved"
    assert version_1.tags["promotion_reason"] == decision.reason


def test_every_champion_move_is_in_the_history_and_rollback_returns_to_the_version_replaced(spark, gate):
    """v1 holds @champion (its promotion is checked in the template), A replaces it, B is rejected, a rerun of A's
    promote adds nothing; a rollback
    moves @champion back to v1 under the registry lock, tags why on both versions and is recorded; the history
    answers which version held @champion at each moment; a version the gate never approved is refused."""
    spec, settings, auc = gate
    name = spec.registered_model_name
    assert promote_candidate(spark, spec, "A", settings=settings).promoted
    assert not promote_candidate(spark, spec, "B", settings=settings).promoted
    assert promote_candidate(spark, spec, "A", settings=settings).promoted

    replaced, champion = rollback(spec, reason="A regressed in production", settings=settings)

    assert (replaced, champion) == ("2", "1") and champion_version(spec, settings) == "1"
    client = mlflow_client(settings)
    why = "A regressed in production"
    assert client.get_model_version(name, "1").tags["rollback_reason"] == f"replaced version 2: {why}"
    assert client.get_model_version(name, "2").tags["rolled_back"] == f"replaced by version 1: {why}"
    history = promotion_history(spec, settings)
    assert [(event["action"], event["version"], event["replaced"]) for event in history] == [
        ("promoted", "2", "1"), ("rejected", "3", None), ("rolled_back", "1", "2")]
    assert [event.get("airflow_run_id") for event in history] == ["A", "B", None]
    assert history[0]["value"] == pytest.approx(auc["A"]) and history[0]["champion_value"] == pytest.approx(auc["v1"])
    assert all(event["by"] and event["reason"] for event in history)
    moments = [datetime.fromisoformat(event["at"]) for event in history]
    assert champion_on(history, moments[0] - timedelta(seconds=1)) is None, "v1's promotion is not in this history"
    assert champion_on(history, moments[1]) == "2" and champion_on(history, moments[2]) == "1"
    experiment = client.get_experiment_by_name(f"{spec.name}-registry").experiment_id
    [run] = client.search_runs([experiment])  # the template's, deleted, is not among them
    assert [artifact.path for artifact in client.list_artifacts(run.info.run_id)] == ["promotion_history.json"]

    with pytest.raises(PipelineError, match=f"version 3 of {name} was never approved by the promotion gate"):
        rollback(spec, version="3", settings=settings)
    with pytest.raises(PipelineError, match=f"version 1 of {name} already holds @champion"):
        rollback(spec, version="1", settings=settings)
    assert champion_version(spec, settings) == "1" and len(promotion_history(spec, settings)) == 3


def test_make_rollback_and_make_history_print_what_moved_and_refuse_in_one_line(spark, gate, tmp_path, monkeypatch,
                                                                                 capsys, caplog):
    spec, settings, _ = gate
    assert promote_candidate(spark, spec, "A", settings=settings).promoted
    spec_file = tmp_path / "gate.yaml"
    spec_file.write_text(yaml.safe_dump(spec.model_dump(mode="json", by_alias=True, exclude_none=True)))
    for variable, value in (("DATA_DIR", settings.data_dir), ("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri),
                            ("MLFLOW_ARTIFACT_ROOT", settings.mlflow_artifact_root)):
        monkeypatch.setenv(variable, str(value))
    get_settings.cache_clear()
    try:
        registry_main(["rollback", "--dataset", str(spec_file), "--reason", "canary alert"])
        rolled = capsys.readouterr().out
        registry_main(["history", "--dataset", str(spec_file)])
        history = capsys.readouterr().out
        registry_main(["history", "--dataset", str(spec_file), "--on", datetime.now(UTC).date().isoformat()])
        on_today = capsys.readouterr().out
        with pytest.raises(SystemExit) as refused:
            registry_main(["rollback", "--dataset", str(spec_file), "--version", "3"])
    finally:
        get_settings.cache_clear()

    name = spec.registered_model_name
    assert rolled == f"@champion of {name}: version 1, replacing version 2\n"
    lines = history.splitlines()
    assert lines[0] == f"promotion history of {name}" and len(lines) == 3
    assert "promoted    version 2 (replacing 1)" in lines[1] and "(A): test_auc" in lines[1]
    assert "rolled_back version 1 (replacing 2)" in lines[2] and lines[2].endswith("(by hand): canary alert")
    assert on_today == f"{name}: version 1 held @champion at the end of {datetime.now(UTC).date()} (UTC)\n"
    assert refused.value.code == 1
    [error] = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert error.startswith(f"version 3 of {name} was never approved by the promotion gate")
