"""Path templates from a form or a spec render `{{ ds }}` and `{{ ds_nodash }}` only: anything else (Jinja code
included) is refused in one line naming the field and the template; stage folders stay under DATA_DIR."""

from __future__ import annotations

import copy
import os
import string
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamValidationError
from continuous_training.config import PROJECT_ROOT, Settings
from continuous_training.errors import PipelineError
from continuous_training.orchestration.params import scoring_params
from continuous_training.paths import data_path, dated_path, stage_dir, stage_for
from continuous_training.spec import SpecError, load_spec, parse_spec
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

DAY = date(2026, 11, 5)
CODE = "{{ lipsum.__globals__['os'].getpid() }}"
NOT_DATES = [CODE, "{{ ds | upper }}", "{{ ds.__class__ }}", "{% for x in range(3) %}{{ x }}{% endfor %}",
             "{{ config }}", "{# note #}", "{{ ds_nodash + ds }}", "{{ macros.ds_add(ds, 1) }}", "{{ ds }"]
TEMPLATE_FIELDS = {
    "scoring.path": lambda doc, value: doc["scoring"].__setitem__("path", value),
    "monitoring.labels.path": lambda doc, value: doc["monitoring"]["labels"].__setitem__("path", value),
    "monitoring.labelled_batches": lambda doc, value: doc["monitoring"].__setitem__("labelled_batches", value),
}
BOUNDED = hypothesis_settings(max_examples=50, deadline=None, derandomize=True, database=None)


@pytest.fixture
def document() -> dict[str, Any]:
    return yaml.safe_load((PROJECT_ROOT / "include" / "datasets" / "churn.yaml").read_text())


def test_ds_and_ds_nodash_render_and_the_path_resolves_against_data_dir(settings: Settings) -> None:
    rendered = dated_path("incoming/date={{ ds }}/{{ds_nodash}}-*.csv", DAY, settings)
    assert rendered == str(settings.data_dir / "incoming" / "date=2026-11-05" / "20261105-*.csv")
    assert dated_path("s3a://bucket/{a,b}/{{ ds }}/*.csv", DAY, settings) == "s3a://bucket/{a,b}/2026-11-05/*.csv"


@pytest.mark.parametrize("template", NOT_DATES)
def test_a_template_with_code_or_another_name_is_refused_in_one_line(template: str, settings: Settings) -> None:
    with pytest.raises(PipelineError) as refused:
        dated_path(f"incoming/{template}/*.csv", DAY, settings)
    message = str(refused.value)
    assert "\n" not in message and template in message and "{{ ds }}" in message
    assert str(os.getpid()) not in message


@pytest.mark.parametrize("field", sorted(TEMPLATE_FIELDS))
def test_a_spec_with_code_in_a_path_template_is_refused_at_load_naming_the_field(
        document: dict[str, Any], field: str) -> None:
    TEMPLATE_FIELDS[field](document, f"incoming/{CODE}/*.csv")
    with pytest.raises(SpecError) as refused:
        parse_spec(document, "evil.yaml")
    assert f"field '{field}'" in str(refused.value) and CODE in str(refused.value)


def test_a_spec_given_by_path_with_date_templates_loads_and_renders(tmp_path: Path, document: dict[str, Any],
                                                                    settings: Settings) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({**document, "name": "mine"}))
    spec = load_spec(str(path), settings)
    assert dated_path(spec.scoring.path, DAY, settings).endswith("incoming/churn/date=2026-11-05/*.csv")
    assert dated_path(spec.monitoring.labelled_batches, DAY, settings).endswith("labelled_for=2026-11-05")


def test_the_scoring_input_param_refuses_a_template_with_code() -> None:
    form: dict[str, Param] = scoring_params(None)
    assert form["input"].resolve("incoming/churn/date={{ ds }}/*.csv") == "incoming/churn/date={{ ds }}/*.csv"
    assert form["input"].resolve(None) is None
    for template in NOT_DATES:
        with pytest.raises(ParamValidationError):
            form["input"].resolve(f"incoming/{template}/*.csv")


@pytest.mark.parametrize(("dataset", "stage", "run_id"), [
    ("..", "ingest", "manual__1"), ("../elsewhere", "ingest", "manual__1"), ("/etc", "ingest", "manual__1"),
    ("churn", "../../x", "manual__1"), ("churn", "/tmp", "manual__1"), ("", "ingest", "manual__1"),
    (".hidden", "ingest", "manual__1"), ("churn", "ingest/..", "manual__1"),
])
def test_a_stage_folder_outside_data_dir_is_refused(dataset: str, stage: str, run_id: str,
                                                    settings: Settings) -> None:
    with pytest.raises(PipelineError, match="DATA_DIR"):
        stage_dir(dataset, stage, run_id, settings)


# --- Property tests (bounded) ---

PLACEHOLDERS = st.sampled_from(["{{ ds }}", "{{ds}}", "{{  ds_nodash }}", "{{ds_nodash}}"])
PATH_TEXT = st.text(alphabet=string.ascii_letters + string.digits + "/_-.=*?,[] %#{}é", max_size=12)
JINJA = st.sampled_from(["{{", "}}", "{%", "%}", "{#", "#}"])


@BOUNDED
@given(st.lists(st.one_of(PATH_TEXT, PLACEHOLDERS), max_size=6), st.dates())
def test_property_a_template_renders_only_its_date_placeholders(parts: list[str], day: date) -> None:
    template = "".join(parts)
    try:
        rendered = dated_path(template, day, Settings(data_dir="/data"))
    except PipelineError as refused:
        assert template in str(refused)
        return
    assert "{{" not in rendered and "}}" not in rendered
    expected = template
    for placeholder in ("{{ ds }}", "{{ds}}"):
        expected = expected.replace(placeholder, day.isoformat())
    for placeholder in ("{{  ds_nodash }}", "{{ds_nodash}}"):
        expected = expected.replace(placeholder, day.strftime("%Y%m%d"))
    assert rendered == data_path(expected, Settings(data_dir="/data"))


@BOUNDED
@given(PATH_TEXT, st.one_of(JINJA, st.from_regex(r"\{\{ ?[a-z_.()'\[\]]{1,20} ?\}\}", fullmatch=True)), PATH_TEXT)
def test_property_any_other_template_syntax_is_refused(before: str, other: str, after: str) -> None:
    template = f"{before}{other}{after}"
    if other.replace(" ", "") in ("{{ds}}", "{{ds_nodash}}"):
        return
    with pytest.raises(PipelineError):
        dated_path(template, DAY, Settings(data_dir="/data"))
    with pytest.raises(ParamValidationError):
        scoring_params(None)["input"].resolve(template)


NAME_TEXT = st.text(alphabet=string.ascii_letters + string.digits + "._-/=:@ \\", min_size=0, max_size=12)


@BOUNDED
@given(NAME_TEXT, st.sampled_from(["ingest", "train", stage_for("ingest", True), "monitoring"]), NAME_TEXT)
def test_property_every_stage_folder_stays_under_data_dir(dataset: str, stage: str, run_id: str) -> None:
    settings = Settings(data_dir="/srv/ct/data")
    try:
        folder = stage_dir(dataset, stage, run_id, settings)
    except (PipelineError, ValueError):
        return
    resolved = Path(os.path.normpath(folder))
    assert resolved.is_relative_to(settings.data_dir) and resolved != settings.data_dir
    assert resolved.parts[len(settings.data_dir.parts)] == dataset


YAML_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=8),
                         st.sampled_from(["{{ ds }}", CODE, "2026-13-45", "0 6 * * *", "x.csv", "int", "double"]))
YAML_VALUES = st.recursive(YAML_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=8)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    return found


def _replaced(document: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    return {**document, path[0]: _replaced(document[path[0]], path[1:], value)}


def _churn() -> dict[str, Any]:
    return yaml.safe_load((PROJECT_ROOT / "include" / "datasets" / "churn.yaml").read_text())


@BOUNDED
@given(st.data())
def test_property_any_yaml_document_loads_as_a_spec_or_names_the_field(data: st.DataObject) -> None:
    document = _churn()
    path = data.draw(st.sampled_from(_paths(document)))
    mutated = _replaced(copy.deepcopy(document), path, data.draw(YAML_VALUES))
    try:
        parse_spec(mutated, "generated.yaml")
    except SpecError as error:
        message = str(error)
        assert "\n" not in message
        assert "expected a mapping at the top level" in message or "field '" in message, message


@BOUNDED
@given(st.text(alphabet=string.printable + "é", max_size=60))
def test_property_any_yaml_text_loads_as_a_spec_or_raises_the_spec_error(tmp_path_factory, text: str) -> None:
    path = tmp_path_factory.mktemp("spec") / "generated.yaml"
    path.write_text(text)
    with pytest.raises(SpecError):
        load_spec(str(path), Settings(datasets_dir=path.parent))
