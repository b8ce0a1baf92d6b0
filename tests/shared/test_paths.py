"""Stage results: written beside their final name and renamed, read back as their dataclass, refused when broken."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from continuous_training.errors import PipelineError
from continuous_training.paths import (
    EVALUATION_FILE,
    VALIDATION_FILE,
    Evaluation,
    ValidationResult,
    read_result,
    write_result,
)

RESULT = ValidationResult(dataset="churn", run_id="manual__1", rows_in=10, valid=9, quarantined=1,
                          quarantine_fraction=0.1, max_quarantine_fraction=0.5, reasons={"'plan' is null": 1})
JOBS = Path(__file__).resolve().parents[2] / "jobs"


def test_a_result_reads_back_as_its_dataclass_and_leaves_no_partial_file(tmp_path):
    path = tmp_path / "validate" / VALIDATION_FILE
    write_result(path, RESULT)
    assert read_result(path, ValidationResult) == RESULT
    assert read_result(path, dict)["reasons"] == {"'plan' is null": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == [VALIDATION_FILE]


def test_a_rewrite_replaces_the_whole_result(tmp_path):
    path = tmp_path / VALIDATION_FILE
    write_result(path, {"note": "x" * 10_000})
    write_result(path, RESULT)
    assert json.loads(path.read_text())["rows_in"] == 10


def test_a_non_finite_number_is_refused_and_the_old_result_kept(tmp_path):
    path = tmp_path / VALIDATION_FILE
    write_result(path, RESULT)
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_result(path, {"metric": float("nan")})
    assert read_result(path, ValidationResult) == RESULT


@pytest.mark.parametrize(("content", "problem"), [
    (None, "No such file"),
    ("{not json", "Expecting property name"),
    ('{"dataset": "churn"}', "missing"),
])
def test_a_missing_or_broken_result_is_an_error_naming_the_file(tmp_path, content, problem):
    path = tmp_path / VALIDATION_FILE
    if content is not None:
        path.write_text(content)
    with pytest.raises(PipelineError, match=f"cannot read {path}: .*{problem}"):
        read_result(path, ValidationResult)


@pytest.mark.parametrize("job", sorted(JOBS.glob("*.py")), ids=lambda path: path.name)
def test_jobs_import_neither_airflow_nor_orchestration(job):
    imported = set()
    for node in ast.walk(ast.parse(job.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert not [name for name in imported
                if name.split(".")[0] == "airflow" or name.startswith("continuous_training.orchestration")]


def test_an_evaluation_round_trips_with_a_null_label(tmp_path):
    evaluation = Evaluation(mlflow_run_id="r1", champion_version=None, metrics={"test_auc": 0.8}, rows_evaluated=7,
                            unknown_labels={None: 2, "maybe": 1})
    path = tmp_path / EVALUATION_FILE
    write_result(path, evaluation)
    assert read_result(path, dict)["rows_unknown_label"] == 3
    assert read_result(path, Evaluation) == evaluation
