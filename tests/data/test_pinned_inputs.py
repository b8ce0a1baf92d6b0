"""A run's input files are pinned: files that land after its first attempt belong to the next run, and a pinned
file that changed or vanished stops a rerun."""

from __future__ import annotations

import json

import pytest
from continuous_training.data.ingest import ingest
from continuous_training.demo import generate
from continuous_training.errors import PipelineError
from continuous_training.paths import stage_dir
from continuous_training.spec import load_spec

pytestmark = pytest.mark.integration

RUN_ID = "manual__2026-11-21T10:00:00+00:00"


def ingest_run(spark, settings, run_id: str = RUN_ID):
    spec = load_spec("churn", settings)
    return ingest(spark, spec, run_id, stage_dir(spec.name, "ingest", run_id, settings), settings)


def test_files_landing_after_the_first_attempt_belong_to_the_next_run(spark, settings):
    generate(rows=300, batches=2, seed=1, data_dir=settings.data_dir)
    first = ingest_run(spark, settings)
    late = generate(rows=40, batches=1, start_date="2026-12-01", seed=2, data_dir=settings.data_dir, overwrite=False)

    retried = ingest_run(spark, settings)
    next_run = ingest_run(spark, settings, "manual__2026-11-22T10:00:00+00:00")

    assert first.rows == retried.rows == 300
    assert retried.files == first.files and retried.input_fingerprint == first.input_fingerprint
    assert next_run.rows == 340
    assert {f"file:{path}" for path in late.files} <= set(next_run.files)
    assert next_run.input_fingerprint != first.input_fingerprint
    pinned = json.loads((stage_dir("churn", "ingest", RUN_ID, settings) / "inputs.json").read_text())
    assert [file["path"] for file in pinned["files"]] == sorted(first.files)
    assert all(file["size"] > 0 and file["modified_ms"] > 0 for file in pinned["files"])


def test_a_pinned_file_that_changed_or_vanished_stops_the_rerun(spark, settings):
    demo = generate(rows=300, batches=2, seed=1, data_dir=settings.data_dir)
    ingest_run(spark, settings)
    changed = demo.files[0]
    with changed.open("a") as handle:
        handle.write(changed.read_text().splitlines()[1] + "\n")

    with pytest.raises(PipelineError, match=r"changed since the first attempt of this run pinned it .*trigger a new"):
        ingest_run(spark, settings)
    changed.unlink()
    with pytest.raises(PipelineError, match="no longer exists; trigger a new run"):
        ingest_run(spark, settings)
