"""Drift statistics with real Spark against numpy/scipy, and the thresholds on generated demo-size batches: no
false alarm on same-distribution data (several seeds), drift found on the drifted features and only there."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from continuous_training.demo import generate, generate_scoring
from continuous_training.monitoring.drift_statistics import compare, decile_groups, ks_statistic, psi
from continuous_training.profiles import reference_profiles, window_profiles
from continuous_training.spec import Monitoring, load_spec
from scipy import stats

pytestmark = pytest.mark.integration

THRESHOLDS = Monitoring()


def frame(spark, data: pd.DataFrame, kind: str):
    """A Spark frame of one column; a categorical keeps None as null (pandas would make it NaN)."""
    name = data.columns[0]
    spark_type = "double" if kind == "numeric" else "string"
    return spark.createDataFrame([(value,) for value in data[name].astype(object).tolist()], f"{name} {spark_type}")


def profiles(spark, reference: pd.DataFrame, window: pd.DataFrame, columns):
    kind = columns[0][1]
    references = reference_profiles(frame(spark, reference, kind), columns)
    return references, window_profiles(frame(spark, window, kind), references)


def test_ks_and_psi_match_scipy_and_numpy(spark):
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"x": rng.normal(0, 1, 20_000)})
    window = pd.DataFrame({"x": rng.normal(0.3, 1.2, 5_000)})

    references, current = profiles(spark, reference, window, [("x", "numeric")])
    result = compare(references["x"], current["x"], THRESHOLDS)

    # KS is read at the reference's percentile edges: off by at most the largest share of one bin (stated).
    expected_ks = stats.ks_2samp(reference["x"], window["x"]).statistic
    assert abs(result["ks"] - expected_ks) <= result["ks_max_error"]
    assert result["ks"] == pytest.approx(expected_ks, abs=0.01)
    # PSI over the reference's deciles, recomputed with numpy on the same edges: exact.
    edges = np.asarray(references["x"]["edges"])
    groups = decile_groups(references["x"]["counts"])
    decile_edges = [edges[i - 1] for i in range(1, len(groups)) if groups[i] != groups[i - 1]]
    ref_share = np.bincount(np.searchsorted(decile_edges, reference["x"], side="right"), minlength=10) / 20_000
    win_share = np.bincount(np.searchsorted(decile_edges, window["x"], side="right"), minlength=10) / 5_000
    assert np.allclose(ref_share, 0.1, atol=0.002), "the groups are the reference's deciles"
    expected_psi = np.sum((win_share - ref_share) * np.log(win_share / ref_share))
    assert result["psi"] == pytest.approx(expected_psi, rel=1e-9)
    assert result["drifted"]
    assert [reason.split()[0] for reason in result["reasons"]] == ["PSI"] * (result["psi"] > 0.2) + ["KS"]


def test_a_discrete_column_gets_a_bin_per_value_and_an_exact_ks(spark):
    rng = np.random.default_rng(4)
    reference = pd.DataFrame({"calls": rng.poisson(1.0, 10_000).astype(float)})
    window = pd.DataFrame({"calls": rng.poisson(1.6, 3_000).astype(float)})

    references, current = profiles(spark, reference, window, [("calls", "numeric")])

    assert references["calls"]["edges"] == sorted(set(references["calls"]["edges"]))
    assert len(references["calls"]["edges"]) <= reference["calls"].nunique()
    assert sum(references["calls"]["counts"]) == 10_000 and sum(current["calls"]["counts"]) == 3_000
    ks, _ = ks_statistic(references["calls"]["counts"], current["calls"]["counts"])
    assert ks == pytest.approx(stats.ks_2samp(reference["calls"], window["calls"]).statistic, abs=1e-12)


def test_categorical_psi_unseen_share_and_null_rate_are_exact(spark):
    reference = pd.DataFrame({"plan": pd.Series(["a"] * 500 + ["b"] * 300 + ["c"] * 150 + [None] * 50, dtype=object)})
    window = pd.DataFrame({"plan": pd.Series(["a"] * 200 + ["b"] * 300 + ["new"] * 100 + [None] * 400, dtype=object)})

    references, current = profiles(spark, reference, window, [("plan", "categorical")])
    result = compare(references["plan"], current["plan"], THRESHOLDS)

    assert references["plan"]["values"] == ["a", "b", "c"]
    assert current["plan"]["counts"] == [200, 300, 0, 100]
    p = np.array([500, 300, 150, 0]) / 950
    q = np.array([200, 300, 0, 100]) / 600
    p, q = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
    assert result["psi"] == pytest.approx(np.sum((q - p) * np.log(q / p)), rel=1e-12)
    assert result["unseen_share"] == pytest.approx(100 / 600)
    assert result["null_rate_change"] == pytest.approx(0.4 - 0.05)
    assert result["drifted"] and len(result["reasons"]) == 3


def test_empty_sides_give_no_statistic():
    assert psi([0, 0], [1, 2]) is None and ks_statistic([1, 2], [0, 0]) == (None, None)


@pytest.fixture(scope="module")
def demo_reference(spark, tmp_path_factory):
    """The feature profiles of a demo-size training set (100k rows)."""
    root = tmp_path_factory.mktemp("reference")
    spec = load_spec("churn")
    generate(rows=100_000, batches=4, seed=0, data_dir=root)
    frame = spark.read.csv(str(root / "landing" / "churn"), header=True, schema=spec.ddl_schema)
    columns = [(name, "numeric") for name in spec.features.numeric] + [
        (name, "categorical") for name in spec.features.categorical]
    return spec, reference_profiles(frame, columns), root


def check(spark, spec, references, batch) -> dict[str, dict]:
    window = spark.read.csv(str(batch), header=True, schema=", ".join(
        f"`{c}` {t}" for c, t in spec.schema_.items() if c not in ("churned", "customer_value", "plan_tier")))
    current = window_profiles(window, references)
    return {name: compare(references[name], current[name], THRESHOLDS) for name in references}


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_no_false_alarm_on_same_distribution_batches_of_demo_size(spark, demo_reference, seed):
    spec, references, root = demo_reference
    batch = generate_scoring(days=1, rows_per_day=5_000, start_date="2026-11-05", seed=seed, data_dir=root)

    results = check(spark, spec, references, batch.batches[0])

    assert [name for name, result in results.items() if result["drifted"]] == []
    assert max(result["psi"] for result in results.values()) < THRESHOLDS.psi_threshold / 4
    assert max(result.get("ks", 0) for result in results.values()) < THRESHOLDS.ks_threshold / 2


def test_drift_is_found_on_the_drifted_features_and_not_on_the_others(spark, demo_reference):
    spec, references, root = demo_reference
    batch = generate_scoring(days=1, rows_per_day=5_000, start_date="2026-11-06", seed=21, drift=1.0,
                             data_dir=root / "drifted")

    results = check(spark, spec, references, batch.batches[0])

    drifted = {name for name, result in results.items() if result["drifted"]}
    # The generator's drift moves charges, support calls, session length and contracts; never tenure, internet
    # service, payment method or region.
    assert {"monthly_charges", "support_calls", "Avg Session (min)", "contract"} <= drifted
    assert drifted.isdisjoint({"tenure_months", "internet_service", "payment_method", "region"})
    print({name: (round(r["psi"], 3), round(r.get("ks", 0), 3)) for name, r in results.items()})
