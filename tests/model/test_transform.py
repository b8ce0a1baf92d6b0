"""The numpy feature transform: parity with the fitted Spark pipeline, Spark's casts of raw values, online input."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from continuous_training.data.features import pipeline_input, to_feature_rows
from continuous_training.errors import PipelineError
from continuous_training.model.transform import FeatureTransform
from pyspark.ml.functions import vector_to_array
from pyspark.sql import functions as F
from tabular_case import RAW_TEXT, SCHEMA, make_spec

pytestmark = pytest.mark.integration


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
