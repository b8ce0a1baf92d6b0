"""A result file a kill or a full disk left damaged (0 bytes, half a document) is skipped and named by the readers
that scan many of them: the drift window's scored dates, the latest drift check of a date, the run summary."""

from __future__ import annotations

import json
import logging
import os
from datetime import date

import pytest
from continuous_training.monitoring.drift import DRIFT_FILE, drift_window
from continuous_training.monitoring.retraining import latest_drift_check
from continuous_training.paths import INGEST, MANIFEST_FILE, MONITORING, STATS, STATS_FILE, stage_dir, write_result
from continuous_training.serving import scored
from continuous_training.serving.scored import PARTITION, SUMMARY_FILE, partition_dir
from continuous_training.spec import load_spec
from continuous_training.summary import summarize

DAYS = [date(2026, 11, 4), date(2026, 11, 5), date(2026, 11, 6)]
MODEL = {"name": "churn_classifier", "version": "1", "run_id": "r1", "alias": "champion"}
DAMAGED = {"zero_bytes": "", "half_written": '{"scored_for": "2026-11-06", "mod'}


@pytest.mark.parametrize("content", DAMAGED.values(), ids=DAMAGED.keys())
def test_a_damaged_scoring_summary_is_skipped_and_named_and_its_date_is_not_scored(settings, caplog, content):
    spec = load_spec("churn")
    for day in DAYS[:2]:
        write_result(partition_dir(spec, day, settings) / SUMMARY_FILE, {PARTITION: day.isoformat(), "model": MODEL})
    damaged = partition_dir(spec, DAYS[2], settings) / SUMMARY_FILE
    damaged.parent.mkdir(parents=True)
    damaged.write_text(content)

    with caplog.at_level(logging.WARNING):
        window, left_out = drift_window(spec, DAYS[2], 3, settings)

    assert [scored.day for scored in window] == DAYS[:2] and left_out == []
    assert f"skipping the damaged scoring summary {damaged}" in caplog.text
    found = scored.scored_partitions(spec, settings)
    assert [scored.day for scored in found.dates] == DAYS[:2]
    assert [(entry.path, entry.day) for entry in found.damaged] == [(damaged, DAYS[2])]


def test_a_damaged_drift_check_is_skipped_when_finding_the_latest_check_of_a_date(settings, caplog):
    spec = load_spec("churn")
    good = stage_dir(spec.name, MONITORING, "scheduled__1", settings) / DRIFT_FILE
    write_result(good, {"checked_for": "2026-11-06", "mlflow_run_id": "m1"})
    damaged = stage_dir(spec.name, MONITORING, "scheduled__2", settings) / DRIFT_FILE
    damaged.parent.mkdir(parents=True)
    damaged.write_text("")
    os.utime(damaged, (good.stat().st_mtime + 10, good.stat().st_mtime + 10))

    with caplog.at_level(logging.WARNING):
        check = latest_drift_check("churn", DAYS[2], settings)

    assert check["mlflow_run_id"] == "m1"
    assert f"skipping the damaged drift check {damaged}" in caplog.text


def test_a_damaged_stage_result_is_named_and_the_rest_of_the_run_summarised(settings, caplog):
    run_id = "manual__1"
    write_result(stage_dir("churn", INGEST, run_id, settings) / MANIFEST_FILE, {
        "dataset": "churn", "run_id": run_id, "source": "landing", "rows": 10, "corrupt_rows": 0,
        "files": {"a.csv": 10}, "input_fingerprint": "f", "output": "data", "output_files": 1})
    damaged = stage_dir("churn", STATS, run_id, settings) / STATS_FILE
    damaged.parent.mkdir(parents=True)
    damaged.write_text("")

    with caplog.at_level(logging.WARNING):
        text = summarize("churn", run_id, settings)

    assert "10 rows from 1 files" in text
    assert f"cannot read {damaged}" in caplog.text
    assert json.loads((stage_dir("churn", INGEST, run_id, settings) / MANIFEST_FILE).read_text())["rows"] == 10
