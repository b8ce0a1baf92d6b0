"""Jobs and executors load models with MLflow's pickle deserialization off: the services give every task that
environment, under which a model this project logs (from code) still loads and predicts and a pickled one is
refused."""

from __future__ import annotations

import mlflow
import pytest
import services
from mlflow.exceptions import MlflowException
from tabular_case import LABELS, frames, log_model, tracking, transform  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration


class PickledModel(mlflow.pyfunc.PythonModel):
    """A pyfunc logged the old way: MLflow cloudpickles the object."""

    def predict(self, context, model_input):
        return model_input


def test_the_services_run_tasks_with_pickle_deserialization_off(monkeypatch) -> None:
    monkeypatch.delenv(services.PICKLE_ENV, raising=False)
    assert services.child_environment()[services.PICKLE_ENV] == "false"
    monkeypatch.setenv(services.PICKLE_ENV, "true")  # an explicit choice (to score an old model) is kept
    assert services.child_environment()[services.PICKLE_ENV] == "true"


def test_with_pickles_off_a_project_model_scores_and_a_pickled_model_is_refused(
        tracking, frames, transform, monkeypatch) -> None:  # noqa: F811 (fixtures)
    task = "binary_classification"
    example = frames[1].toPandas()
    project = log_model(task, transform[1], example)
    with mlflow.start_run():
        pickled = mlflow.pyfunc.log_model(name="pickled", python_model=PickledModel())
    monkeypatch.setenv(services.PICKLE_ENV, "false")

    predictions = mlflow.pyfunc.load_model(project.model_uri).predict(example.drop(columns=[LABELS[task]]))
    assert len(predictions) == len(example) and set(predictions["prediction"]) <= {"no", "yes"}
    with pytest.raises(MlflowException, match="Deserializing model using pickle is disallowed"):
        mlflow.pyfunc.load_model(pickled.model_uri)
