"""A scoring run waits, deferred, for its batch's `_SUCCESS` marker up to the spec's deadline, through the real
`airflow dags test` (which runs a deferred task's trigger in line, as the triggerer would): a late batch is waited
for and read only once its marker lands; past the deadline the run fails at once naming the date and the marker.
No model holds the alias of these specs, so a run that got past the wait fails on that, which proves it resolved."""

from __future__ import annotations

import json
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from continuous_training.demo import write_churn_spec
from continuous_training.paths import SUCCESS_MARKER

pytestmark = pytest.mark.integration

DEFERRED = "[DAG TEST] running trigger in line"
NO_MODEL = "no version of model 'never_trained' holds @champion"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, airflow_env):
    """An isolated Airflow home (migrated once) and a churn spec named `late` that no model was trained for."""
    root = tmp_path_factory.mktemp("scoring_wait")
    env = airflow_env(root, LANDING_POLL_SECONDS="1", TASK_RETRIES="2")
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    return env, write_churn_spec(root, "late", model_name="never_trained")


def batch_folder(env: dict[str, str], day: str) -> Path:
    """A day's batch to score, its data file written and no marker yet."""
    folder = Path(env["DATA_DIR"]) / "incoming" / "late" / f"date={day}"
    folder.mkdir(parents=True)
    (folder / "part-00000.csv").write_text("customer_id,tenure_months\nS1,3\n")
    return folder


def scoring_run(env: dict[str, str], spec: Path, logical_date: str, on_line=None) -> str:
    """The output of one `airflow dags test batch_scoring` run; `on_line(line)` sees each line as it comes."""
    process = subprocess.Popen(
        ["airflow", "dags", "test", "batch_scoring", logical_date, "--conf", json.dumps({"dataset": str(spec)})],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    timer = threading.Timer(300, process.kill)
    timer.start()
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if on_line:
                on_line(line)
        process.wait()
    finally:
        timer.cancel()
    return "".join(lines)


def test_a_late_batch_is_waited_for_deferred_and_read_only_once_its_marker_lands(airflow) -> None:
    env, spec = airflow
    now = datetime.now(UTC).replace(microsecond=0)
    folder = batch_folder(env, now.date().isoformat())
    marked: list[bool] = []

    def land_marker_once_deferred(line: str) -> None:
        if DEFERRED in line and not marked:
            marked.append((folder / SUCCESS_MARKER).exists())
            (folder / SUCCESS_MARKER).touch()

    output = scoring_run(env, spec, now.isoformat(), land_marker_once_deferred)

    assert marked == [False], f"the run did not wait for the marker:\n{output[-3000:]}"
    assert output.index(DEFERRED) < output.index(NO_MODEL), "resolved only after the marker landed"
    assert output.count("[DAG TEST] end task task_id=resolve_scoring_run") == 1


def test_past_the_deadline_a_batch_without_its_marker_fails_at_once_naming_date_and_marker(airflow) -> None:
    env, spec = airflow
    folder = batch_folder(env, "2026-11-05")

    output = scoring_run(env, spec, "2026-11-05")

    assert DEFERRED not in output and NO_MODEL not in output, "the unmarked folder was not read"
    assert (f"no batch to score for 2026-11-05: {folder / SUCCESS_MARKER} did not appear by "
            "2026-11-05T04:00:00+00:00 (scoring.deadline_hours: 4)") in output
    assert output.count("[DAG TEST] end task task_id=resolve_scoring_run") == 1, "no retries"
