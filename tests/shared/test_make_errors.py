"""A make target that fails ends with the error that stopped it."""

from __future__ import annotations

import os
import subprocess

from continuous_training.config import PROJECT_ROOT

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

    done = subprocess.run(["make", "--no-print-directory", "train", f"DATASET={spec}"], cwd=PROJECT_ROOT,
                          env={**os.environ, "AIRFLOW_HOME": str(airflow_home)}, capture_output=True, text=True,
                          timeout=300)

    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("make: ***")]
    assert lines[-1].endswith(f"dataset spec {spec} is invalid: field '<root>': Value error, label: column 'b' is "
                              "not in schema"), done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "dag_id" not in done.stdout + done.stderr
