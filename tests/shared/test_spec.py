"""Dataset specs: the shipped churn specs load, and every kind of mistake names its field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from continuous_training.config import PROJECT_ROOT, Settings
from continuous_training.demo import COLUMNS
from continuous_training.spec import SpecError, load_spec, parse_spec

SHIPPED = {
    "churn": ("binary_classification", "churned", "test_auc"),
    "churn_value": ("regression", "customer_value", "test_r2"),
    "churn_plan": ("multiclass_classification", "plan_tier", "test_accuracy"),
}
DATASETS_DIR = PROJECT_ROOT / "include" / "datasets"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", datasets_dir=DATASETS_DIR)


@pytest.fixture
def document() -> dict[str, Any]:
    return yaml.safe_load((DATASETS_DIR / "churn.yaml").read_text())


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_specs_load(name: str, settings: Settings) -> None:
    spec = load_spec(name, settings)
    task, label, metric = SHIPPED[name]
    assert (spec.name, spec.task, spec.label, spec.promotion_metric) == (name, task, label, metric)
    assert spec.promotion.threshold is not None
    assert spec.registered_model_name == f"{name}_model"
    assert tuple(spec.schema_) == COLUMNS
    assert spec.schema_["signup_date"] == "date"
    assert (spec.id_column, spec.timestamp_column) == ("customer_id", "signup_date")
    assert spec.source.format == "csv" and spec.source.options == {"header": True}
    assert spec.source_path(settings) == str(settings.data_dir / "landing" / "churn" / "*" / "*.csv")
    assert "Avg Session (min)" in spec.features.numeric
    assert "`Avg Session (min)` double" in spec.ddl_schema
    assert spec.rules["customer_id"].not_null and spec.rules["customer_id"].unique
    assert spec.rules[label].not_null


def test_no_spec_uses_another_label_as_a_feature(settings: Settings) -> None:
    specs = [load_spec(name, settings) for name in SHIPPED]
    labels = {spec.label for spec in specs}
    for spec in specs:
        assert not labels & set(spec.feature_columns), spec.name
        assert spec.id_column not in spec.feature_columns and spec.timestamp_column not in spec.feature_columns


def test_load_by_path(tmp_path: Path, document: dict[str, Any], settings: Settings) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({**document, "name": "mine"}))
    assert load_spec(str(path), settings).name == "mine"


def _mutate(document: dict[str, Any], change: str) -> dict[str, Any]:
    doc = copy.deepcopy(document)
    if change == "unknown_type":
        doc["schema"]["region"] = "varchar2"
    elif change == "label_not_in_schema":
        doc["label"] = "cancelled"
    elif change == "feature_not_in_schema":
        doc["features"]["numeric"].append("age")
    elif change == "numeric_feature_string":
        doc["features"]["numeric"].append("payment_method")
        doc["features"]["categorical"].remove("payment_method")
    elif change == "min_above_max":
        doc["rules"]["tenure_months"] = {"min": 72, "max": 0}
    elif change == "missing_task":
        del doc["task"]
    elif change == "unknown_task":
        doc["task"] = "clustering"
    elif change == "label_is_feature":
        doc["features"]["numeric"].append("churned")
    elif change == "rule_not_in_schema":
        doc["rules"]["age"] = {"min": 0}
    elif change == "unknown_field":
        doc["labels"] = ["churned"]
    elif change == "string_regression_label":
        doc["task"] = "regression"
        doc["label"] = "plan_tier"
    elif change == "bad_format":
        doc["source"]["format"] = "xlsx"
    elif change == "max_categories_zero":
        doc["features"]["max_categories"] = 0
    return doc


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("unknown_type", ["field 'schema'", "'region'", "unknown Spark SQL type 'varchar2'"]),
        ("label_not_in_schema", ["label", "'cancelled'", "not in schema"]),
        ("feature_not_in_schema", ["features.numeric", "'age'", "not in schema"]),
        ("numeric_feature_string", ["features.numeric", "'payment_method'", "non-numeric type string"]),
        ("min_above_max", ["field 'rules.tenure_months'", "greater than max"]),
        ("missing_task", ["field 'task'", "Field required"]),
        ("unknown_task", ["field 'task'", "'binary_classification'"]),
        ("label_is_feature", ["features", "'churned'", "cannot also be a feature"]),
        ("rule_not_in_schema", ["rules.age", "not in schema"]),
        ("unknown_field", ["field 'labels'", "Extra inputs"]),
        ("string_regression_label", ["label", "numeric label"]),
        ("bad_format", ["field 'source.format'"]),
        ("max_categories_zero", ["field 'features.max_categories'", "greater than or equal to 1"]),
    ],
)
def test_spec_errors_name_the_field(document: dict[str, Any], change: str, expected: list[str]) -> None:
    with pytest.raises(SpecError) as error:
        parse_spec(_mutate(document, change), "test.yaml")
    message = str(error.value)
    assert "dataset spec test.yaml is invalid" in message
    for fragment in expected:
        assert fragment in message


def test_max_categories_defaults_to_100(document: dict[str, Any]) -> None:
    assert "max_categories" not in document["features"]
    assert parse_spec(document).features.max_categories == 100
    capped = copy.deepcopy(document)
    capped["features"]["max_categories"] = 50
    assert parse_spec(capped).features.max_categories == 50


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(SpecError, match="expected a mapping at the top level, got list"):
        parse_spec(["name", "churn"], "list.yaml")


def test_bad_yaml_is_reported_with_its_path(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: churn\nschema: {customer_id: string\nlabel: [\n")
    with pytest.raises(SpecError, match=r"broken\.yaml is not valid YAML"):
        load_spec(str(path), settings)


def test_unknown_dataset_name_lists_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text("name: other\n")
    with pytest.raises(SpecError, match=r"unknown dataset 'nope'.*\['other'\]"):
        load_spec("nope", Settings(datasets_dir=tmp_path))


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(str(tmp_path / "absent.yaml"), Settings(datasets_dir=tmp_path))


@pytest.mark.parametrize(("training", "expected"), [
    ({}, "field 'training': Value error, give a schedule, on_new_data: true, or both"),
    ({"schedule": "every tuesday"}, "field 'training.schedule'"),
    ({"on_new_data": True, "params": {"epochz": 3}}, "unknown training params ['epochz']"),
    ({"on_new_data": "sometimes"}, "field 'training.on_new_data'"),
])
def test_training_section_errors_name_the_field(document: dict[str, Any], training: dict, expected: str) -> None:
    with pytest.raises(SpecError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        parse_spec({**document, "training": training})


def test_landing_area_is_the_source_up_to_its_first_wildcard(document: dict[str, Any], settings: Settings) -> None:
    spec = parse_spec(document)
    assert spec.landing_dir(settings) == settings.data_dir / "landing" / "churn"
    explicit = parse_spec({**document, "training": {"on_new_data": True, "landing": "/srv/drop/churn"}})
    assert explicit.landing_dir(settings) == Path("/srv/drop/churn")
    single_file = parse_spec({**document, "source": {**document["source"], "path": "exports/churn.csv"}})
    assert single_file.landing_dir(settings) == settings.data_dir / "exports"
