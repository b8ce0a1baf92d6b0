"""Featurize: a Spark ML PipelineModel fitted on the training split, and Petastorm-ready feature Parquet.

The fitted pipeline (stage order matters to `continuous_training.serving.FeatureTransform`, which mirrors it):
Imputer(median) on numeric features → VectorAssembler → StandardScaler(mean, std) → per categorical feature
StringIndexer(handleInvalid="keep", frequencyDesc) → OneHotEncoder(dropLast=False; the extra "unknown" slot
holds categories and nulls never seen in training) → VectorAssembler([scaled numeric, one-hots]) → `features`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import (
    Imputer,
    OneHotEncoder,
    StandardScaler,
    StringIndexer,
    StringIndexerModel,
    VectorAssembler,
)
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from continuous_training.config import Settings, get_settings
from continuous_training.errors import PipelineError
from continuous_training.spec import DatasetSpec

FEATURES = "features"
LABEL = "label"
SPLIT = "data_split"
SPLITS = ("train", "validation", "test")
_NUMERIC_IMPUTED, _NUMERIC_VECTOR, _NUMERIC_SCALED = "_numeric_imputed_{}", "_numeric_vector", "_numeric_scaled"
_CATEGORY_INDEX, _CATEGORY_ONEHOT = "_category_index_{}", "_category_onehot_{}"
_LABEL_INDEX = "_label_index"


@dataclass(frozen=True)
class FeaturizeResult:
    """What featurize wrote; saved as `featurize.json` (read by train and evaluate)."""

    dataset: str
    run_id: str
    task: str
    feature_dim: int
    num_classes: int | None
    classes: list[str] | None
    rows: dict[str, int]
    numeric: list[str]
    categorical: list[str]


def _col(name: str) -> Column:
    return F.col(f"`{name.replace('`', '``')}`")


def split_bucket(spec: DatasetSpec) -> Column:
    """A number in [0, 1) per row: a hash of the id column (or every column), independent of partitioning."""
    keys = [spec.id_column] if spec.id_column else list(spec.schema_)
    return (F.abs(F.xxhash64(*[_col(key) for key in keys])) % 10_000) / 10_000.0


def assign_split(frame: DataFrame, spec: DatasetSpec, fractions: tuple[float, float, float]) -> DataFrame:
    """Add `data_split` in {train, validation, test} deterministically."""
    unit = split_bucket(spec)
    train_end, validation_end = fractions[0], fractions[0] + fractions[1]
    split = F.when(unit < train_end, "train").when(unit < validation_end, "validation").otherwise("test")
    return frame.withColumn(SPLIT, split)


def build_feature_pipeline(spec: DatasetSpec) -> Pipeline:
    """The unfitted feature pipeline for a spec (see the module docstring)."""
    numeric, categorical = spec.features.numeric, spec.features.categorical
    stages: list = []
    assembled: list[str] = []
    if numeric:
        imputed = [_NUMERIC_IMPUTED.format(i) for i in range(len(numeric))]
        stages += [
            Imputer(inputCols=numeric, outputCols=imputed, strategy="median"),
            VectorAssembler(inputCols=imputed, outputCol=_NUMERIC_VECTOR),
            StandardScaler(inputCol=_NUMERIC_VECTOR, outputCol=_NUMERIC_SCALED, withMean=True, withStd=True),
        ]
        assembled.append(_NUMERIC_SCALED)
    if categorical:
        indices = [_CATEGORY_INDEX.format(i) for i in range(len(categorical))]
        onehots = [_CATEGORY_ONEHOT.format(i) for i in range(len(categorical))]
        stages += [
            StringIndexer(inputCols=categorical, outputCols=indices, handleInvalid="keep",
                          stringOrderType="frequencyDesc"),
            OneHotEncoder(inputCols=indices, outputCols=onehots, dropLast=False),
        ]
        assembled += onehots
    stages.append(VectorAssembler(inputCols=assembled, outputCol=FEATURES))
    return Pipeline(stages=stages)


def fit_label_indexer(train: DataFrame, spec: DatasetSpec) -> StringIndexerModel | None:
    """Classes in alphabetical order for classification tasks; None for regression."""
    if spec.task == "regression":
        return None
    return StringIndexer(inputCol=spec.label, outputCol=_LABEL_INDEX, stringOrderType="alphabetAsc",
                         handleInvalid="error").fit(train.withColumn(spec.label, _col(spec.label).cast("string")))


def to_feature_rows(frame: DataFrame, pipeline: PipelineModel, label_indexer: StringIndexerModel | None,
                    spec: DatasetSpec) -> DataFrame:
    """`features` as a fixed-length float32 array and `label` as float32 (class index for classification)."""
    transformed = pipeline.transform(frame)
    if label_indexer is None:
        label = _col(spec.label)
    else:
        transformed = label_indexer.transform(transformed.withColumn(spec.label, _col(spec.label).cast("string")))
        label = F.col(_LABEL_INDEX)
    return transformed.select(
        vector_to_array(FEATURES, dtype="float32").alias(FEATURES), label.cast("float").alias(LABEL)
    )


def featurize(valid: DataFrame, spec: DatasetSpec, run_id: str, out_dir: Path,
              settings: Settings | None = None) -> FeaturizeResult:
    """Fit on the train split only; write pipeline, label indexer, feature splits, raw test rows, manifest."""
    settings = settings or get_settings()
    spark = valid.sparkSession
    with_split = assign_split(valid, spec, settings.split_fractions)
    with_split.write.mode("overwrite").partitionBy(SPLIT).parquet(str(out_dir / "raw_splits"))
    raw = spark.read.parquet(str(out_dir / "raw_splits"))
    rows = {split: 0 for split in SPLITS} | {
        row[SPLIT]: row["count"] for row in raw.groupBy(SPLIT).count().collect()
    }
    if rows["train"] == 0:
        raise PipelineError(f"featurize: the train split of {spec.name!r} is empty ({rows}); more rows are needed")
    train_raw = raw.where(F.col(SPLIT) == "train").drop(SPLIT)
    pipeline = build_feature_pipeline(spec).fit(train_raw)
    label_indexer = fit_label_indexer(train_raw, spec)
    pipeline.write().overwrite().save(str(out_dir / "pipeline"))
    if label_indexer is not None:
        label_indexer.write().overwrite().save(str(out_dir / "label_indexer"))
    for split in SPLITS:
        split_raw = raw.where(F.col(SPLIT) == split).drop(SPLIT)
        features = to_feature_rows(split_raw, pipeline, label_indexer, spec)
        features.repartition(settings.feature_files).write.mode("overwrite").parquet(str(out_dir / split))
    feature_dim = spark.read.parquet(str(out_dir / "train")).select(F.size(FEATURES)).first()[0]
    classes = list(label_indexer.labels) if label_indexer is not None else None
    result = FeaturizeResult(
        dataset=spec.name,
        run_id=run_id,
        task=spec.task,
        feature_dim=int(feature_dim),
        num_classes=len(classes) if classes else None,
        classes=classes,
        rows=rows,
        numeric=list(spec.features.numeric),
        categorical=list(spec.features.categorical),
    )
    (out_dir / "featurize.json").write_text(json.dumps(asdict(result), indent=2))
    return result


def read_featurize_result(out_dir: Path) -> FeaturizeResult:
    """The manifest a featurize run wrote."""
    return FeaturizeResult(**json.loads((out_dir / "featurize.json").read_text()))
