"""One e2e workspace per test session (see e2e_workspace.py), its Spark jobs run on a standalone cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from continuous_training.demo import generate
from e2e_workspace import Workspace
from spark_cluster import StandaloneCluster, standalone_cluster


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory) -> Iterator[StandaloneCluster]:
    """A standalone master and worker for the whole session, stopped at its end."""
    with standalone_cluster(tmp_path_factory.mktemp("spark_cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def e2e(tmp_path_factory, airflow_env, spark_cluster: StandaloneCluster) -> Workspace:
    """The workspace; its Spark jobs run on local[2], those of `Workspace.on_cluster` on the session's cluster."""
    root = tmp_path_factory.mktemp("e2e")
    workspace = Workspace(root=root, env=airflow_env(root), cluster=spark_cluster)
    generate(rows=3000, batches=2, seed=7, bad_fraction=0.01, data_dir=workspace.data_dir)
    workspace.airflow("db", "migrate")
    workspace.airflow("pools", "set", "mlflow_registry", "1", "Serialises MLflow registry moves")
    return workspace
