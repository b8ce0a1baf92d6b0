"""Featurize on real Spark: classes from every split, capped categoricals, and the serving parity check."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from continuous_training.data.features import (
    check_serving_parity,
    feature_transform,
    featurize,
    fit_feature_pipeline,
    split_bucket,
    to_feature_rows,
)
from continuous_training.errors import PipelineError
from continuous_training.spec import parse_spec
from pyspark.ml import PipelineModel
from pyspark.ml.feature import SQLTransformer
from pyspark.sql import functions as F

pytestmark = pytest.mark.integration

SCHEMA = {"id": "string", "amount": "double", "tenure": "int", "merchant": "string", "target": "double",
          "kind": "string"}
POPULAR = [f"popular_{j:02d}" for j in range(19)]
"""19 categories of 60, 59, ... 42 rows; then tie_a and tie_b (40 each) compete for the 20th slot."""


def make_spec(task: str = "regression", label: str = "target", id_column: str | None = "id",
              max_categories: int = 20):
    return parse_spec({
        "name": "features_test", "source": {"path": "unused.csv", "format": "csv"}, "schema": SCHEMA,
        "label": label, "task": task, "id_column": id_column,
        "features": {"numeric": ["amount", "tenure"], "categorical": ["merchant"], "max_categories": max_categories},
    })


def merchant_values() -> list[str | None]:
    """~2,000 distinct merchants: a few frequent ones, two tied at the cut, 2,000 seen once, and nulls."""
    values: list[str | None] = [name for j, name in enumerate(POPULAR) for _ in range(60 - j)]
    values += ["tie_b"] * 40 + ["tie_a"] * 40 + [f"rare_{j:04d}" for j in range(2000)] + [None] * 30
    return values


@pytest.fixture(scope="module")
def merchants(spark):
    rng = np.random.default_rng(11)
    rows = [(f"r{i}", float(np.round(rng.normal(100, 25), 2)), None if i % 23 == 0 else int(rng.integers(0, 60)),
             merchant, float(rng.normal()), str(rng.choice(["a", "b"])))
            for i, merchant in enumerate(merchant_values())]
    return spark.createDataFrame(rows, make_spec().ddl_schema)


@pytest.fixture(scope="module")
def fitted(merchants, tmp_path_factory):
    spec = make_spec()
    folder = str(tmp_path_factory.mktemp("pipeline") / "pipeline")
    fit_feature_pipeline(merchants, spec).write().save(folder)
    pipeline = PipelineModel.load(folder)
    return pipeline, feature_transform(pipeline, spec)


def test_high_cardinality_categorical_keeps_the_most_frequent(spark, merchants, fitted):
    pipeline, transform = fitted
    spec = make_spec()
    scoring = spark.createDataFrame([
        ("s0", 90.0, 3, "popular_00", 0.0, "a"),
        ("s1", 95.0, 4, "tie_a", 0.0, "a"),
        ("s2", 99.0, 5, "tie_b", 0.0, "a"),
        ("s3", 101.0, 6, "rare_0007", 0.0, "a"),
        ("s4", 110.0, 7, "never seen", 0.0, "a"),
        ("s5", 120.0, None, None, 0.0, "a"),
    ], spec.ddl_schema)
    expected = np.array([row.features for row in to_feature_rows(scoring, pipeline, None, spec).collect()])

    actual = transform.transform(scoring.toPandas())

    assert transform.labels == [[*POPULAR, "tie_a"]]
    assert transform.category_sizes == [21] and transform.feature_dim == 2 + 21
    assert expected.shape == actual.shape == (6, 23)
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    other = 2 + 20
    assert actual[0, 2] == 1 and actual[1, 2 + 19] == 1
    assert (actual[2:, other] == 1).all() and (actual[:, 2:].sum(axis=1) == 1).all()


def test_check_serving_parity_passes_on_the_fitted_pipeline(merchants, fitted):
    pipeline, transform = fitted

    assert check_serving_parity(merchants, pipeline, transform, make_spec(), sample_rows=500) == 500
    assert check_serving_parity(merchants, pipeline, transform, make_spec(id_column=None), sample_rows=50) == 50


def test_check_serving_parity_names_the_column_and_row(merchants, fitted):
    pipeline, transform = fitted
    shifted = dataclasses.replace(transform, means=[transform.means[0], transform.means[1] + 0.5])
    relabelled = dataclasses.replace(transform, labels=[[transform.labels[0][1], transform.labels[0][0],
                                                         *transform.labels[0][2:]]])

    with pytest.raises(PipelineError, match=r"numeric column 'tenure' differs at id 'r\d+' \(raw value .*\): "
                                            r"Spark's pipeline gives .*, the serving transform "):
        check_serving_parity(merchants, pipeline, shifted, make_spec())
    with pytest.raises(PipelineError, match=r"categorical column 'merchant' \(slot for 'popular_0[01]'\) differs "
                                            r"at sample row \d+ \(raw value 'popular_0[01]'\)"):
        check_serving_parity(merchants, pipeline, relabelled, make_spec(id_column=None))


def test_feature_transform_requires_the_stages_it_mirrors(fitted):
    pipeline, _ = fitted
    spec = make_spec()
    stages = pipeline.stages
    extra = PipelineModel([*stages[:-1], SQLTransformer(statement="SELECT * FROM __THIS__"), stages[-1]])

    with pytest.raises(PipelineError, match="unexpected stage 5 SQLTransformer where VectorAssembler belongs"):
        feature_transform(extra, spec)
    with pytest.raises(PipelineError, match="unexpected stage 6 VectorAssembler after the final VectorAssembler"):
        feature_transform(PipelineModel([*stages, stages[-1]]), spec)
    with pytest.raises(PipelineError, match="stage 5 VectorAssembler is missing"):
        feature_transform(PipelineModel(stages[:-1]), spec)


def test_classes_come_from_every_split(spark, settings, tmp_path):
    spec = make_spec(task="multiclass_classification", label="kind")
    ids = spark.createDataFrame([(f"r{i}",) for i in range(300)], "id string")
    test_only = [row.id for row in ids.where(split_bucket(spec) >= 0.85).orderBy("id").limit(3).collect()]
    rows = [(f"r{i}", float(i), i % 7, f"m{i % 5}", 0.0, "only_in_test" if f"r{i}" in test_only else "ab"[i % 2])
            for i in range(300)]

    result = featurize(spark.createDataFrame(rows, spec.ddl_schema), spec, "run1", tmp_path / "featurize",
                       "inputs of run1", settings)

    assert len(test_only) == 3 and result.classes == ["a", "b", "only_in_test"] and result.num_classes == 3
    labels = spark.read.parquet(str(tmp_path / "featurize" / "test")).where(F.col("label") == 2).count()
    assert labels == 3
    assert spark.read.parquet(str(tmp_path / "featurize" / "train")).where(F.col("label") == 2).count() == 0


def test_each_split_is_written_as_at_least_feature_files_files_holding_all_its_rows(spark, settings, tmp_path):
    spec = make_spec()
    rows = [(f"r{i}", float(i), i % 7, f"m{i % 5}", float(i % 3), "a") for i in range(2_000)]
    settings = settings.model_copy(update={"feature_files": 5})
    valid = spark.createDataFrame(rows, spec.ddl_schema).repartition(3)

    result = featurize(valid, spec, "run1", tmp_path / "featurize", "inputs of run1", settings)

    assert sum(result.rows.values()) == 2_000
    for split in ("train", "validation", "test"):
        files = sorted((tmp_path / "featurize" / split).glob("*.parquet"))
        counts = [spark.read.parquet(str(path)).count() for path in files]
        assert len(files) >= 5 and 0 not in counts, (split, counts)
        assert sum(counts) == result.rows[split] and max(counts) <= result.rows[split] // 5, (split, counts)
