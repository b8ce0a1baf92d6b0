"""Column and job helpers: literal_array's constants reach Spark exactly, as one folded literal; in_parallel runs two
actions at once, the background one seeing the session's local properties, and hands back results and errors."""

from __future__ import annotations

import math

import pytest
from continuous_training.errors import PipelineError
from continuous_training.spark import in_parallel, literal_array
from pyspark.sql import functions as F

pytestmark = pytest.mark.integration


def test_doubles_round_trip_exactly_with_infinities_and_nan(spark):
    values = [-math.inf, -1e-300, 0.1, 1 / 3, 2.0**53 + 2, 1e300, math.inf, math.nan, *(k / 7 for k in range(1000))]
    (read,) = spark.range(1).select(literal_array(values, "double")).head()
    assert len(read) == len(values)
    assert all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(read, values, strict=True))


def test_strings_round_trip_exactly(spark):
    values = ["plain", "comma, inside", 'quote " and \\ backslash', "ünïcödé ✓", "", "new\nline", "[not, json]"]
    (read,) = spark.range(1).select(literal_array(values, "string")).head()
    assert read == values


def test_the_array_is_folded_into_one_literal(spark):
    frame = spark.range(3).select(F.element_at(literal_array([1.5, 2.5], "double"), (F.col("id") % 2 + 1).cast("int"))
                                  .alias("value"))
    assert [row.value for row in frame.collect()] == [1.5, 2.5, 1.5]
    plan = frame._jdf.queryExecution().optimizedPlan().toString().lower()
    assert "from_json" not in plan and "jsontostructs" not in plan


def test_in_parallel_returns_both_results_and_the_background_sees_the_local_properties(spark):
    context = spark.sparkContext
    context.setLocalProperty("spark.job.description", "profiling churn")
    try:
        background, foreground = in_parallel(
            spark, lambda: (context.getLocalProperty("spark.job.description"), spark.range(1000).count()),
            lambda: spark.range(10).count())
    finally:
        context.setLocalProperty("spark.job.description", None)
    assert background == ("profiling churn", 1000) and foreground == 10


def test_in_parallel_raises_the_background_error(spark):
    def fail() -> None:
        raise PipelineError("background failed")

    with pytest.raises(PipelineError, match="background failed"):
        in_parallel(spark, fail, lambda: spark.range(10).count())
