"""A make target that fails ends with the error that stopped it."""

from __future__ import annotations

from make_runs import last_error_line, make

INVALID_SPEC = """\
name: broken
source: {path: broken/*.csv, format: csv}
schema: {a: int}
label: b
task: regression
features: {numeric: [a]}
"""


def test_make_train_with_an_invalid_spec_ends_with_the_spec_error(tmp_path):
    spec = tmp_path / "broken.yaml"
    spec.write_text(INVALID_SPEC)
    airflow_home = tmp_path / "airflow"
    airflow_home.mkdir()
    (airflow_home / ".db-migrated").touch()  # nothing of Airflow runs before the spec is read

    done = make("train", f"DATASET={spec}", AIRFLOW_HOME=str(airflow_home))

    assert done.returncode != 0
    expected = f"dataset spec {spec} is invalid: field '<root>': Value error, label: column 'b' is not in schema"
    assert last_error_line(done.stderr).endswith(expected), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "dag_id" not in done.stdout + done.stderr
