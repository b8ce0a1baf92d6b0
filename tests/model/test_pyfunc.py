"""The pyfunc on raw columns: MLflow round trip in both frameworks, and a served model free of Spark and Airflow."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from tabular_case import CLASSES, LABELS, PREDICTION_COLUMNS, log_model

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
@pytest.mark.parametrize("task", list(LABELS))
def test_pyfunc_round_trip(task, framework, frames, transform, tracking):
    _, feature_transform = transform
    raw = frames[1].orderBy("spend").toPandas()

    info = log_model(task, feature_transform, raw.head(3), framework)
    model = mlflow.pyfunc.load_model(info.model_uri)
    predictions = model.predict(raw)

    assert list(predictions.columns) == PREDICTION_COLUMNS[task]
    assert len(predictions) == len(raw)
    if task == "regression":
        assert predictions["prediction"].dtype == np.float64
    else:
        assert set(predictions["prediction"]) <= set(CLASSES[task])
        assert predictions["probability"].dtype == np.float64
        assert predictions["probability"].between(0, 1).all()
    if task == "multiclass_classification":
        for row in predictions.itertuples():
            assert len(row.probabilities) == 3 and math.isclose(sum(row.probabilities), 1.0, abs_tol=1e-9)
            assert row.probability == max(row.probabilities)
            assert row.prediction == CLASSES[task][int(np.argmax(row.probabilities))]
    signature = model.metadata.signature
    assert signature.inputs.input_names() == feature_transform.input_columns
    assert signature.outputs.input_names() == PREDICTION_COLUMNS[task]
    assert model.metadata.saved_input_example_info is not None
    local_model = mlflow.artifacts.download_artifacts(info.model_uri)
    saved_example = mlflow.models.Model.load(local_model).load_input_example(local_model)
    assert list(saved_example.columns) == feature_transform.input_columns and len(saved_example) == 3
    with pytest.raises(MlflowException, match="tenure"):
        model.predict(raw.drop(columns=["tenure"]))
    as_text = raw.assign(autopay=raw["autopay"].map({True: "true", False: "false"}))
    pd.testing.assert_frame_equal(model.predict(as_text), predictions)


REFUSING_SERVER = """
import json
import sys


class RefuseImports:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"pyspark", "airflow", "horovod", *sys.argv[3].split(",")}:
            raise ImportError(f"the served model imported {name}")
        return None


sys.meta_path.insert(0, RefuseImports())
import mlflow.pyfunc
import pandas as pd

model = mlflow.pyfunc.load_model(sys.argv[1])
print(model.predict(pd.DataFrame(json.loads(sys.argv[2]))).to_json(orient="records"))
"""


@pytest.mark.parametrize(("framework", "other"), [("torch", "tensorflow,keras"), ("tensorflow", "torch")])
def test_served_model_needs_neither_pyspark_nor_airflow(framework, other, frames, transform, tracking):
    _, feature_transform = transform
    online = [
        {"Avg Session (min)": 4.25, "tenure": 12, "constant": 3.5, "monthly charges": 55.105, "plan <tier>": "plus",
         "region code": 20, "rating": 2.0, "autopay": "false"},
        {"Avg Session (min)": None, "tenure": None, "constant": 3.5, "monthly charges": None, "plan <tier>": None,
         "region code": None, "rating": None, "autopay": None},
        {"Avg Session (min)": 31.5, "tenure": 70, "constant": 1.0, "monthly charges": 99.99, "plan <tier>": "gold",
         "region code": 40, "rating": 7.25, "autopay": "yes"},
    ]
    info = log_model("binary_classification", feature_transform, frames[1].toPandas(), framework)
    local_model = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    expected = mlflow.pyfunc.load_model(str(local_model)).predict(pd.DataFrame(online))

    served = subprocess.run([sys.executable, "-c", REFUSING_SERVER, str(local_model), json.dumps(online), other],
                            capture_output=True, text=True, timeout=300)

    assert served.returncode == 0, served.stderr[-3000:]
    predictions = pd.DataFrame(json.loads(served.stdout.strip().splitlines()[-1]))
    assert predictions["prediction"].tolist() == expected["prediction"].tolist()
    np.testing.assert_allclose(predictions["probability"], expected["probability"], atol=1e-9)
    requirements = (local_model / "requirements.txt").read_text()
    assert "pyspark" not in requirements
    expected_pins = {"torch": ["torch=="], "tensorflow": ["tensorflow-cpu==", "keras=="]}[framework]
    assert all(pin in requirements for pin in expected_pins), requirements
    assert ("torch==" in requirements) == (framework == "torch")




BARE_SERVER = """
import importlib.machinery
import json
import sys

BLOCKED = ("pyspark", "airflow", "horovod")
code = sys.argv[1] + "/code/"


class BareServer:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"the served model imported {name}")
        if name.partition(".")[0] == "continuous_training":
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or not (spec.origin or "").startswith(code):
                raise ImportError(f"{name} is not in the model's code: {spec and spec.origin}")
        return None


sys.meta_path.insert(0, BareServer())
import mlflow.pyfunc
import pandas as pd

predictions = mlflow.pyfunc.load_model(sys.argv[1]).predict(pd.DataFrame(json.loads(sys.argv[2])))
blocked = {}
for package in BLOCKED:
    try:
        __import__(package)
    except ImportError:
        blocked[package] = True
    else:
        blocked[package] = False
ours = sorted(name for name in sys.modules if name.startswith("continuous_training"))
print(json.dumps({"predictions": json.loads(predictions.to_json(orient="records")), "blocked": blocked,
                  "modules": ours}))
"""


def test_a_model_logged_now_loads_where_pyspark_airflow_and_horovod_cannot_be_imported(frames, transform, tracking):
    _, feature_transform = transform
    raw = frames[1].orderBy("spend").toPandas()
    info = log_model("multiclass_classification", feature_transform, raw.head(3))
    local_model = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    online = raw[feature_transform.input_columns].astype(object).where(raw.notna(), None)
    online["monthly charges"] = online["monthly charges"].map(lambda value: None if value is None else float(value))
    expected = mlflow.pyfunc.load_model(str(local_model)).predict(online)

    served = subprocess.run([sys.executable, "-c", BARE_SERVER, str(local_model),
                             online.to_json(orient="records")], capture_output=True, text=True, timeout=300)

    assert served.returncode == 0, served.stderr[-3000:]
    result = json.loads(served.stdout.strip().splitlines()[-1])
    assert result["blocked"] == {"pyspark": True, "airflow": True, "horovod": True}
    assert "continuous_training.model.pyfunc" in result["modules"]
    assert not [name for name in result["modules"] if name.split(".")[1:2] not in ([], ["errors"], ["model"])]
    predictions = pd.DataFrame(result["predictions"])
    assert predictions["prediction"].tolist() == expected["prediction"].tolist()
    np.testing.assert_allclose(predictions["probability"], expected["probability"], atol=1e-9)
    assert sorted(path.name for path in (local_model / "code" / "continuous_training").iterdir()) == [
        "__init__.py", "errors.py", "model"]
    assert not (local_model / "python_model.pkl").exists()
