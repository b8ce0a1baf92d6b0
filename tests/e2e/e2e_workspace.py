"""The e2e workspace: demo data, an Airflow metadata DB, MLflow on SQLite, and each dataset's training_pipeline
run trained once on first use, whichever test asks for it first (no order between tests).

Spark jobs run on local[2], except those of the datasets in ON_CLUSTER (their training run) and of the commands
given `on_cluster` env: those go to a real standalone master and worker, and the only difference is the
`spark_default` connection (scale-out is configuration)."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pytest
from continuous_training.config import Settings
from mlflow.tracking import MlflowClient
from spark_cluster import StandaloneCluster

ON_CLUSTER = ("churn_value",)
TRAIN_CONF = {"epochs": 4, "num_proc": 2, "learning_rate": 0.003}
"""No batch_size: the trainer's default, sized to the ~2,100 train rows (32 per rank, 32 steps an epoch)."""
FRAMEWORK = {"churn": "torch", "churn_value": "tensorflow"}
"""The framework of each dataset's training run: Horovod ranks for churn, Keras workers for churn_value."""


@dataclass
class Workspace:
    root: Path
    env: dict[str, str]
    cluster: StandaloneCluster
    runs: dict[str, str] = field(default_factory=dict)
    # Names of the Spark applications each dataset's training run submitted to the cluster (none: not ON_CLUSTER).
    training_applications: dict[str, list[str]] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return Path(self.env["DATA_DIR"])

    @property
    def settings(self) -> Settings:
        return Settings(data_dir=self.env["DATA_DIR"], mlflow_tracking_uri=self.env["MLFLOW_TRACKING_URI"],
                        mlflow_artifact_root=self.env["MLFLOW_ARTIFACT_ROOT"])

    def airflow(self, *args: str, check: bool = True, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess:
        """The real airflow CLI; its output is kept for assertions and shown on failure."""
        result = subprocess.run(["airflow", *args], env=env or self.env, capture_output=True, text=True,
                                timeout=1200)
        if check and result.returncode != 0:
            pytest.fail(f"airflow {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-6000:]}\n"
                        f"{result.stderr[-6000:]}")
        return result

    @property
    def on_cluster(self) -> dict[str, str]:
        """The environment with `spark_default` pointing at the standalone cluster."""
        connection = json.dumps({"conn_type": "spark", "host": self.cluster.master_url})
        return {**self.env, "AIRFLOW_CONN_SPARK_DEFAULT": connection}

    def applications_since(self, before: dict[str, str]) -> list[str]:
        """Sorted names of the applications the cluster ran that are not in `before` (a cluster.applications())."""
        return sorted(name for app_id, name in self.cluster.applications().items() if app_id not in before)

    def client(self) -> MlflowClient:
        mlflow.set_tracking_uri(self.env["MLFLOW_TRACKING_URI"])
        return MlflowClient(self.env["MLFLOW_TRACKING_URI"])

    def train(self, dataset: str) -> str:
        """The run id of `dataset`'s training_pipeline run, run through `airflow dags test` the first time."""
        if dataset not in self.runs:
            conf = json.dumps({"dataset": dataset, **TRAIN_CONF, "framework": FRAMEWORK[dataset]})
            before = self.cluster.applications()
            result = self.airflow("dags", "test", "training_pipeline", "--conf", conf,
                                  env=self.on_cluster if dataset in ON_CLUSTER else None)
            finished = dag_run_finished(result.stdout + result.stderr)
            assert finished["state"] == "success", finished
            self.runs[dataset] = finished["run_id"]
            self.training_applications[dataset] = self.applications_since(before)
        return self.runs[dataset]


def dag_run_finished(output: str) -> dict[str, str]:
    """run_id and state from the `DagRun Finished` line that `airflow dags test` logs."""
    line = output.split("DagRun Finished: ")[-1].splitlines()[0]
    return dict(re.findall(r"(\w+)=([^,]+)", line))


def task_final_state(output: str) -> str:
    """The state the task instance ended in, as `airflow tasks test` logs it."""
    states = re.findall(r"Task instance state updated .*?new_state=(\w+)", output)
    assert states, f"no task state in the output:\n{output[-3000:]}"
    return states[-1]

