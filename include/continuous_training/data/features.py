"""Featurize: a Spark ML PipelineModel fitted on the training split, and Petastorm-ready feature Parquet.

The fitted pipeline (stage order matters to `continuous_training.model.transform.FeatureTransform`, which mirrors it):
Imputer(median) on numeric features → VectorAssembler → StandardScaler(mean, std) → per categorical feature
StringIndexer(handleInvalid="keep") whose labels are the `features.max_categories` most frequent training values
(ties alphabetical) → OneHotEncoder(dropLast=False; the extra last "other" slot holds rarer categories, categories
never seen in training and nulls) → VectorAssembler([scaled numeric, one-hots]) → `features`. The pipeline reads
`pipeline_input(rows)`: StringIndexer takes only string and numeric columns, so boolean, date and timestamp
categoricals are cast to strings first (the cast StringIndexer applies to numeric columns itself).
"""

from __future__ import annotations

import hashlib
import json
from functools import partial
from itertools import zip_longest
from pathlib import Path

import numpy as np
from pyspark.ml import Pipeline, PipelineModel, Transformer
from pyspark.ml.feature import (
    Imputer,
    ImputerModel,
    OneHotEncoder,
    OneHotEncoderModel,
    StandardScaler,
    StandardScalerModel,
    StringIndexer,
    StringIndexerModel,
    VectorAssembler,
)
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from continuous_training.config import Settings, get_settings
from continuous_training.errors import PipelineError
from continuous_training.model.casts import as_spark_numeric
from continuous_training.model.transform import FeatureTransform
from continuous_training.paths import FEATURIZE_FILE, RAW_SPLITS_DATA, FeaturizeResult, write_result
from continuous_training.profiles import top_values
from continuous_training.spark import col, in_parallel
from continuous_training.spec import DatasetSpec, is_numeric_type

FEATURES = "features"
LABEL = "label"
SPLIT = "data_split"
SPLITS = ("train", "validation", "test")
_NUMERIC_IMPUTED, _NUMERIC_VECTOR, _NUMERIC_SCALED = "_numeric_imputed_{}", "_numeric_vector", "_numeric_scaled"
_CATEGORY_INDEX, _CATEGORY_ONEHOT = "_category_index_{}", "_category_onehot_{}"
_LABEL_INDEX = "_label_index"
_PARITY_FEATURES, _PARITY_RAW = "_parity_features", "_parity_raw_{}"


def _row_keys(spec: DatasetSpec) -> list[Column]:
    """The columns that identify a row: the id column, or every column."""
    return [col(key) for key in ([spec.id_column] if spec.id_column else spec.schema_)]


def split_bucket(spec: DatasetSpec) -> Column:
    """A number in [0, 1) per row: a hash of the id column (or every column), independent of partitioning."""
    return (F.abs(F.xxhash64(*_row_keys(spec))) % 10_000) / 10_000.0


def assign_split(frame: DataFrame, spec: DatasetSpec, fractions: tuple[float, float, float]) -> DataFrame:
    """Add `data_split` in {train, validation, test} deterministically."""
    unit = split_bucket(spec)
    split = F.when(unit < fractions[0], "train").when(unit < fractions[0] + fractions[1], "validation")
    return frame.withColumn(SPLIT, split.otherwise("test"))


def pipeline_input(frame: DataFrame, spec: DatasetSpec) -> DataFrame:
    """Raw rows as the feature pipeline reads them: boolean, date and timestamp categoricals cast to strings."""
    casts = {column: col(column).cast("string") for column in spec.features.categorical
             if spec.schema_[column] != "string" and not is_numeric_type(spec.schema_[column])}
    return frame.withColumns(casts) if casts else frame


def _fit_capped_indexer(train: DataFrame, columns: list[str], outputs: list[str], limit: int) -> StringIndexerModel:
    """StringIndexer(handleInvalid="keep", frequencyDesc) knowing only each column's `limit` most frequent values:
    fitted with every other value nulled, so rarer values share the extra last index with unseen values and nulls."""
    kept = [[value for value, _ in top] for top in top_values(train, columns, limit)]
    masked = train.select(*[F.when(col(column).cast("string").isin(labels), col(column)).alias(column)
                            for column, labels in zip(columns, kept, strict=True)])
    return StringIndexer(inputCols=columns, outputCols=outputs, handleInvalid="keep",
                         stringOrderType="frequencyDesc").fit(masked)


def fit_feature_pipeline(train: DataFrame, spec: DatasetSpec) -> PipelineModel:
    """The feature pipeline fitted on the raw training rows (see the module docstring)."""
    train = pipeline_input(train, spec)
    numeric, categorical = spec.features.numeric, spec.features.categorical
    numeric_stages, categorical_stages = in_parallel(
        train.sparkSession, partial(_fit_numeric, train, numeric),
        partial(_fit_categorical, train, categorical, spec.features.max_categories))
    assembled = ([_NUMERIC_SCALED] if numeric else []) + [_CATEGORY_ONEHOT.format(i) for i in range(len(categorical))]
    return PipelineModel([*numeric_stages, *categorical_stages,
                          VectorAssembler(inputCols=assembled, outputCol=FEATURES)])


def _fit_numeric(train: DataFrame, numeric: list[str]) -> list[Transformer]:
    """Imputer(median), VectorAssembler and StandardScaler fitted on the numeric features (none without any)."""
    if not numeric:
        return []
    imputed = [_NUMERIC_IMPUTED.format(i) for i in range(len(numeric))]
    return Pipeline(stages=[
        Imputer(inputCols=numeric, outputCols=imputed, strategy="median"),
        VectorAssembler(inputCols=imputed, outputCol=_NUMERIC_VECTOR),
        StandardScaler(inputCol=_NUMERIC_VECTOR, outputCol=_NUMERIC_SCALED, withMean=True, withStd=True),
    ]).fit(train).stages


def _fit_categorical(train: DataFrame, categorical: list[str], max_categories: int) -> list[Transformer]:
    """The capped StringIndexer and the OneHotEncoder fitted on the categorical features (none without any)."""
    if not categorical:
        return []
    indices = [_CATEGORY_INDEX.format(i) for i in range(len(categorical))]
    onehots = [_CATEGORY_ONEHOT.format(i) for i in range(len(categorical))]
    indexer = _fit_capped_indexer(train, categorical, indices, max_categories)
    return [indexer, OneHotEncoder(inputCols=indices, outputCols=onehots, dropLast=False).fit(indexer.transform(train))]


def class_indexer(classes: list[str], spec: DatasetSpec) -> StringIndexerModel:
    """The label's StringIndexer over `classes` (every label value of all splits, as strings) in alphabetical
    order, as StringIndexer(stringOrderType="alphabetAsc", handleInvalid="error") would fit them."""
    return StringIndexerModel.from_labels(sorted(classes), inputCol=spec.label, outputCol=_LABEL_INDEX,
                                          handleInvalid="error")


def to_feature_rows(frame: DataFrame, pipeline: PipelineModel, label_indexer: StringIndexerModel | None,
                    spec: DatasetSpec) -> DataFrame:
    """`features` as a fixed-length float32 array and `label` as float32 (class index for classification)."""
    transformed = pipeline.transform(pipeline_input(frame, spec))
    if label_indexer is None:
        label = col(spec.label)
    else:
        transformed = label_indexer.transform(transformed.withColumn(spec.label, col(spec.label).cast("string")))
        label = F.col(_LABEL_INDEX)
    return transformed.select(
        vector_to_array(FEATURES, dtype="float32").alias(FEATURES), label.cast("float").alias(LABEL)
    )


def fingerprint_data(input_fingerprint: str, spec: DatasetSpec, rows: dict[str, int], feature_dim: int,
                     classes: list[str] | None) -> str:
    """A digest of what a model trains on: the pinned input files, the spec's content and the featurize output."""
    document = {"inputs": input_fingerprint, "spec": spec.model_dump(mode="json", by_alias=True),
                "featurize": {"rows": rows, "feature_dim": feature_dim, "classes": classes}}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


def featurize(valid: DataFrame, spec: DatasetSpec, run_id: str, out_dir: Path, input_fingerprint: str,
              settings: Settings | None = None) -> FeaturizeResult:
    """Fit the features on the train split and the classes on all splits; write pipeline, label indexer, feature
    splits, raw split rows, manifest (with the data fingerprint, from `input_fingerprint` of the pinned input)."""
    settings = settings or get_settings()
    spark = valid.sparkSession
    with_split = assign_split(valid, spec, settings.split_fractions)
    with_split.write.mode("overwrite").partitionBy(SPLIT).parquet(str(out_dir / RAW_SPLITS_DATA))
    raw = spark.read.parquet(str(out_dir / RAW_SPLITS_DATA))
    classified = spec.task != "regression"
    keys = [SPLIT, col(spec.label).cast("string").alias(LABEL)] if classified else [SPLIT]
    rows = {split: 0 for split in SPLITS}
    classes: set[str] = set()
    for row in raw.groupBy(*keys).count().collect():
        rows[row[SPLIT]] += row["count"]
        if classified and row[LABEL] is not None:
            classes.add(row[LABEL])
    if rows["train"] == 0:
        raise PipelineError(f"featurize: the train split of {spec.name!r} is empty ({rows}); more rows are needed")
    train_raw = raw.where(F.col(SPLIT) == "train").drop(SPLIT)
    pipeline = fit_feature_pipeline(train_raw, spec)
    label_indexer = class_indexer(list(classes), spec) if classified else None

    def write_features() -> None:
        for split in SPLITS:
            features = to_feature_rows(raw.where(F.col(SPLIT) == split).drop(SPLIT), pipeline, label_indexer, spec)
            # At least feature_files files (Petastorm's shards), without a shuffle.
            per_file = max(rows[split] // settings.feature_files, 1)
            features.write.mode("overwrite").option("maxRecordsPerFile", per_file).parquet(str(out_dir / split))

    in_parallel(spark, partial(_save_models, out_dir, pipeline, label_indexer), write_features)
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
        data_fingerprint=fingerprint_data(input_fingerprint, spec, rows, int(feature_dim), classes),
    )
    write_result(out_dir / FEATURIZE_FILE, result)
    return result


def _save_models(out_dir: Path, pipeline: PipelineModel, label_indexer: StringIndexerModel | None) -> None:
    pipeline.write().overwrite().save(str(out_dir / "pipeline"))
    if label_indexer is not None:
        label_indexer.write().overwrite().save(str(out_dir / "label_indexer"))


def _require(condition: bool, spec: DatasetSpec, problem: str) -> None:
    if not condition:
        raise PipelineError(f"feature pipeline does not match spec {spec.name!r}: {problem}")


def _checked_stages(pipeline_model: PipelineModel, spec: DatasetSpec) -> list:
    """The pipeline's stages, checked to be exactly the sequence `fit_feature_pipeline` builds for the spec."""
    expected = [
        *([ImputerModel, VectorAssembler, StandardScalerModel] if spec.features.numeric else []),
        *([StringIndexerModel, OneHotEncoderModel] if spec.features.categorical else []),
        VectorAssembler,
    ]
    stages = list(pipeline_model.stages)
    for position, (stage, stage_type) in enumerate(zip_longest(stages, expected)):
        if type(stage) is not stage_type:
            found = f"stage {position} {type(stage).__name__}"
            problem = (f"unexpected {found} after the final VectorAssembler" if stage_type is None
                       else f"stage {position} {stage_type.__name__} is missing" if stage is None
                       else f"unexpected {found} where {stage_type.__name__} belongs")
            sequence = " → ".join(expected_type.__name__ for expected_type in expected)
            raise PipelineError(f"feature pipeline does not match spec {spec.name!r}: {problem} (expected {sequence})")
    return stages


def feature_transform(pipeline_model: PipelineModel, spec: DatasetSpec) -> FeatureTransform:
    """The parameters of the PipelineModel `fit_feature_pipeline(spec)` fits, as the serving `FeatureTransform`;
    any other pipeline (stages, their order or their columns) is a PipelineError naming the stage."""
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
        surrogates = [float(as_spark_numeric(np.array([float(surrogate_row[column])]), spec.schema_[column])[0])
                      for column in numeric]
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
    return FeatureTransform(
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


def _feature_sources(transform: FeatureTransform) -> list[tuple[str, str]]:
    """Per position of the feature vector: the raw column it comes from, and a description of the position."""
    sources = [(column, f"numeric column {column!r}") for column in transform.numeric]
    for column, labels, size in zip(transform.categorical, transform.labels, transform.category_sizes, strict=True):
        sources += [(column, f"categorical column {column!r} (slot for {label!r})") for label in labels]
        sources += [(column, f"categorical column {column!r} ('other' slot)")] * (size - len(labels))
    return sources


def check_serving_parity(rows: DataFrame, pipeline: PipelineModel, transform: FeatureTransform, spec: DatasetSpec,
                         sample_rows: int = 1000, tolerance: float = 1e-5) -> int:
    """Check that the serving transform reproduces Spark's feature vectors on a sample of raw `rows`: the first
    `sample_rows` rows by a hash of their key columns (deterministic). A value off by more than `tolerance`
    (absolute, and relative to Spark's value) raises a PipelineError naming the raw column, the row (its id, or its
    position in the sample) and both values. Returns the number of rows checked.
    """
    keys = _row_keys(spec)
    id_columns = [spec.id_column] if spec.id_column and spec.id_column not in transform.input_columns else []
    raw_columns = [*id_columns, *transform.input_columns]
    sample = rows.orderBy(F.xxhash64(*keys), *keys).limit(sample_rows).select(
        *[col(column) for column in transform.input_columns],
        *[col(column).alias(_PARITY_RAW.format(position)) for position, column in enumerate(raw_columns)],
    )
    scored = pipeline.transform(pipeline_input(sample, spec)).select(
        *[_PARITY_RAW.format(position) for position in range(len(raw_columns))],
        vector_to_array(FEATURES).alias(_PARITY_FEATURES),
    ).toPandas().rename(columns={_PARITY_RAW.format(position): column for position, column in enumerate(raw_columns)})
    if scored.empty:
        return 0
    expected = np.array(scored[_PARITY_FEATURES].tolist(), dtype=np.float64)
    served = transform.transform(scored).astype(np.float64)
    if expected.shape != served.shape:
        raise PipelineError(f"serving parity: Spark's feature vectors have {expected.shape[1]} values, the serving "
                            f"transform's {served.shape[1]}")
    mismatches = np.argwhere(~np.isclose(served, expected, rtol=tolerance, atol=tolerance, equal_nan=True))
    if len(mismatches):
        row, index = map(int, mismatches[0])
        column, feature = _feature_sources(transform)[index]
        where = f"{spec.id_column} {scored[spec.id_column].iloc[row]!r}" if spec.id_column else f"sample row {row}"
        raise PipelineError(
            f"serving parity: {feature} differs at {where} (raw value {scored[column].iloc[row]!r}): Spark's pipeline "
            f"gives {expected[row, index]!r}, the serving transform {served[row, index]!r}"
        )
    return len(scored)
