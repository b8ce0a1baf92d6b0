"""The pyfunc on raw columns: parity with the fitted Spark pipeline, MLflow round trip, scoring in Spark executors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from continuous_training.data.features import fit_feature_pipeline, pipeline_input, to_feature_rows
from continuous_training.errors import PipelineError
from continuous_training.serving.model import FeatureTransform, log_pyfunc_model, predict_spark
from continuous_training.spec import parse_spec
from continuous_training.training.keras_model import build_keras_mlp, keras_weights
from continuous_training.training.model import build_mlp, numpy_weights
from mlflow.exceptions import MlflowException
from pyspark.ml import PipelineModel
from pyspark.ml.feature import SQLTransformer
from pyspark.ml.functions import vector_to_array
from pyspark.sql import functions as F

pytestmark = pytest.mark.integration

SCHEMA = {"customer id": "string", "Avg Session (min)": "double", "tenure": "int", "constant": "double",
          "monthly charges": "decimal(8,2)", "plan <tier>": "string", "region code": "int", "rating": "double",
          "spend": "double", "churned": "string", "segment": "string", "autopay": "boolean"}
FEATURES = {"numeric": ["Avg Session (min)", "tenure", "constant", "monthly charges"],
            "categorical": ["plan <tier>", "region code", "rating", "autopay"]}
LABELS = {"regression": "spend", "binary_classification": "churned", "multiclass_classification": "segment"}
CLASSES = {"regression": None, "binary_classification": ["no", "yes"],
           "multiclass_classification": ["gold", "silver", "bronze"]}
RAW_TEXT = pd.DataFrame({
    "customer id": ["t0", "t1", "t2", "t3", "t4"],
    "Avg Session (min)": ["4.25", " 7 ", "0.5", "1e1", "31.5"],
    "tenure": ["12", " 70 ", "+5", "0", "-3"],
    "constant": ["3.5", "3.5", "1", "3.5", "3.5"],
    "monthly charges": ["1.005", "-2.675", "99.995", "1.0049999999999999999", " 55.104999 "],
    "plan <tier>": ["plus", "basic", "pro", "enterprise", "plus"],
    "region code": ["20", " 30 ", "+10", "40", "-20"],
    "rating": ["2", "1.5", "12345678", "7.25", "2.0"],
    "autopay": ["false", " TRUE ", "no", "1", "f"],
})
"""Raw text as a CSV would hold it: edge cases of Spark's casts to the spec types (HALF_UP decimals, boolean words)."""
PREDICTION_COLUMNS = {"regression": ["prediction"], "binary_classification": ["prediction", "probability"],
                      "multiclass_classification": ["prediction", "probability", "probabilities"]}


def make_spec(task: str):
    return parse_spec({"name": "serving_test", "source": {"path": "unused.csv", "format": "csv"}, "schema": SCHEMA,
                       "label": LABELS[task], "task": task, "id_column": "customer id", "features": FEATURES})


def train_rows(count: int = 60) -> list[tuple]:
    rng = np.random.default_rng(7)
    rows = []
    for i in range(count):
        rows.append((
            f"c{i}",
            None if i % 9 == 0 else float(np.round(rng.gamma(2, 4), 3)),
            None if i % 11 == 0 else int(rng.integers(0, 72)),
            3.5,
            Decimal(f"{rng.uniform(20, 120):.2f}"),
            None if i % 13 == 0 else str(rng.choice(["basic", "plus", "pro"], p=[0.5, 0.3, 0.2])),
            int(rng.choice([10, 20, 30])),
            float(rng.choice([1.5, 2.0, 12345678.0])),
            float(rng.normal(50, 10)),
            str(rng.choice(["no", "yes"])),
            str(rng.choice(["gold", "silver", "bronze"])),
            None if i % 17 == 0 else i % 3 == 0,
        ))
    return rows


def scoring_rows() -> list[tuple]:
    """Rows with nulls, NaN, categories unseen in training and a null categorical."""
    return [
        ("s0", 4.25, 12, 3.5, Decimal("55.10"), "plus", 20, 2.0, 1.0, "no", "gold", True),
        ("s1", None, None, 3.5, None, None, None, None, 2.0, "yes", "silver", None),
        ("s2", float("nan"), 70, 1.0, Decimal("99.99"), "enterprise", 40, 7.25, 3.0, "no", "bronze", False),
        ("s3", 0.0, 0, 3.5, Decimal("20.00"), "basic", 10, 12345678.0, 4.0, "yes", "gold", True),
        ("s4", 31.5, 5, None, Decimal("70.00"), "pro", 30, 1.5, 5.0, "no", "silver", False),
    ]


@pytest.fixture(scope="module")
def frames(spark):
    ddl = make_spec("regression").ddl_schema
    return spark.createDataFrame(train_rows(), ddl), spark.createDataFrame(scoring_rows(), ddl)


@pytest.fixture(scope="module")
def transform(frames):
    spec = make_spec("regression")
    pipeline = fit_feature_pipeline(frames[0], spec)
    return pipeline, FeatureTransform.from_pipeline(pipeline, spec)


@pytest.fixture
def tracking(tmp_path):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(
        "serving", artifact_location=(tmp_path / "artifacts").as_uri()))
    yield
    mlflow.set_tracking_uri(previous)


def log_model(task: str, transform: FeatureTransform, example: pd.DataFrame, framework: str = "torch"):
    classes = CLASSES[task]
    num_classes = len(classes) if task == "multiclass_classification" else None
    if framework == "tensorflow":
        weights = keras_weights(build_keras_mlp(transform.feature_dim, task, num_classes, hidden=(8,), seed=3))
    else:
        weights = numpy_weights(build_mlp(transform.feature_dim, task, num_classes, hidden=(8,), seed=3))
    with mlflow.start_run():
        return log_pyfunc_model(weights=weights, transform=transform, task=task, framework=framework,
                                feature_dim=transform.feature_dim, num_classes=num_classes, hidden=(8,),
                                classes=classes, input_example=example)


def test_transform_matches_spark_pipeline(frames, transform):
    pipeline, feature_transform = transform
    spec = make_spec("regression")
    scoring = frames[1]
    expected = np.array(
        [row.features for row in to_feature_rows(scoring, pipeline, None, spec).orderBy("label").collect()],
        dtype=np.float32,
    )
    raw = scoring.orderBy("spend").toPandas()

    actual = feature_transform.transform(raw)

    assert actual.dtype == np.float32
    assert actual.shape == expected.shape == (5, feature_transform.feature_dim)
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    assert feature_transform.stds[2] == 0 and np.all(actual[:, 2] == 0)
    plan_unknown = len(feature_transform.numeric) + len(feature_transform.labels[0])
    assert actual[1, plan_unknown] == 1 and actual[2, plan_unknown] == 1
    restored = FeatureTransform.from_dict(json.loads(json.dumps(feature_transform.to_dict())))
    np.testing.assert_array_equal(restored.transform(raw), actual)


def test_transform_casts_raw_text_as_spark_does(spark, transform):
    pipeline, feature_transform = transform
    typed = spark.createDataFrame(RAW_TEXT).select(
        *[F.col(f"`{column}`").cast(SCHEMA[column]).alias(column) for column in RAW_TEXT.columns])
    expected = np.array([row.features for row in pipeline.transform(pipeline_input(typed, make_spec("regression")))
                         .orderBy("`customer id`").select(vector_to_array("features").alias("features")).collect()])
    charges = typed.orderBy("`customer id`").select("`monthly charges`").toPandas()["monthly charges"]

    assert charges.tolist() == [Decimal("1.01"), Decimal("-2.68"), Decimal("100.00"), Decimal("1.00"),
                                Decimal("55.10")]
    np.testing.assert_allclose(feature_transform.transform(RAW_TEXT), expected, atol=1e-5)
    as_decimals = RAW_TEXT.assign(**{"monthly charges": RAW_TEXT["monthly charges"].map(Decimal)})
    np.testing.assert_allclose(feature_transform.transform(as_decimals), expected, atol=1e-5)
    as_floats = RAW_TEXT.head(3).assign(**{"monthly charges": [1.005, -2.675, 99.995], "autopay": [False, True, 0]})
    np.testing.assert_allclose(feature_transform.transform(as_floats), expected[:3], atol=1e-5)


@pytest.mark.parametrize(("column", "value"), [
    ("autopay", "maybe"), ("region code", "3.5"), ("region code", "x"), ("monthly charges", "1,5"),
    ("monthly charges", "1234567.00"),
])
def test_transform_refuses_values_spark_cannot_cast(transform, column, value):
    _, feature_transform = transform
    frame = RAW_TEXT.head(1).assign(**{column: [value]})

    with pytest.raises(PipelineError, match=rf"column '{column}'.*{value!r}"):
        feature_transform.transform(frame)


def test_from_pipeline_requires_the_stages_it_mirrors(transform):
    pipeline, _ = transform
    spec = make_spec("regression")
    stages = pipeline.stages
    extra = PipelineModel([*stages[:-1], SQLTransformer(statement="SELECT * FROM __THIS__"), stages[-1]])

    with pytest.raises(PipelineError, match="unexpected stage 5 SQLTransformer where VectorAssembler belongs"):
        FeatureTransform.from_pipeline(extra, spec)
    with pytest.raises(PipelineError, match="unexpected stage 6 VectorAssembler after the final VectorAssembler"):
        FeatureTransform.from_pipeline(PipelineModel([*stages, stages[-1]]), spec)
    with pytest.raises(PipelineError, match="stage 5 VectorAssembler is missing"):
        FeatureTransform.from_pipeline(PipelineModel(stages[:-1]), spec)


def test_transform_accepts_online_style_input(frames, transform):
    _, feature_transform = transform
    spark_rows = feature_transform.transform(frames[1].orderBy("spend").toPandas())
    online = pd.DataFrame([
        {"Avg Session (min)": 4.25, "tenure": 12, "constant": 3.5, "monthly charges": 55.1, "plan <tier>": "plus",
         "region code": 20, "rating": 2, "autopay": True, "extra": "ignored"},
        {"Avg Session (min)": None, "tenure": None, "constant": 3.5, "monthly charges": None, "plan <tier>": None,
         "region code": None, "rating": None, "autopay": None, "extra": "ignored"},
    ])

    np.testing.assert_allclose(feature_transform.transform(online), spark_rows[:2], atol=1e-6)
    with pytest.raises(PipelineError, match=r"missing required columns \['tenure', 'region code'\]"):
        feature_transform.transform(online.drop(columns=["tenure", "region code"]))


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


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_predict_spark_matches_pyfunc(framework, frames, transform, tracking):
    _, feature_transform = transform
    task = "multiclass_classification"
    scoring = frames[0].limit(20).unionByName(frames[1]).repartition(2)
    info = log_model(task, feature_transform, frames[1].toPandas(), framework)
    version = mlflow.register_model(info.model_uri, "serving_test").version
    mlflow.MlflowClient().set_registered_model_alias("serving_test", "champion", version)

    scored = predict_spark(scoring, "models:/serving_test@champion", task)
    result = scored.toPandas().sort_values("customer id", ignore_index=True)
    expected = mlflow.pyfunc.load_model(info.model_uri).predict(scoring.orderBy("customer id").toPandas())

    assert scored.columns == [*scoring.columns, *PREDICTION_COLUMNS[task]]
    assert len(result) == 25 and result["prediction"].notna().all()
    assert result["prediction"].tolist() == expected["prediction"].tolist()
    np.testing.assert_allclose(result["probability"], expected["probability"], atol=1e-9)
    assert dict(scored.dtypes)["probabilities"] == "array<double>"
    np.testing.assert_allclose(np.stack(result["probabilities"]), np.stack(expected["probabilities"]), atol=1e-9)
