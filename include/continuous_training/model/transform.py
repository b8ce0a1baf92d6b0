"""The fitted feature pipeline re-applied with numpy/pandas: raw rows to the float32 matrix Spark's pipeline
produces for the same rows.

`continuous_training.data.features.feature_transform` extracts the parameters of the fitted pipeline into a small
JSON document; `transform` re-applies them exactly as Spark does:

* numeric features: values cast to the spec's Spark type (`casts`), nulls and NaN replaced by the Imputer
  surrogate (cast back to the column type, as Spark's Imputer does), then `(x - mean) * (1 / std)` with Spark's
  rule that a zero-std feature maps to 0;
* categorical features: values cast to the column type and then to strings the way Spark's ANSI casts do, looked
  up in the StringIndexer labels; other values and nulls take the extra last index (handleInvalid="keep"), then
  one-hot (dropLast=False);
* blocks in the VectorAssembler order: scaled numeric, then one one-hot block per categorical; float32 output.

The input signature comes from the spec types, not from pandas dtypes, so nullable integer columns and
batch/online dtype differences do not fail schema enforcement: numeric columns and non-string categoricals with a
numeric type are `double`, string categoricals `string`, other categoricals `any`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from mlflow.types import DataType
from mlflow.types.schema import AnyType, ColSpec, Schema

from continuous_training.errors import PipelineError
from continuous_training.model.casts import is_numeric, numeric_values, spark_string


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
            raw = np.column_stack([numeric_values(frame[column], spark_type)
                                   for column, spark_type in zip(self.numeric, self.numeric_types, strict=True)])
            imputed = np.where(np.isnan(raw), np.asarray(self.surrogates), raw)
            scale = np.array([0.0 if std == 0 else 1.0 / std for std in self.stds])
            blocks.append((imputed - np.asarray(self.means)) * scale)
        for column, spark_type, column_labels, size in zip(
            self.categorical, self.categorical_types, self.labels, self.category_sizes, strict=True
        ):
            try:
                strings = [spark_string(value, spark_type) for value in frame[column].tolist()]
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
            elif is_numeric(spark_type):
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


