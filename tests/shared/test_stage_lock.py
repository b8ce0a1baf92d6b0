"""Two writers of one stage's output (two attempts after a scheduler restart, two DAGs on one date): the second,
a real process started while the first holds the stage's lock, fails at once naming the lock; the output is the
first run's alone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from continuous_training import demo as demo_data
from continuous_training.config import PROJECT_ROOT, Settings
from continuous_training.paths import INGEST, INGESTED_DATA, MANIFEST_FILE, IngestResult, read_result, stage_dir

RUN_ID = "scheduled__2026-11-21T06:00:00+00:00"
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"


def ingest_command(*launcher: str) -> list[str]:
    return [*launcher, str(PROJECT_ROOT / "jobs" / "ingest.py"), "--dataset", "churn", "--run-id", RUN_ID]


def test_a_second_ingest_of_the_same_run_fails_fast_naming_the_lock_and_the_output_is_one_runs(tmp_path):
    data_dir = tmp_path / "data"
    demo = demo_data.generate(rows=400, batches=2, data_dir=data_dir)
    env = dict(os.environ, DATA_DIR=str(data_dir), PYSPARK_PYTHON=sys.executable,
               PYSPARK_DRIVER_PYTHON=sys.executable)
    lock = data_dir / "_locks" / "churn.ingest.scheduled__2026-11-21T06-00-00+00-00.lock"
    first = subprocess.Popen(ingest_command(str(SPARK_SUBMIT), "--master", "local[2]", "--conf",
                                            "spark.ui.enabled=false"),
                             env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while not lock.exists():
            assert first.poll() is None, f"the first ingest finished without taking the lock {lock}"
            time.sleep(0.1)
        second = subprocess.run(ingest_command(sys.executable), env=env, cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=120, check=False)
        first_output, _ = first.communicate(timeout=600)
    finally:
        first.kill()

    assert first.returncode == 0, first_output[-4000:]
    assert second.returncode == 1, second.stdout + second.stderr
    assert f"holds the lock {lock}" in second.stderr
    out_dir = stage_dir("churn", INGEST, RUN_ID, Settings(data_dir=data_dir))
    manifest = read_result(out_dir / MANIFEST_FILE, IngestResult)
    assert manifest.rows == demo.rows_written == 400
    data = pq.ParquetDataset(out_dir / INGESTED_DATA)
    assert len(data.files) == manifest.output_files and data.read().num_rows == 400
