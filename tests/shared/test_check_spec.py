"""`make check-spec SPEC=…` validates a spec and lists what its source glob finds, without running a DAG."""

from __future__ import annotations

import subprocess

from continuous_training.config import PROJECT_ROOT
from continuous_training.demo import generate
from continuous_training.paths import SUCCESS_MARKER
from make_runs import last_error_line, make


def check_spec(spec: str, data_dir) -> subprocess.CompletedProcess:
    return make("check-spec", f"SPEC={spec}", DATA_DIR=str(data_dir))


def test_a_valid_spec_is_reported_with_the_batches_its_source_finds_and_those_it_skips(tmp_path):
    generate(rows=200, batches=3, seed=1, data_dir=tmp_path)
    unfinished = sorted((tmp_path / "landing" / "churn").iterdir())[-1]
    (unfinished / SUCCESS_MARKER).unlink()

    done = check_spec("churn", tmp_path)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"churn ({PROJECT_ROOT / 'include' / 'datasets' / 'churn.yaml'}): valid, binary_classification"
    assert f"  source     {tmp_path}/landing/churn/*/*.csv: 2 files in 2 batch folders with {SUCCESS_MARKER}; " \
           f"1 folder without it is skipped ({unfinished.name})" in lines


def test_an_invalid_spec_fails_with_its_error_naming_the_field(tmp_path):
    spec = tmp_path / "broken.yaml"
    spec.write_text("name: broken\nsource: {path: x.csv, format: csv}\nschema: {a: int}\nlabel: a\n"
                    "task: regression\nfeatures: {numeric: [a], categorical: [c]}\n")

    done = check_spec(str(spec), tmp_path)

    assert done.returncode != 0
    expected = (f"dataset spec {spec} is invalid: field '<root>': Value error, features.categorical: column 'c' is "
                "not in schema")
    assert last_error_line(done.stderr).endswith(expected), done.stderr
    assert "Traceback" not in done.stderr
