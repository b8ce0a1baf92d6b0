"""The served model: an MLflow pyfunc that takes the RAW input columns, so training and serving cannot skew.

Running the fitted Spark `PipelineModel` inside a pyfunc would need a SparkSession (and a JVM) in every serving
process and executor task: heavy and fragile. Instead `FeatureTransform.from_pipeline` extracts the fitted
parameters of the pipeline that `continuous_training.features.build_feature_pipeline` builds into a small
JSON document, and `FeatureTransform.transform` re-applies them with numpy/pandas exactly as Spark does:

* numeric features: values cast to the spec's Spark type, nulls and NaN replaced by the Imputer surrogate (cast
  back to the column type, as Spark's Imputer does), then `(x - mean) * (1 / std)` with Spark's rule that a
  zero-std feature maps to 0;
* categorical features: values cast to strings the way Spark's cast does (`1` for integers, `1.0` / `1.0E7` for
  doubles, `true` for booleans, plain decimals, `yyyy-MM-dd[ HH:mm:ss[.ffffff]]` in UTC, the project's session
  time zone), looked up in the StringIndexer labels; unknown values and nulls take the extra last index
  (handleInvalid="keep"), then one-hot (dropLast=False);
* blocks in the VectorAssembler order: scaled numeric, then one one-hot block per categorical; float32 output.

`TabularModel` (the pyfunc) therefore computes with numpy, pandas and torch only (no SparkSession, no JVM;
`pyspark` is in its requirements only because `continuous_training.training` imports it): the same artifact
scores batches inside Spark executors (`predict_spark`, via `mapInPandas`) and serves online (`mlflow models
serve`). Its input signature comes from the spec types, not from the example's pandas dtypes, so nullable
integer columns and batch/online dtype differences do not fail schema enforcement: numeric columns and
non-string categoricals with a numeric type are `double`, string categoricals `string`, other categoricals
`any`.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from mlflow.types import DataType
from mlflow.types.schema import AnyType, ColSpec, Schema

from continuous_training.errors import PipelineError

if TYPE_CHECKING:
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame
    from pyspark.sql.types import StructField

    from continuous_training.spec import DatasetSpec

TRANSFORM_FILE, WEIGHTS_FILE, CONFIG_FILE = "feature_transform.json", "state_dict.pt", "model_config.json"
PREDICTION, PROBABILITY, PROBABILITIES = "prediction", "probability", "probabilities"
_INTEGRAL = {"tinyint", "byte", "smallint", "short", "int", "integer", "bigint", "long"}
_FLOATING = {"float", "double"}
_SERVING_PACKAGES = ("mlflow", "torch", "numpy", "pandas", "pyspark")


def _decimal_scale(spark_type: str) -> int | None:
    if not spark_type.startswith("decimal("):
        return None
    return int(spark_type[len("decimal("):-1].split(",")[1])


def _is_numeric(spark_type: str) -> bool:
    return spark_type in _INTEGRAL or spark_type in _FLOATING or _decimal_scale(spark_type) is not None


def _as_spark_numeric(values: np.ndarray, spark_type: str) -> np.ndarray:
    """Doubles holding what Spark stores for a column of this type (NaN stays NaN)."""
    if spark_type in _INTEGRAL:
        return np.trunc(values)
    if spark_type == "float":
        return values.astype(np.float32).astype(np.float64)
    scale = _decimal_scale(spark_type)
    if scale is not None:
        factor = 10.0**scale
        return np.sign(values) * np.floor(np.abs(values) * factor + 0.5) / factor
    return values


def _numeric_values(series: pd.Series, spark_type: str) -> np.ndarray:
    try:
        values = pd.to_numeric(series).to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as error:
        raise PipelineError(f"model input: column {series.name!r} must be numeric ({spark_type}): {error}") from None
    return _as_spark_numeric(values, spark_type)


def _is_null(value: Any) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _java_number(text: str) -> str:
    """Java's Double/Float.toString layout for the shortest decimal digits in `text` (a finite number)."""
    number = Decimal(text)
    if number == 0:
        return "-0.0" if number.is_signed() else "0.0"
    sign = "-" if number < 0 else ""
    number = abs(number).normalize()
    if Decimal("1e-3") <= number < Decimal("1e7"):
        plain = f"{number:f}"
        return sign + (plain if "." in plain else f"{plain}.0")
    digits = "".join(map(str, number.as_tuple().digits))
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{number.adjusted()}"


def _spark_string(value: Any, spark_type: str) -> str | None:
    """`CAST(value AS STRING)` as Spark computes it for a value of the given column type; None for null."""
    if _is_null(value):
        return None
    if spark_type == "string":
        return value if isinstance(value, str) else str(value)
    if spark_type == "boolean":
        return "true" if bool(value) else "false"
    if spark_type in _INTEGRAL:
        return str(int(value))
    if spark_type in _FLOATING:
        number = float(value)
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "Infinity" if number > 0 else "-Infinity"
        return _java_number(str(np.float32(number)) if spark_type == "float" else repr(number))
    scale = _decimal_scale(spark_type)
    if scale is not None:
        return f"{Decimal(str(value)).quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP):f}"
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    if spark_type == "date":
        return stamp.strftime("%Y-%m-%d")
    text = stamp.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{stamp.microsecond:06d}".rstrip("0") if stamp.microsecond else text


@dataclass
class FeatureTransform:
    """The fitted feature pipeline's parameters, re-applied with numpy/pandas (see the module docstring)."""

    numeric: list[str]
    numeric_types: list[str]
    surrogates: list[float]
    means: list[float]
    stds: list[float]
    categorical: list[str]
    categorical_types: list[str]
    labels: list[list[str]]
    category_sizes: list[int]

    @property
    def input_columns(self) -> list[str]:
        """The raw feature columns the transform reads, numeric first (the spec's feature columns)."""
        return [*self.numeric, *self.categorical]

    @property
    def feature_dim(self) -> int:
        """Length of the feature vector (scaled numeric values, then one one-hot block per categorical)."""
        return len(self.numeric) + sum(self.category_sizes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable document (`from_dict` restores it exactly)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> FeatureTransform:
        """The transform a `to_dict` document describes."""
        return cls(**document)

    @classmethod
    def from_pipeline(cls, pipeline_model: PipelineModel, spec: DatasetSpec) -> FeatureTransform:
        """Extract the parameters of a PipelineModel fitted from `build_feature_pipeline(spec)`."""
        from pyspark.ml.feature import ImputerModel, OneHotEncoderModel, StandardScalerModel, StringIndexerModel

        stages = {type(stage): stage for stage in pipeline_model.stages}
        numeric, categorical = list(spec.features.numeric), list(spec.features.categorical)
        surrogates: list[float] = []
        means: list[float] = []
        stds: list[float] = []
        labels: list[list[str]] = []
        sizes: list[int] = []
        if numeric:
            imputer, scaler = stages.get(ImputerModel), stages.get(StandardScalerModel)
            if imputer is None or scaler is None or list(imputer.getInputCols()) != numeric:
                raise PipelineError(f"feature pipeline does not match spec {spec.name!r}: expected an Imputer "
                                    f"and a StandardScaler over the numeric features {numeric}")
            surrogate_row = imputer.surrogateDF.first()
            surrogates = [
                float(_as_spark_numeric(np.array([float(surrogate_row[column])]), spec.schema_[column])[0])
                for column in numeric
            ]
            means, stds = scaler.mean.toArray().tolist(), scaler.std.toArray().tolist()
        if categorical:
            indexer, encoder = stages.get(StringIndexerModel), stages.get(OneHotEncoderModel)
            if indexer is None or encoder is None or list(indexer.getInputCols()) != categorical:
                raise PipelineError(f"feature pipeline does not match spec {spec.name!r}: expected a StringIndexer "
                                    f"and a OneHotEncoder over the categorical features {categorical}")
            if indexer.getHandleInvalid() != "keep" or encoder.getDropLast():
                raise PipelineError("feature pipeline: expected StringIndexer(handleInvalid='keep') and "
                                    "OneHotEncoder(dropLast=False)")
            labels = [list(column_labels) for column_labels in indexer.labelsArray]
            sizes = [int(size) for size in encoder.categorySizes]
        return cls(
            numeric=numeric,
            numeric_types=[spec.schema_[column] for column in numeric],
            surrogates=surrogates,
            means=means,
            stds=stds,
            categorical=categorical,
            categorical_types=[spec.schema_[column] for column in categorical],
            labels=labels,
            category_sizes=sizes,
        )

    def check_columns(self, frame: pd.DataFrame) -> None:
        """Raise a PipelineError naming every required input column the frame lacks."""
        missing = [column for column in self.input_columns if column not in frame.columns]
        if missing:
            raise PipelineError(f"model input is missing required columns {missing}; "
                                f"the model needs {self.input_columns}")

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw rows → the float32 feature matrix Spark's pipeline produces for the same rows."""
        self.check_columns(frame)
        blocks = []
        if self.numeric:
            raw = np.column_stack([_numeric_values(frame[column], spark_type)
                                   for column, spark_type in zip(self.numeric, self.numeric_types, strict=True)])
            imputed = np.where(np.isnan(raw), np.asarray(self.surrogates), raw)
            scale = np.array([0.0 if std == 0 else 1.0 / std for std in self.stds])
            blocks.append((imputed - np.asarray(self.means)) * scale)
        for column, spark_type, column_labels, size in zip(
            self.categorical, self.categorical_types, self.labels, self.category_sizes, strict=True
        ):
            strings = [_spark_string(value, spark_type) for value in frame[column].tolist()]
            index = pd.Index(column_labels, dtype=object).get_indexer(pd.Index(strings, dtype=object))
            index[index < 0] = len(column_labels)
            onehot = np.zeros((len(frame), size))
            onehot[np.arange(len(frame)), index] = 1.0
            blocks.append(onehot)
        return np.hstack(blocks).astype(np.float32) if blocks else np.zeros((len(frame), 0), np.float32)

    def input_schema(self) -> Schema:
        """The pyfunc input signature: every raw feature column, required (types in the module docstring)."""
        specs = [ColSpec(DataType.double, column) for column in self.numeric]
        for column, spark_type in zip(self.categorical, self.categorical_types, strict=True):
            if spark_type == "string":
                specs.append(ColSpec(DataType.string, column))
            elif _is_numeric(spark_type):
                specs.append(ColSpec(DataType.double, column))
            else:
                specs.append(ColSpec(AnyType(), column))
        return Schema(specs)


def conform_input(frame: pd.DataFrame, schema: Schema | None) -> pd.DataFrame:
    """Cast the columns a schema declares `double` to float64 (e.g. Spark bigint/decimal batches)."""
    if schema is None:
        return frame
    doubles = [spec.name for spec in schema.inputs if spec.type == DataType.double and spec.name in frame.columns]
    if not doubles:
        return frame
    return frame.assign(**{column: pd.to_numeric(frame[column]).astype(np.float64) for column in doubles})


class TabularModel(mlflow.pyfunc.PythonModel):
    """Raw rows → FeatureTransform → MLP → predictions (columns depend on the task, see `predict`)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Read the transform, config and weights from the model's artifacts."""
        artifacts = context.artifacts
        transform = FeatureTransform.from_dict(json.loads(Path(artifacts["feature_transform"]).read_text()))
        config = json.loads(Path(artifacts["model_config"]).read_text())
        state_dict = torch.load(artifacts["state_dict"], map_location="cpu", weights_only=True)
        self.setup(transform, config, state_dict)

    def setup(self, transform: FeatureTransform, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> None:
        """Build the MLP from `config` and load its weights (CPU, eval mode)."""
        from continuous_training.training.model import build_mlp

        self.transform, self.config = transform, config
        self.network = build_mlp(config["feature_dim"], config["task"], config["num_classes"],
                                 hidden=tuple(config["hidden"]))
        self.network.load_state_dict(state_dict)
        self.network.eval()

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """regression: `prediction`; binary: `prediction` (class label), `probability` (P(classes[1]));
        multiclass: `prediction`, `probability` (of the predicted class), `probabilities` (ordered as classes)."""
        features = torch.from_numpy(self.transform.transform(model_input))
        with torch.no_grad():
            scores = self.network(features).double()
        task, classes = self.config["task"], self.config["classes"]
        if task == "regression":
            return pd.DataFrame({PREDICTION: scores[:, 0].numpy()})
        if task == "binary_classification":
            positive = torch.sigmoid(scores[:, 0]).numpy()
            labels = np.where(positive >= 0.5, classes[1], classes[0]).astype(object)
            return pd.DataFrame({PREDICTION: labels, PROBABILITY: positive})
        probabilities = torch.softmax(scores, dim=1).numpy()
        best = probabilities.argmax(axis=1)
        return pd.DataFrame({
            PREDICTION: np.asarray(classes, dtype=object)[best],
            PROBABILITY: probabilities[np.arange(len(best)), best],
            PROBABILITIES: list(probabilities.tolist()),
        })


def _pinned(package: str) -> str:
    return f"{package}=={version(package).split('+')[0]}"


def log_pyfunc_model(*, state_dict: dict[str, torch.Tensor], transform: FeatureTransform, task: str,
                     feature_dim: int, num_classes: int | None, hidden: Sequence[int], classes: list[str] | None,
                     input_example: pd.DataFrame, name: str = "model") -> ModelInfo:
    """Log the pyfunc (transform + weights + config + the package code) into the active MLflow run.

    The signature's inputs are `transform.input_schema()`, its outputs inferred from the predictions on
    `input_example` (its feature columns, conformed to the signature, are saved as the input example).
    Requirements pin mlflow/torch/numpy/pandas, and pyspark because the `continuous_training.training`
    package imports it.
    """
    if transform.feature_dim != feature_dim:
        raise PipelineError(f"feature_dim {feature_dim} does not match the transform's {transform.feature_dim}")
    if task != "regression" and (not classes or len(classes) < 2):
        raise PipelineError(f"{task} needs at least two classes, got {classes}")
    config = {"task": task, "feature_dim": feature_dim, "num_classes": num_classes, "hidden": list(hidden),
              "classes": classes}
    schema = transform.input_schema()
    transform.check_columns(input_example)
    example = conform_input(input_example[transform.input_columns].reset_index(drop=True), schema)
    model = TabularModel()
    model.setup(transform, config, state_dict)
    outputs = infer_signature(example, model.predict(None, example)).outputs
    signature = ModelSignature(inputs=schema, outputs=outputs)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / TRANSFORM_FILE).write_text(json.dumps(transform.to_dict(), indent=2))
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        torch.save({key: value.detach().cpu() for key, value in state_dict.items()}, folder / WEIGHTS_FILE)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=TabularModel(),
            artifacts={"feature_transform": str(folder / TRANSFORM_FILE), "model_config": str(folder / CONFIG_FILE),
                       "state_dict": str(folder / WEIGHTS_FILE)},
            code_paths=[str(Path(__file__).resolve().parent)],
            signature=signature,
            input_example=example,
            pip_requirements=[_pinned(package) for package in _SERVING_PACKAGES],
        )


def prediction_fields(task: str) -> list[StructField]:
    """The Spark fields of the prediction columns a task's model returns."""
    from pyspark.sql.types import ArrayType, DoubleType, StringType, StructField

    if task == "regression":
        return [StructField(PREDICTION, DoubleType())]
    if task == "binary_classification":
        return [StructField(PREDICTION, StringType()), StructField(PROBABILITY, DoubleType())]
    if task == "multiclass_classification":
        return [StructField(PREDICTION, StringType()), StructField(PROBABILITY, DoubleType()),
                StructField(PROBABILITIES, ArrayType(DoubleType()))]
    raise PipelineError(f"unknown task {task!r}")


def _pin_alias(model_uri: str) -> str:
    """`models:/name@alias` → `models:/name/<version>`, so every executor scores with the same version."""
    if not model_uri.startswith("models:/") or "@" not in model_uri:
        return model_uri
    name, alias = model_uri[len("models:/"):].split("@", 1)
    return f"models:/{name}/{mlflow.MlflowClient().get_model_version_by_alias(name, alias).version}"


def _score_batches(batches: Iterator[pd.DataFrame], *, model_uri: str, tracking_uri: str,
                   registry_uri: str) -> Iterator[pd.DataFrame]:
    from pyspark import TaskContext

    model, schema = None, None
    for batch in batches:
        if model is None:
            torch.set_num_threads(TaskContext.get().cpus())
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_registry_uri(registry_uri)
            model = mlflow.pyfunc.load_model(model_uri)
            schema = model.metadata.get_input_schema()
        features = batch if schema is None else batch[[c for c in schema.input_names() if c in batch.columns]]
        scored = model.predict(conform_input(features, schema))
        yield pd.concat([batch.reset_index(drop=True), scored.reset_index(drop=True)], axis=1)


def predict_spark(df: DataFrame, model_uri: str, task: str) -> DataFrame:
    """Score a Spark DataFrame in the executors (`mapInPandas`, the pyfunc loaded once per partition, torch
    limited to the task's cores).

    An alias URI is resolved to its version on the driver first. Returns the input columns plus the task's
    prediction columns (`prediction_fields`).
    """
    from pyspark.sql.types import StructType

    fields = prediction_fields(task)
    clashes = [field.name for field in fields if field.name in df.columns]
    if clashes:
        raise PipelineError(f"predict_spark: the input already has columns named {clashes}; rename them first")
    schema = StructType([*df.schema.fields, *fields])
    score = partial(_score_batches, model_uri=_pin_alias(model_uri), tracking_uri=mlflow.get_tracking_uri(),
                    registry_uri=mlflow.get_registry_uri())
    return df.mapInPandas(score, schema)


def model_classes(model_uri: str) -> list[str] | None:
    """The class labels a logged model predicts, in probability order (None for regression)."""
    model = mlflow.pyfunc.load_model(_pin_alias(model_uri))
    return model.unwrap_python_model().config["classes"]
