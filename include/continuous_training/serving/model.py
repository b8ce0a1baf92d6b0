"""The served model: an MLflow pyfunc that takes the RAW input columns, so training and serving cannot skew.

Running the fitted Spark `PipelineModel` inside a pyfunc would need a SparkSession (and a JVM) in every serving
process and executor task: heavy and fragile. Instead `FeatureTransform.from_pipeline` extracts the fitted
parameters of the pipeline that `continuous_training.data.features.fit_feature_pipeline` fits into a small
JSON document, and `FeatureTransform.transform` re-applies them with numpy/pandas exactly as Spark does:

* numeric features: values cast to the spec's Spark type (decimals rounded HALF_UP from their decimal text, as
  Spark's cast does), nulls and NaN replaced by the Imputer surrogate (cast back to the column type, as Spark's
  Imputer does), then `(x - mean) * (1 / std)` with Spark's rule that a zero-std feature maps to 0;
* categorical features: values cast to the column type and then to strings the way Spark's ANSI casts do (`1`
  for integers, `1.0` / `1.0E7` for doubles, `true`/`false` for booleans, also from strings such as "no" or "0",
  plain decimals, `yyyy-MM-dd[ HH:mm:ss[.ffffff]]` in UTC, the project's session time zone; a value Spark could
  not cast is an error), looked up in the StringIndexer labels; other values and nulls take the extra last index
  (handleInvalid="keep"), then one-hot (dropLast=False);
* blocks in the VectorAssembler order: scaled numeric, then one one-hot block per categorical; float32 output.

`TabularModel` (the pyfunc) therefore computes with numpy, pandas and the framework that trained the MLP (torch,
or TensorFlow/Keras; its weights are stored as numpy arrays by name) only (no SparkSession, no JVM, and neither
pyspark nor Airflow imported when it loads): the same artifact scores batches inside Spark executors
(`predict_spark`, a pandas iterator UDF) and serves online (`mlflow models serve`). Its input signature comes from
the spec types, not from the example's pandas dtypes, so nullable integer columns and batch/online dtype
differences do not fail schema enforcement: numeric columns and non-string categoricals with a numeric type are
`double`, string categoricals `string`, other categoricals `any`.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from functools import cache
from importlib.metadata import version
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
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

TRANSFORM_FILE, WEIGHTS_FILE, CONFIG_FILE = "feature_transform.json", "weights.npz", "model_config.json"
PREDICTION, PROBABILITY, PROBABILITIES = "prediction", "probability", "probabilities"
_INTEGRAL = {"tinyint", "byte", "smallint", "short", "int", "integer", "bigint", "long"}
_FLOATING = {"float", "double"}
_TRUE_STRINGS, _FALSE_STRINGS = {"t", "true", "y", "yes", "1"}, {"f", "false", "n", "no", "0"}
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_SERVING_PACKAGES = {"torch": ("mlflow", "torch", "numpy", "pandas"),
                     "tensorflow": ("mlflow", "tensorflow-cpu", "keras", "numpy", "pandas")}


def _decimal_type(spark_type: str) -> tuple[int, int] | None:
    """(precision, scale) of a `decimal(p,s)` type; None for other types."""
    if not spark_type.startswith("decimal("):
        return None
    precision, scale = spark_type[len("decimal("):-1].split(",")
    return int(precision), int(scale)


def _is_numeric(spark_type: str) -> bool:
    return spark_type in _INTEGRAL or spark_type in _FLOATING or _decimal_type(spark_type) is not None


def _is_null(value: Any) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))


def _spark_decimal(value: Any, precision: int, scale: int) -> Decimal:
    """`CAST(value AS DECIMAL(p,s))`: HALF_UP on the value's decimal text (a float's shortest repr, as Spark's
    Double.toString); a value with more than p - s integer digits is an error, as under Spark's ANSI mode."""
    try:
        number = Decimal(str(value).strip()).quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP,
                                                      context=Context(prec=precision))
        if number.is_finite():
            return number
    except ArithmeticError:
        pass
    raise ValueError(f"{value!r} is not a decimal({precision},{scale})")


def _spark_boolean(value: Any) -> bool:
    """`CAST(value AS BOOLEAN)`: trimmed, case-insensitive t/true/y/yes/1 and f/false/n/no/0; numbers: non-zero."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE_STRINGS or text in _FALSE_STRINGS:
            return text in _TRUE_STRINGS
        raise ValueError(f"{value!r} is not a boolean (true/false, t/f, yes/no, y/n, 1/0)")
    if isinstance(value, int | float | Decimal | np.number):
        return value != 0
    raise ValueError(f"{value!r} is not a boolean")


def _spark_integer(value: Any, spark_type: str) -> int:
    """`CAST(value AS <integral type>)`: integer text only (as under Spark's ANSI mode); numbers truncated."""
    if isinstance(value, str):
        if not _INTEGER_TEXT.fullmatch(value.strip()):
            raise ValueError(f"{value!r} is not an integer ({spark_type})")
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError, ArithmeticError):
        raise ValueError(f"{value!r} is not an integer ({spark_type})") from None


def _as_spark_numeric(values: np.ndarray, spark_type: str) -> np.ndarray:
    """Doubles holding what Spark stores for a column of this type (NaN stays NaN)."""
    if spark_type in _INTEGRAL:
        return np.trunc(values)
    if spark_type == "float":
        return values.astype(np.float32).astype(np.float64)
    decimal = _decimal_type(spark_type)
    if decimal is not None:
        return np.array([value if math.isnan(value) else float(_spark_decimal(value, *decimal))
                         for value in values.tolist()], dtype=np.float64)
    return values


def _numeric_values(series: pd.Series, spark_type: str) -> np.ndarray:
    """A raw numeric column as Spark stores it, as doubles (NaN for nulls); decimals from each value's own text."""
    decimal = _decimal_type(spark_type)
    try:
        if decimal is not None:
            return np.array([math.nan if _is_null(value) else float(_spark_decimal(value, *decimal))
                             for value in series.tolist()], dtype=np.float64)
        values = pd.to_numeric(series).to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as error:
        raise PipelineError(f"model input: column {series.name!r} must be numeric ({spark_type}): {error}") from None
    return _as_spark_numeric(values, spark_type)


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
    """`CAST(value AS STRING)` as Spark computes it for a value of the given column type; None for null.

    Raises ValueError for a value Spark could not cast to that type."""
    if _is_null(value):
        return None
    if spark_type == "string":
        return value if isinstance(value, str) else str(value)
    if spark_type == "boolean":
        return "true" if _spark_boolean(value) else "false"
    if spark_type in _INTEGRAL:
        return str(_spark_integer(value, spark_type))
    if spark_type in _FLOATING:
        number = float(value)
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "Infinity" if number > 0 else "-Infinity"
        return _java_number(str(np.float32(number)) if spark_type == "float" else repr(number))
    decimal = _decimal_type(spark_type)
    if decimal is not None:
        return f"{_spark_decimal(value, *decimal):f}"
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    if spark_type == "date":
        return stamp.strftime("%Y-%m-%d")
    text = stamp.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{stamp.microsecond:06d}".rstrip("0") if stamp.microsecond else text


def _require(condition: bool, spec: DatasetSpec, problem: str) -> None:
    if not condition:
        raise PipelineError(f"feature pipeline does not match spec {spec.name!r}: {problem}")


def _checked_stages(pipeline_model: PipelineModel, spec: DatasetSpec) -> list:
    """The pipeline's stages, checked to be exactly the sequence `fit_feature_pipeline` builds for the spec."""
    from pyspark.ml.feature import (
        ImputerModel,
        OneHotEncoderModel,
        StandardScalerModel,
        StringIndexerModel,
        VectorAssembler,
    )

    expected = [
        *([ImputerModel, VectorAssembler, StandardScalerModel] if spec.features.numeric else []),
        *([StringIndexerModel, OneHotEncoderModel] if spec.features.categorical else []),
        VectorAssembler,
    ]
    stages = list(pipeline_model.stages)
    for position, (stage, stage_type) in enumerate(zip_longest(stages, expected)):
        if stage_type is None:
            problem = f"unexpected stage {position} {type(stage).__name__} after the final VectorAssembler"
        elif stage is None:
            problem = f"stage {position} {stage_type.__name__} is missing"
        elif type(stage) is not stage_type:
            problem = f"unexpected stage {position} {type(stage).__name__} where {stage_type.__name__} belongs"
        else:
            continue
        sequence = " → ".join(expected_type.__name__ for expected_type in expected)
        raise PipelineError(f"feature pipeline does not match spec {spec.name!r}: {problem} (expected {sequence})")
    return stages


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
        """Extract the parameters of the PipelineModel `continuous_training.data.features.fit_feature_pipeline(spec)`
        fits; any other pipeline (stages, their order or their columns) is a PipelineError naming the stage."""
        numeric, categorical = list(spec.features.numeric), list(spec.features.categorical)
        stages = _checked_stages(pipeline_model, spec)
        surrogates: list[float] = []
        means: list[float] = []
        stds: list[float] = []
        labels: list[list[str]] = []
        sizes: list[int] = []
        assembled: list[str] = []
        if numeric:
            imputer, assembler, scaler = stages[:3]
            _require(list(imputer.getInputCols()) == numeric, spec, f"the Imputer reads {imputer.getInputCols()}, "
                     f"not the numeric features {numeric}")
            chained = (assembler.getInputCols() == imputer.getOutputCols()
                       and scaler.getInputCol() == assembler.getOutputCol())
            _require(chained, spec, "the numeric VectorAssembler and StandardScaler do not chain the Imputer's output")
            _require(scaler.getWithMean() and scaler.getWithStd(), spec,
                     "the StandardScaler must have withMean=True and withStd=True")
            surrogate_row = imputer.surrogateDF.first()
            surrogates = [
                float(_as_spark_numeric(np.array([float(surrogate_row[column])]), spec.schema_[column])[0])
                for column in numeric
            ]
            means, stds = scaler.mean.toArray().tolist(), scaler.std.toArray().tolist()
            assembled.append(scaler.getOutputCol())
        if categorical:
            indexer, encoder = stages[-3:-1]
            _require(list(indexer.getInputCols()) == categorical, spec, f"the StringIndexer reads "
                     f"{indexer.getInputCols()}, not the categorical features {categorical}")
            _require(encoder.getInputCols() == indexer.getOutputCols(), spec,
                     "the OneHotEncoder does not read the StringIndexer's output")
            _require(indexer.getHandleInvalid() == "keep" and not encoder.getDropLast(), spec,
                     "expected StringIndexer(handleInvalid='keep') and OneHotEncoder(dropLast=False)")
            labels = [list(column_labels) for column_labels in indexer.labelsArray]
            sizes = [int(size) for size in encoder.categorySizes]
            _require(sizes == [len(column_labels) + 1 for column_labels in labels], spec,
                     f"the OneHotEncoder's category sizes {sizes} are not the StringIndexer's label counts + 1")
            assembled += encoder.getOutputCols()
        _require(stages[-1].getInputCols() == assembled, spec,
                 f"the final VectorAssembler reads {stages[-1].getInputCols()}, expected {assembled}")
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
            try:
                strings = [_spark_string(value, spark_type) for value in frame[column].tolist()]
            except (TypeError, ValueError) as error:
                raise PipelineError(f"model input: column {column!r} ({spark_type}): {error}") from None
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


def _sigmoid(scores: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -scores))


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class TabularModel(mlflow.pyfunc.PythonModel):
    """Raw rows → FeatureTransform → MLP (torch or Keras, `config["framework"]`) → predictions (columns depend on
    the task, see `predict`)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Read the transform, config and weights from the model's artifacts."""
        artifacts = context.artifacts
        transform = FeatureTransform.from_dict(json.loads(Path(artifacts["feature_transform"]).read_text()))
        config = json.loads(Path(artifacts["model_config"]).read_text())
        if "weights" in artifacts:
            with np.load(artifacts["weights"], allow_pickle=False) as stored:
                weights = {name: stored[name] for name in stored.files}
        else:  # models logged before weights.npz: a torch state_dict file
            import torch

            weights = {name: tensor.numpy() for name, tensor in torch.load(
                artifacts["state_dict"], map_location="cpu", weights_only=True).items()}
        self.setup(transform, config, weights)

    def setup(self, transform: FeatureTransform, config: dict[str, Any], weights: dict[str, np.ndarray]) -> None:
        """Build the MLP of `config` in its framework and load its weights (CPU, inference mode)."""
        self.transform, self.config = transform, config
        self.framework = config.get("framework", "torch")
        shape = (config["feature_dim"], config["task"], config["num_classes"], tuple(config["hidden"]))
        if self.framework == "tensorflow":
            from continuous_training.training.keras_model import build_keras_mlp

            self.network = build_keras_mlp(*shape)
            self.network.set_weights([weights[weight.path] for weight in self.network.weights])
        else:
            import torch

            from continuous_training.training.model import build_mlp

            self.network = build_mlp(*shape)
            self.network.load_state_dict({name: torch.from_numpy(np.asarray(value)) for name, value in weights.items()})
            self.network.eval()

    def limit_threads(self, threads: int) -> None:
        """Cap torch's intra-op threads (TensorFlow reads `TF_NUM_INTRAOP_THREADS` when it starts instead)."""
        if self.framework == "torch":
            import torch

            torch.set_num_threads(threads)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Raw MLP outputs (logits for classifiers) as float64."""
        if self.framework == "tensorflow":
            return np.asarray(self.network(features, training=False), dtype=np.float64)
        import torch

        with torch.no_grad():
            return self.network(torch.from_numpy(features)).double().numpy()

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """regression: `prediction`; binary: `prediction` (class label), `probability` (P(classes[1]));
        multiclass: `prediction`, `probability` (of the predicted class), `probabilities` (ordered as classes)."""
        scores = self.scores(self.transform.transform(model_input))
        task, classes = self.config["task"], self.config["classes"]
        if task == "regression":
            return pd.DataFrame({PREDICTION: scores[:, 0]})
        if task == "binary_classification":
            positive = _sigmoid(scores[:, 0])
            labels = np.where(positive >= 0.5, classes[1], classes[0]).astype(object)
            return pd.DataFrame({PREDICTION: labels, PROBABILITY: positive})
        probabilities = _softmax(scores)
        best = probabilities.argmax(axis=1)
        return pd.DataFrame({
            PREDICTION: np.asarray(classes, dtype=object)[best],
            PROBABILITY: probabilities[np.arange(len(best)), best],
            PROBABILITIES: list(probabilities.tolist()),
        })


def _pinned(package: str) -> str:
    return f"{package}=={version(package).split('+')[0]}"


def log_pyfunc_model(*, weights: dict[str, np.ndarray], transform: FeatureTransform, task: str,
                     feature_dim: int, num_classes: int | None, hidden: Sequence[int], classes: list[str] | None,
                     input_example: pd.DataFrame, framework: str = "torch", name: str = "model") -> ModelInfo:
    """Log the pyfunc (transform + weights + config + the package code) into the active MLflow run.

    `weights` are the MLP's as numpy arrays: a torch `state_dict`'s names, or Keras weight paths (`framework`
    "tensorflow"). The signature's inputs are `transform.input_schema()`, its outputs inferred from the
    predictions on `input_example` (its feature columns, conformed to the signature, are saved as the input
    example). Requirements pin mlflow, numpy, pandas and the framework: loading and predicting imports neither
    pyspark nor Airflow.
    """
    if framework not in _SERVING_PACKAGES:
        raise PipelineError(f"unknown framework {framework!r}; expected one of {', '.join(_SERVING_PACKAGES)}")
    if transform.feature_dim != feature_dim:
        raise PipelineError(f"feature_dim {feature_dim} does not match the transform's {transform.feature_dim}")
    if task != "regression" and (not classes or len(classes) < 2):
        raise PipelineError(f"{task} needs at least two classes, got {classes}")
    config = {"task": task, "feature_dim": feature_dim, "num_classes": num_classes, "hidden": list(hidden),
              "classes": classes, "framework": framework}
    schema = transform.input_schema()
    transform.check_columns(input_example)
    example = conform_input(input_example[transform.input_columns].reset_index(drop=True), schema)
    model = TabularModel()
    model.setup(transform, config, weights)
    outputs = infer_signature(example, model.predict(None, example)).outputs
    signature = ModelSignature(inputs=schema, outputs=outputs)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / TRANSFORM_FILE).write_text(json.dumps(transform.to_dict(), indent=2))
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        np.savez(folder / WEIGHTS_FILE, **{name: np.asarray(value) for name, value in weights.items()})
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=TabularModel(),
            artifacts={"feature_transform": str(folder / TRANSFORM_FILE), "model_config": str(folder / CONFIG_FILE),
                       "weights": str(folder / WEIGHTS_FILE)},
            code_paths=[str(Path(__file__).resolve().parents[1])],  # the whole continuous_training package
            signature=signature,
            input_example=example,
            pip_requirements=[_pinned(package) for package in _SERVING_PACKAGES[framework]],
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


@cache
def _worker_model(model_uri: str, tracking_uri: str, registry_uri: str) -> mlflow.pyfunc.PyFuncModel:
    """The pyfunc, loaded once per Python worker (Spark reuses workers across tasks) for a pinned version URI."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    return mlflow.pyfunc.load_model(model_uri)


def _predict_batches(batches: Iterator[pd.DataFrame], *, model_uri: str, tracking_uri: str,
                     registry_uri: str) -> Iterator[pd.DataFrame]:
    from pyspark import TaskContext

    cpus = TaskContext.get().cpus()
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(cpus))
    model = _worker_model(model_uri, tracking_uri, registry_uri)
    model.unwrap_python_model().limit_threads(cpus)
    schema = model.metadata.get_input_schema()
    for batch in batches:
        yield model.predict(conform_input(batch, schema)).reset_index(drop=True)


def predict_spark(df: DataFrame, model_uri: str, task: str) -> DataFrame:
    """Score a Spark DataFrame in the executors: a pandas iterator UDF fed Arrow batches of the model's input
    columns only (the other columns never leave the JVM), the pyfunc loaded once per Python worker, its framework
    limited to the task's cores.

    An alias URI is resolved to its version on the driver first. Returns the input columns plus the task's
    prediction columns (`prediction_fields`).
    """
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import StructType

    fields = prediction_fields(task)
    clashes = [field.name for field in fields if field.name in df.columns]
    if clashes:
        raise PipelineError(f"predict_spark: the input already has columns named {clashes}; rename them first")
    pinned = _pin_alias(model_uri)
    signature = mlflow.models.get_model_info(pinned).signature
    inputs = [c for c in signature.inputs.input_names() if c in df.columns] if signature else df.columns
    tracking_uri, registry_uri = mlflow.get_tracking_uri(), mlflow.get_registry_uri()

    def predict(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        yield from _predict_batches(batches, model_uri=pinned, tracking_uri=tracking_uri, registry_uri=registry_uri)

    def column(name: str):
        return F.col(f"`{name.replace('`', '``')}`")

    scored = pandas_udf(predict, StructType(fields))(F.struct(*[column(c) for c in inputs]))
    return df.withColumn("_scored", scored).select(*[column(c) for c in df.columns], "_scored.*")


def model_classes(model_uri: str) -> list[str] | None:
    """The class labels a logged model predicts, in probability order (None for regression): read from its config
    artifact, without loading the model and its framework."""
    info = mlflow.models.get_model_info(model_uri)
    config = info.flavors["python_function"]["artifacts"]["model_config"]["path"]
    return json.loads(mlflow.artifacts.load_text(f"{info.artifact_path}/{config}"))["classes"]
