"""The reference pages generated from the code are those in docs/, list every setting and spec field, and the
spec's JSON Schema accepts the shipped specs and names the field of a wrong one."""

from __future__ import annotations

import json

import jsonschema
import pytest
import reference_docs
import yaml
from continuous_training import spec
from continuous_training.config import PROJECT_ROOT, Settings


def test_the_generated_reference_pages_in_docs_are_up_to_date():
    for name, text in reference_docs.pages().items():
        assert (reference_docs.DOCS / name).read_text() == text, f"docs/{name} is out of date: run `make docs`"


def test_every_setting_is_listed_with_its_variable_default_and_description():
    page = (reference_docs.DOCS / reference_docs.CONFIGURATION).read_text()
    rows = {line.split("|")[1].strip(): line for line in page.splitlines() if line.startswith("| `")}
    for name, field in Settings.model_fields.items():
        assert f"`{name.upper()}`" in rows, name
        assert field.description and reference_docs._cell(field.description) in rows[f"`{name.upper()}`"], name


def test_every_spec_field_is_in_the_reference():
    page = (reference_docs.DOCS / reference_docs.SPEC_REFERENCE).read_text()
    for name in ["DatasetSpec", *reference_docs.spec_schema()["$defs"]]:
        section = page.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        for field_name, field in getattr(spec, name).model_fields.items():
            assert f"| `{field.alias or field_name}` |" in section, (name, field_name)


def test_the_json_schema_accepts_the_shipped_specs_and_names_the_field_of_a_wrong_one():
    schema = json.loads((reference_docs.DOCS / reference_docs.SPEC_SCHEMA).read_text())
    shipped = sorted((PROJECT_ROOT / "include" / "datasets").glob("*.yaml"))
    assert shipped
    for path in shipped:
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    wrong = yaml.safe_load(shipped[0].read_text())
    wrong.setdefault("monitoring", {})["metric_drop"] = -1
    with pytest.raises(jsonschema.ValidationError) as refused:
        jsonschema.validate(wrong, schema)
    assert list(refused.value.absolute_path) == ["monitoring", "metric_drop"]
