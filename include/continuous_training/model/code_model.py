"""The models-from-code script MLflow runs when it loads a logged model: it sets the `TabularModel` to serve."""

from mlflow.models import set_model

from continuous_training.model.pyfunc import TabularModel

set_model(TabularModel())
