"""Every DAG file imports, has no cycles, and every task has retries and a timeout; params validate."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from airflow.dag_processing.dagbag import DagBag  # noqa: E402
from airflow.sdk.definitions.param import ParamsDict  # noqa: E402
from airflow.sdk.exceptions import ParamValidationError  # noqa: E402
from continuous_training.config import PROJECT_ROOT  # noqa: E402
from continuous_training.orchestration.tasks import REGISTRY_POOL  # noqa: E402

TRAINING_STAGES = ["check_spec", "ingest", "validate", "stats", "featurize", "train", "evaluate", "register", "promote"]


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(PROJECT_ROOT / "dags"))


def test_every_dag_file_imports(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    assert "training_pipeline" in dagbag.dags


def test_every_task_has_retries_and_a_timeout(dagbag: DagBag) -> None:
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag.dag_id}.{task.task_id} has no retries"
            assert task.retry_exponential_backoff, f"{dag.dag_id}.{task.task_id} has no backoff"
            assert task.execution_timeout is not None, f"{dag.dag_id}.{task.task_id} has no timeout"


def test_dags_are_documented_and_single_run(dagbag: DagBag) -> None:
    for dag in dagbag.dags.values():
        assert dag.doc_md and dag.tags, dag.dag_id
        assert dag.max_active_runs == 1, dag.dag_id


def test_training_pipeline_is_a_chain_of_the_stages(dagbag: DagBag) -> None:
    dag = dagbag.dags["training_pipeline"]
    assert [task.task_id for task in dag.topological_sort()] == TRAINING_STAGES
    for upstream, downstream in zip(TRAINING_STAGES, TRAINING_STAGES[1:], strict=False):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}


def test_registry_moves_share_one_single_slot_pool(dagbag: DagBag) -> None:
    dag = dagbag.dags["training_pipeline"]
    assert {task.task_id for task in dag.tasks if task.pool == REGISTRY_POOL} == {"register", "promote"}
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert f"REGISTRY_POOL := {REGISTRY_POOL}" in makefile
    assert "airflow pools set $(REGISTRY_POOL) 1 " in makefile, "make creates the pool with one slot"


def test_params_validate_good_and_reject_bad(dagbag: DagBag) -> None:
    params: ParamsDict = dagbag.dags["training_pipeline"].params
    params.validate()
    assert params["batch_size"] is None, "no batch by default: the trainer sizes it to the train split"
    for key, bad_value in [("num_proc", 0), ("use_gpu", "maybe"), ("learning_rate", 0), ("dataset", ""),
                           ("max_quarantine_fraction", 1.5), ("batch_size", 0)]:
        candidate = ParamsDict({k: params.get_param(k) for k in params})
        with pytest.raises(ParamValidationError):
            candidate[key] = bad_value
            candidate.validate()


SCORING_STAGES = ["resolve_scoring_run", "ingest", "validate", "score"]


def test_one_training_scoring_and_drift_dag_per_named_spec_that_declares_them(tmp_path) -> None:
    churn = yaml.safe_load((PROJECT_ROOT / "include" / "datasets" / "churn.yaml").read_text())
    (tmp_path / "alpha.yaml").write_text(yaml.safe_dump({**churn, "name": "alpha"}))
    (tmp_path / "beta.yaml").write_text(yaml.safe_dump({key: value for key, value in {**churn, "name": "beta"}.items()
                                                        if key not in ("scoring", "monitoring")}))
    (tmp_path / "gamma.yaml").write_text(yaml.safe_dump({key: value for key, value in {**churn, "name": "gamma"}.items()
                                                         if key not in ("scoring", "training")}))
    listing = ("import json; from airflow.dag_processing.dagbag import DagBag; "
               f"bag = DagBag(dag_folder={str(PROJECT_ROOT / 'dags')!r}); "
               "print(json.dumps([sorted(bag.dags), list(bag.import_errors)]))")
    result = subprocess.run([sys.executable, "-c", listing], capture_output=True, text=True, check=True,
                            env={**os.environ, "DATASETS_DIR": str(tmp_path)})

    dag_ids, errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert errors == []
    assert dag_ids == ["batch_scoring", "batch_scoring__alpha", "cleanup", "drift_check", "drift_check__alpha",
                       "drift_check__gamma", "training__alpha", "training__beta", "training_pipeline"]


def test_training_dags_share_the_stages_and_follow_their_spec(dagbag: DagBag) -> None:
    for dag_id in ("training__churn", "training__churn_value"):
        dag = dagbag.dags[dag_id]
        assert [task.task_id for task in dag.topological_sort()] == TRAINING_STAGES
        assert dag.catchup is False and dag.max_active_runs == 1
    on_new_data = dagbag.dags["training__churn"]
    [asset] = on_new_data.timetable.asset_condition.objects
    assert asset.name == "churn_landing" and asset.uri.endswith("/landing/churn")
    assert [type(watcher.trigger).__name__ for watcher in asset.watchers] == ["NewBatchTrigger"]
    weekly = dagbag.dags["training__churn_value"]
    assert weekly.schedule == "@weekly" and weekly.params["epochs"] == 8
    assert dagbag.dags["training_pipeline"].schedule is None
    for dag_id, bad in [("training__churn", ("dataset", "churn_value")), ("training__churn_value", ("epochs", 0))]:
        params: ParamsDict = dagbag.dags[dag_id].params
        params.validate()
        candidate = ParamsDict({k: params.get_param(k) for k in params})
        with pytest.raises(ParamValidationError):
            candidate[bad[0]] = bad[1]
            candidate.validate()


def test_scoring_dags_are_a_chain_on_the_spec_schedule(dagbag: DagBag) -> None:
    for dag_id in ("batch_scoring__churn", "batch_scoring"):
        dag = dagbag.dags[dag_id]
        assert [task.task_id for task in dag.topological_sort()] == SCORING_STAGES
        assert dag.catchup is False and dag.max_active_runs == 1
    assert dagbag.dags["batch_scoring__churn"].schedule == "@daily"
    assert dagbag.dags["batch_scoring"].schedule is None


def test_scoring_params_validate_good_and_reject_bad(dagbag: DagBag) -> None:
    for dag_id, bad in [("batch_scoring__churn", ("dataset", "churn_value")), ("batch_scoring", ("dataset", "")),
                        ("batch_scoring", ("model_alias", "not an alias")), ("batch_scoring", ("input", ""))]:
        params: ParamsDict = dagbag.dags[dag_id].params
        params.validate()
        candidate = ParamsDict({k: params.get_param(k) for k in params})
        with pytest.raises(ParamValidationError):
            candidate[bad[0]] = bad[1]
            candidate.validate()


DRIFT_STAGES = ["land_labels", "check_drift", "decide_retraining", "trigger_retraining"]


def test_drift_dags_are_a_chain_on_the_spec_schedule_that_triggers_training(dagbag: DagBag) -> None:
    for dag_id in ("drift_check__churn", "drift_check"):
        dag = dagbag.dags[dag_id]
        assert [task.task_id for task in dag.topological_sort()] == DRIFT_STAGES
        assert dag.catchup is False and dag.max_active_runs == 1
        trigger = dag.get_task("trigger_retraining")
        assert "['dag_id']" in trigger.trigger_dag_id and trigger.skip_when_already_exists
    assert dagbag.dags["drift_check__churn"].schedule == "0 6 * * *"
    assert dagbag.dags["drift_check"].schedule is None
    for dag_id, bad in [("drift_check__churn", ("dataset", "churn_value")), ("drift_check", ("window", 0))]:
        params: ParamsDict = dagbag.dags[dag_id].params
        params.validate()
        candidate = ParamsDict({k: params.get_param(k) for k in params})
        with pytest.raises(ParamValidationError):
            candidate[bad[0]] = bad[1]
            candidate.validate()


def test_trigger_forms_group_their_fields_and_dataset_dags_say_what_their_spec_sets(dagbag: DagBag) -> None:
    def sections(dag_id: str) -> list[str]:
        return [param.schema["section"] for param in dagbag.dags[dag_id].params.values()]

    assert list(dict.fromkeys(sections("training__churn"))) == ["Data", "Training", "Gate", "Advanced"]
    assert dagbag.dags["training__churn"].params.get_param("triggered_by").schema["section"] == "Advanced"
    assert list(dict.fromkeys(sections("batch_scoring__churn"))) == ["Data", "Model"]
    assert list(dict.fromkeys(sections("drift_check"))) == ["Data", "Window"]
    names = {dag_id: dag.dag_display_name for dag_id, dag in dagbag.dags.items()}
    assert names["training__churn"] == "Training: churn" and names["training_pipeline"] == "Training (any dataset)"
    assert names["drift_check__churn"] == "Drift check: churn"
    training = dagbag.dags["training__churn"].doc_md
    assert training.startswith("#### Training: churn\n") and "- source: `landing/churn/*/*.csv` (csv)" in training
    assert "- on new data: a new batch folder with `_SUCCESS` under `" in training and "/landing/churn`" in training
    scoring = dagbag.dags["batch_scoring__churn"].doc_md
    assert "- schedule: `@daily`" in scoring and "- batch of each date: `incoming/churn/date={{ ds }}/*.csv`" in scoring
    assert "check_spec" in training, "the pipeline's own doc follows the dataset's header"
