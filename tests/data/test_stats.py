"""Stats figures checked against pandas / numpy / scipy on small frames, and the report rendered from them."""

from __future__ import annotations

import json
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from continuous_training.data.stats import QUANTILES, RANK_POINTS, SPEARMAN_TOLERANCE, compute_stats
from continuous_training.data.stats_report import render_report
from continuous_training.errors import PipelineError
from continuous_training.profiles import reference_profiles
from continuous_training.spec import parse_spec
from scipy import stats as scipy_stats

SPACED = "Avg Session (min)"


def make_spec(numeric: list[str], categorical: list[str], label: str, task: str, schema: dict[str, str]):
    return parse_spec({
        "name": "profile_test",
        "source": {"path": "unused.csv", "format": "csv"},
        "schema": schema,
        "label": label,
        "task": task,
        "features": {"numeric": numeric, "categorical": categorical},
    })


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 300
    spaced = rng.gamma(2.0, 3.0, n)
    spaced[[3, 50, 120]] = np.nan
    tenure = rng.integers(0, 60, n)
    charges = 20 + 1.5 * tenure + rng.normal(0, 10, n)
    return pd.DataFrame({
        SPACED: spaced,
        "tenure": tenure.astype("int64"),
        "charges": charges,
        "plan": rng.choice(["basic", "plus", "pro", None], n, p=[0.5, 0.3, 0.15, 0.05]),
        "target": (charges + rng.normal(0, 5, n)).round(3),
    })


@pytest.fixture(scope="module")
def regression_spec():
    return make_spec(
        [SPACED, "tenure", "charges"], ["plan"], "target", "regression",
        {SPACED: "double", "tenure": "int", "charges": "double", "plan": "string", "target": "double"},
    )


@pytest.fixture(scope="module")
def profiled(spark, frame, regression_spec) -> dict:
    rows = [tuple(None if pd.isna(v) else v for v in row) for row in frame.itertuples(index=False)]
    df = spark.createDataFrame(rows, regression_spec.ddl_schema).repartition(3)
    return compute_stats(df, regression_spec)


def assert_close(actual, expected, rel=1e-9, abs_=1e-9):
    assert actual == pytest.approx(expected, rel=rel, abs=abs_)


@pytest.mark.integration
@pytest.mark.parametrize("column", [SPACED, "tenure", "charges", "target"])
def test_numeric_moments_match_pandas_and_scipy(profiled, frame, column):
    values = frame[column].dropna().astype(float)
    figures = profiled["columns"][column]
    assert figures["type"] == "numeric"
    assert figures["count"] == len(values)
    assert figures["nulls"] == frame[column].isna().sum()
    assert_close(figures["mean"], values.mean())
    assert_close(figures["std"], values.std(ddof=1))
    assert figures["min"] == values.min()
    assert figures["max"] == values.max()
    assert_close(figures["sum"], values.sum())
    assert_close(figures["skewness"], scipy_stats.skew(values, bias=True))
    assert_close(figures["kurtosis"], scipy_stats.kurtosis(values, fisher=True, bias=True))


@pytest.mark.integration
@pytest.mark.parametrize("column", [SPACED, "tenure", "charges"])
def test_quantiles_are_values_within_rank_tolerance(profiled, frame, column):
    values = np.sort(frame[column].dropna().to_numpy(dtype=float))
    n = len(values)
    for key, p in QUANTILES.items():
        q = profiled["columns"][column]["quantiles"][key]
        assert q in values
        below, at_or_below = np.searchsorted(values, q, "left") / n, np.searchsorted(values, q, "right") / n
        assert below - 1 / n <= p <= at_or_below + 1 / n, (key, q)


@pytest.mark.integration
@pytest.mark.parametrize("column", [SPACED, "tenure", "charges", "target"])
def test_histogram_matches_numpy_with_same_edges(profiled, frame, column):
    values = frame[column].dropna().to_numpy(dtype=float)
    histogram = profiled["columns"][column]["histogram"]
    edges = histogram["edges"]
    assert len(edges) == 21 and len(histogram["counts"]) == 20
    assert edges[0] == values.min() and edges[-1] == values.max()
    np.testing.assert_allclose(edges, np.histogram_bin_edges(values, bins=20), rtol=0, atol=0)
    assert sum(histogram["counts"]) == profiled["columns"][column]["count"]
    assert histogram["counts"] == np.histogram(values, bins=np.array(edges))[0].tolist()


@pytest.mark.integration
def test_correlations_match_pandas_and_scipy(profiled, frame):
    features = [SPACED, "tenure", "charges"]
    complete = frame[features].dropna().astype(float)
    correlation = profiled["correlation"]
    assert correlation["rows_used"] == len(complete) == len(frame) - 3
    assert correlation["pearson"]["columns"] == features
    assert correlation["spearman"]["columns"] == features
    np.testing.assert_allclose(correlation["pearson"]["matrix"], complete.corr().to_numpy(), rtol=1e-9, atol=1e-12)
    spearman = scipy_stats.spearmanr(complete.to_numpy()).statistic
    np.testing.assert_allclose(correlation["spearman"]["matrix"], spearman, rtol=1e-9, atol=1e-12)


@pytest.mark.integration
@pytest.mark.parametrize("with_nulls", [True, False], ids=["own-rank-sketches", "ranks-from-the-percentile-sketch"])
def test_spearman_above_rank_points_is_within_its_tolerance(spark, with_nulls):
    """Above RANK_POINTS complete rows ranks are interpolated from a sketch: |rho - scipy's| <= SPEARMAN_TOLERANCE,
    for a smooth, a heavy-tailed and a heavily tied feature; with one of them null on some rows (the others get
    sketches of their complete rows) and without (every feature's ranks come from its percentile sketch)."""
    rng = np.random.default_rng(11)
    n = 20 * RANK_POINTS
    smooth = rng.normal(size=n)
    tailed = np.exp(smooth + rng.normal(size=n))
    tied = np.clip(np.round(smooth * 2 + rng.normal(size=n)), -3, 3)
    if with_nulls:
        tailed[rng.choice(n, n // 50, replace=False)] = np.nan
    frame = pd.DataFrame({"smooth": smooth, "tailed": tailed, "tied": tied, "y": rng.normal(size=n)})
    spec = make_spec(["smooth", "tailed", "tied"], [], "y", "regression",
                     {"smooth": "double", "tailed": "double", "tied": "double", "y": "double"})
    correlation = compute_stats(spark.createDataFrame(frame).repartition(4), spec)["correlation"]
    complete = frame[["smooth", "tailed", "tied"]].dropna()
    assert correlation["rows_used"] == len(complete)
    expected = scipy_stats.spearmanr(complete.to_numpy()).statistic
    np.testing.assert_allclose(correlation["spearman"]["matrix"], expected, rtol=0, atol=SPEARMAN_TOLERANCE)
    np.testing.assert_allclose(correlation["pearson"]["matrix"], complete.corr().to_numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.integration
def test_categorical_counts_and_top_values(profiled, frame):
    plan = profiled["columns"]["plan"]
    expected = frame["plan"].value_counts()
    assert plan["type"] == "categorical"
    assert plan["count"] == frame["plan"].notna().sum()
    assert plan["nulls"] == frame["plan"].isna().sum()
    assert plan["distinct"] == 3
    assert plan["top_values"] == [{"value": v, "count": int(c)} for v, c in expected.items()]
    assert profiled["rows"] == len(frame)
    assert list(profiled["columns"]) == [SPACED, "tenure", "charges", "plan", "target"]


@pytest.mark.integration
def test_drift_reference_is_what_reference_profiles_fixes(spark, frame, regression_spec, profiled):
    rows = [tuple(None if pd.isna(v) else v for v in row) for row in frame.itertuples(index=False)]
    df = spark.createDataFrame(rows, regression_spec.ddl_schema)
    columns = [(SPACED, "numeric"), ("tenure", "numeric"), ("charges", "numeric"), ("plan", "categorical"),
               ("target", "numeric")]
    assert profiled["drift_reference"]["columns"] == reference_profiles(df, columns)


@pytest.mark.integration
def test_top_values_break_ties_in_the_columns_own_order(spark):
    spec = make_spec(["x"], ["code"], "label", "binary_classification",
                     {"x": "double", "code": "int", "label": "int"})
    codes = [10, 9, 10, 9, 100, 7, 7, 7]
    stats = compute_stats(spark.createDataFrame([(1.0, c, 0) for c in codes], spec.ddl_schema), spec, top_k=3)
    code = stats["columns"]["code"]
    assert code["distinct"] == 4
    assert code["top_values"] == [{"value": 7, "count": 3}, {"value": 9, "count": 2}, {"value": 10, "count": 2}]
    reference = stats["drift_reference"]["columns"]["code"]
    assert reference["values"] == ["7", "10", "9", "100"] and reference["counts"] == [3, 2, 2, 1, 0]


@pytest.mark.integration
def test_json_is_strict_and_undefined_figures_are_null(spark):
    spec = make_spec(
        ["x", "constant", "(odd) `name`.y"], ["flag"], "label", "binary_classification",
        {"x": "double", "constant": "decimal(10,2)", "(odd) `name`.y": "double", "flag": "boolean", "label": "int"},
    )
    five = Decimal("5.00")
    df = spark.createDataFrame(
        [(1.0, five, 2.0, True, 1), (float("nan"), five, None, None, 0), (3.0, five, 1.0, True, 1)],
        spec.ddl_schema,
    )
    stats = compute_stats(df, spec)
    json.dumps(stats, allow_nan=False)
    x, constant, odd = (stats["columns"][c] for c in ("x", "constant", "(odd) `name`.y"))
    assert (x["count"], x["nulls"], x["mean"]) == (2, 1, 2.0)
    assert (constant["std"], constant["skewness"], constant["kurtosis"]) == (0.0, None, None)
    assert constant["histogram"]["edges"][0] == 4.5 and constant["histogram"]["counts"][10] == 3
    assert odd["sum"] == 3.0
    assert stats["columns"]["flag"]["top_values"] == [{"value": True, "count": 2}]
    assert stats["columns"]["label"]["top_values"] == [{"value": 1, "count": 2}, {"value": 0, "count": 1}]
    pearson = stats["correlation"]["pearson"]["matrix"]
    assert stats["correlation"]["rows_used"] == 2
    assert pearson[0][1] is None and pearson[1][2] is None
    assert pearson[0][2] == pytest.approx(-1.0)


@pytest.mark.integration
def test_single_row_has_null_std_and_correlation(spark):
    spec = make_spec(["a", "b"], [], "y", "regression", {"a": "double", "b": "double", "y": "double"})
    stats = compute_stats(spark.createDataFrame([(1.0, 2.0, 3.0)], spec.ddl_schema), spec)
    json.dumps(stats, allow_nan=False)
    assert stats["columns"]["a"]["std"] is None
    assert stats["correlation"]["pearson"]["matrix"] == [[None, None], [None, None]]


@pytest.mark.integration
def test_categorical_only_spec_has_empty_correlations(spark):
    spec = make_spec([], ["plan"], "y", "multiclass_classification", {"plan": "string", "y": "string"})
    stats = compute_stats(spark.createDataFrame([("a", "x"), ("b", "x")], spec.ddl_schema), spec)
    assert stats["correlation"] == {"rows_used": 0, "pearson": {"columns": [], "matrix": []},
                                    "spearman": {"columns": [], "matrix": []}}
    assert render_report(stats).count("<img ") == 2


@pytest.mark.integration
def test_empty_input_is_a_pipeline_error(spark, regression_spec):
    with pytest.raises(PipelineError, match="no rows"):
        compute_stats(spark.createDataFrame([], regression_spec.ddl_schema), regression_spec)


@pytest.mark.integration
def test_missing_column_is_a_pipeline_error(spark, regression_spec):
    with pytest.raises(PipelineError, match="not in the data"):
        compute_stats(spark.createDataFrame([(1.0,)], "tenure double"), regression_spec)


def test_report_escapes_names_and_draws_every_figure():
    name = "<b>Avg $x$ & (min)</b>"
    stats = {
        "dataset": "demo", "label": "y", "rows": 4,
        "columns": {
            name: {"type": "numeric", "count": 4, "nulls": 0, "mean": 1.5, "std": 1.29, "min": 0.0, "max": 3.0,
                   "sum": 6.0, "skewness": 0.0, "kurtosis": -1.36,
                   "quantiles": {key: 1.0 for key in QUANTILES},
                   "histogram": {"edges": [0.0, 1.5, 3.0], "counts": [2, 2]}},
            "empty": {"type": "numeric", "count": 0, "nulls": 4, "mean": None, "std": None, "min": None,
                      "max": None, "sum": None, "skewness": None, "kurtosis": None,
                      "quantiles": {key: None for key in QUANTILES}, "histogram": {"edges": [], "counts": []}},
            "y": {"type": "categorical", "count": 4, "nulls": 0, "distinct": 2,
                  "top_values": [{"value": "<yes>", "count": 3}, {"value": "no", "count": 1}]},
        },
        "correlation": {
            "rows_used": 0,
            "pearson": {"columns": [name, "empty"], "matrix": [[1.0, None], [None, None]]},
            "spearman": {"columns": [name, "empty"], "matrix": [[1.0, None], [None, None]]},
        },
    }
    page = render_report(stats)
    assert name not in page and "&lt;b&gt;Avg $x$ &amp; (min)&lt;/b&gt;" in page
    assert "<yes>" not in page and "&lt;yes&gt;" in page
    assert page.count("<img ") == 2 + 1 + 2
    assert 'alt="histogram of empty"' in page
    assert page.startswith("<!DOCTYPE html>")
