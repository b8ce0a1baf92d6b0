"""One e2e workspace per test session (see e2e_workspace.py)."""

from __future__ import annotations

import pytest
from continuous_training.data.demo import generate
from e2e_workspace import Workspace


@pytest.fixture(scope="session")
def e2e(tmp_path_factory, airflow_env) -> Workspace:
    root = tmp_path_factory.mktemp("e2e")
    workspace = Workspace(root=root, env=airflow_env(root))
    generate(rows=3000, batches=2, seed=7, bad_fraction=0.01, data_dir=workspace.data_dir)
    workspace.airflow("db", "migrate")
    workspace.airflow("pools", "set", "mlflow_registry", "1", "Serialises MLflow registry moves")
    return workspace
