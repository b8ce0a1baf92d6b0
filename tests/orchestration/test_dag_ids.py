"""The DAG ids that `dag_ids` computes are exactly those of the real DAG folder, and the DAG it picks for a dataset
accepts that dataset in its `dataset` param."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from airflow.dag_processing.dagbag import DagBag  # noqa: E402
from airflow.sdk.definitions.param import ParamsDict  # noqa: E402
from continuous_training.config import PROJECT_ROOT  # noqa: E402
from continuous_training.dag_ids import GENERIC_DAG, KINDS, dag_id, dags  # noqa: E402
from continuous_training.spec import named_specs  # noqa: E402

MAINTENANCE_DAG = "cleanup"
"""The one DAG of the folder that belongs to no pipeline kind (storage retention)."""


@pytest.fixture(scope="module")
def dagbag() -> DagBag:
    return DagBag(dag_folder=str(PROJECT_ROOT / "dags"))


def test_the_computed_ids_are_the_dags_of_the_dag_folder(dagbag: DagBag) -> None:
    assert dagbag.import_errors == {}
    specs = named_specs()
    assert {spec.name for spec in specs} >= {"churn", "churn_plan", "churn_value"}
    chosen = {dag_id(kind, spec, spec.name) for kind in KINDS for spec in specs}
    pipeline_dags = set(dagbag.dag_ids) - {MAINTENANCE_DAG}
    assert chosen | set(GENERIC_DAG.values()) == pipeline_dags
    assert {listed for kind in KINDS for listed, _ in dags(kind)} == pipeline_dags


def test_the_chosen_dag_accepts_the_dataset_as_given(dagbag: DagBag) -> None:
    for spec in named_specs():
        path = str(PROJECT_ROOT / "include" / "datasets" / f"{spec.name}.yaml")
        for kind in KINDS:
            assert dag_id(kind, spec, path) == GENERIC_DAG[kind]
            for dataset in (spec.name, path):
                params: ParamsDict = dagbag.dags[dag_id(kind, spec, dataset)].params
                candidate = ParamsDict({key: params.get_param(key) for key in params})
                candidate["dataset"] = dataset
                candidate.validate()
