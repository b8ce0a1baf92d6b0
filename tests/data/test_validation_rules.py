"""Validation rules on tiny frames: each rule yields its reason, failures accumulate, nulls are handled."""

from __future__ import annotations

import pytest
from continuous_training.data.ingest import CORRUPT_RECORD
from continuous_training.data.validation import REASONS, annotate, rule_checks
from continuous_training.spec import DatasetSpec, parse_spec

pytestmark = pytest.mark.integration

SCHEMA = {"id": "string", "amount": "double", "score": "double", "ratio": "float", "visits": "int",
          "rooms": "int", "plan": "string", "active": "boolean", "label": "int"}
MALFORMED = "malformed record: does not parse against the schema"
ALL_RULES = {
    "visits": {"not_null": True, "min": 0},
    "amount": {"max": 10},
    "rooms": {"allowed": [1, 2, 3]},
    "plan": {"allowed": ["basic", "pro"]},
    "active": {"allowed": [True]},
    "label": {"allowed": [0, 1]},
}
ONE_FAILURE = {
    "malformed": ({CORRUPT_RECORD: "a,x,0.5,3,basic,true,0"}, MALFORMED),
    "label-null": ({"label": None}, "label 'label' is null"),
    "nan-double": ({"score": float("nan")}, "'score' is NaN or infinite"),
    "inf-double": ({"score": float("inf")}, "'score' is NaN or infinite"),
    "minus-inf-float": ({"ratio": float("-inf")}, "'ratio' is NaN or infinite"),
    "not-null": ({"visits": None}, "'visits' is null"),
    "min": ({"visits": -1}, "'visits' below min 0.0"),
    "max": ({"amount": 10.5}, "'amount' above max 10.0"),
    "allowed-int": ({"rooms": 4}, "'rooms' not in allowed values"),
    "allowed-string": ({"plan": "gold"}, "'plan' not in allowed values"),
    "allowed-bool": ({"active": False}, "'active' not in allowed values"),
    "label-allowed": ({"label": 2}, "'label' not in allowed values"),
}


def make_spec(rules: dict | None = None, id_column: str | None = "id", numeric: tuple[str, ...] = ("visits",),
              label: str = "label", task: str = "binary_classification") -> DatasetSpec:
    return parse_spec({
        "name": "rules_test",
        "source": {"path": "unused.csv", "format": "csv"},
        "schema": SCHEMA,
        "label": label,
        "task": task,
        "id_column": id_column,
        "features": {"numeric": list(numeric), "categorical": ["plan"]},
        "rules": rules or {},
    })


def row(**values) -> dict:
    """A valid row, with `values` replacing some of its fields."""
    base = {"id": "a", "amount": 1.0, "score": 0.0, "ratio": 0.5, "visits": 3, "rooms": 1, "plan": "basic",
            "active": True, "label": 0, CORRUPT_RECORD: None}
    return base | values


def annotated(spark, spec: DatasetSpec, rows: list[dict]) -> list[tuple[str | None, list[str]]]:
    """(id, reasons) of each row after `annotate`, sorted by id."""
    ddl = f"{spec.ddl_schema}, {CORRUPT_RECORD} string"
    frame = spark.createDataFrame([tuple(r.values()) for r in rows], ddl)
    result = [(r["id"], list(r[REASONS])) for r in annotate(frame, spec).select("id", REASONS).collect()]
    return sorted(result, key=lambda item: (item[0] or "", item[1]))


def reasons(spark, spec: DatasetSpec, rows: list[dict]) -> dict[str, list[str]]:
    """Reasons per id, for rows with distinct ids."""
    return dict(annotated(spark, spec, rows))


@pytest.fixture(scope="module")
def one_failure_reasons(spark) -> dict[str, list[str]]:
    """Every ONE_FAILURE row, plus a valid one, annotated in a single pass with all rules."""
    rows = [row(id="valid"), *(row(id=case, **values) for case, (values, _) in ONE_FAILURE.items())]
    return reasons(spark, make_spec(ALL_RULES), rows)


def test_valid_row_has_no_reasons(one_failure_reasons):
    assert one_failure_reasons["valid"] == []


def test_checks_always_present_without_rules(spark):
    spec = make_spec(id_column=None)
    names = [reason for reason, _ in rule_checks(spec)]
    assert names == [
        MALFORMED, "the raw record holds undecodable bytes (U+FFFD)", "label 'label' is null",
        "'id' holds undecodable bytes (U+FFFD)", "'amount' is NaN or infinite", "'score' is NaN or infinite",
        "'ratio' is NaN or infinite", "'plan' holds undecodable bytes (U+FFFD)",
    ]


@pytest.mark.parametrize("case", list(ONE_FAILURE))
def test_each_rule_yields_its_reason(one_failure_reasons, case):
    assert one_failure_reasons[case] == [ONE_FAILURE[case][1]]


def test_bounds_are_inclusive(spark):
    spec = make_spec({"visits": {"min": 0, "max": 3}})
    result = reasons(spark, spec, [row(id="low", visits=0), row(id="high", visits=3)])
    assert result == {"low": [], "high": []}


def test_duplicate_id_flags_every_occurrence(spark):
    spec = make_spec()
    result = annotated(spark, spec, [row(id="dup", amount=1.0), row(id="dup", amount=2.0), row(id="single")])
    assert result == [("dup", ["duplicate 'id'"]), ("dup", ["duplicate 'id'"]), ("single", [])]


def test_unique_rule_on_another_column(spark):
    spec = make_spec({"plan": {"unique": True}}, id_column=None)
    result = reasons(spark, spec, [row(id="a", plan="x"), row(id="b", plan="x"), row(id="c", plan="y")])
    assert result == {"a": ["duplicate 'plan'"], "b": ["duplicate 'plan'"], "c": []}


def test_row_failing_several_rules_lists_all(spark):
    spec = make_spec({"visits": {"min": 0}, "plan": {"allowed": ["basic"]}, "label": {"allowed": [0, 1]}})
    result = reasons(spark, spec, [row(visits=-5, plan="gold", amount=float("nan"), label=7)])
    assert result == {"a": [
        "'amount' is NaN or infinite", "'visits' below min 0.0", "'plan' not in allowed values",
        "'label' not in allowed values",
    ]}


def test_nulls_fail_only_not_null_and_label_checks(spark):
    spec = make_spec({"visits": {"min": 0, "max": 9, "allowed": [1, 2, 3]}, "plan": {"allowed": ["basic"]},
                      "amount": {"min": 0}})
    nulls = row(id="n", visits=None, plan=None, amount=None, score=None, ratio=None)
    assert reasons(spark, spec, [nulls]) == {"n": []}

    strict = make_spec({"visits": {"not_null": True, "min": 0},
                        "plan": {"not_null": True, "allowed": ["basic"]}})
    assert reasons(spark, strict, [nulls]) == {"n": ["'visits' is null", "'plan' is null"]}


def test_nan_also_fails_a_max_bound(spark):
    spec = make_spec({"amount": {"max": 10}})
    result = reasons(spark, spec, [row(amount=float("nan"))])
    assert result == {"a": ["'amount' is NaN or infinite", "'amount' above max 10.0"]}


def test_null_label_is_reported_once_even_with_not_null_rule(spark):
    spec = make_spec({"label": {"not_null": True, "allowed": [0, 1]}})
    assert reasons(spark, spec, [row(label=None)]) == {"a": ["label 'label' is null"]}


def test_null_ids_are_not_duplicates(spark):
    spec = make_spec()
    result = annotated(spark, spec, [row(id=None), row(id=None), row(id="x")])
    assert result == [(None, []), (None, []), ("x", [])]


def beyond_float32(column: str) -> str:
    return f"{column!r} is beyond the float32 range (|x| > 3.4028235e+38)"


def test_values_a_float32_feature_cannot_hold_are_quarantined_rule_or_no_rule(spark):
    spec = make_spec({"amount": {"max": 1e308}}, numeric=("visits", "amount", "ratio"))
    rows = [row(id="fits", amount=-3.4e38), row(id="huge", amount=1e300), row(id="low", amount=-1e39),
            row(id="inf", amount=float("inf")), row(id="not-a-feature", score=1e300), row(id="null", amount=None)]

    assert reasons(spark, spec, rows) == {
        "fits": [], "huge": [beyond_float32("amount")], "low": [beyond_float32("amount")],
        "inf": ["'amount' is NaN or infinite", "'amount' above max 1e+308"], "not-a-feature": [], "null": [],
    }


def test_a_regression_label_beyond_float32_is_quarantined(spark):
    spec = make_spec(label="score", task="regression")

    result = reasons(spark, spec, [row(id="fits", score=1e38), row(id="huge", score=-1e300)])

    assert result == {"fits": [], "huge": [beyond_float32("score")]}
