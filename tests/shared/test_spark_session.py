"""The jobs' Spark session under spark-submit: shuffle partitions sized for a local master, a set value kept."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
SCRIPT = """
from continuous_training.spark import build_spark_session
spark = build_spark_session("shuffle-partitions")
print("shuffle partitions:", spark.conf.get("spark.sql.shuffle.partitions"))
spark.stop()
"""


def shuffle_partitions(tmp_path: Path, *spark_submit_args: str) -> str:
    script = tmp_path / "session.py"
    script.write_text(SCRIPT)
    done = subprocess.run([str(SPARK_SUBMIT), *spark_submit_args, "--conf", "spark.ui.enabled=false", str(script)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split("shuffle partitions:")[1].strip()


def test_local_master_gets_twice_its_cores_and_a_set_value_is_kept(tmp_path):
    assert shuffle_partitions(tmp_path, "--master", "local[3]") == "6"
    assert shuffle_partitions(tmp_path, "--master", "local[3]", "--conf", "spark.sql.shuffle.partitions=7") == "7"


def test_a_jobs_log_names_its_spark_application_master_and_ui(tmp_path):
    script = tmp_path / "job.py"
    script.write_text("from continuous_training.cli import run_job\n"
                      "from continuous_training.spark import build_spark_session\n"
                      "run_job(lambda: build_spark_session('named').stop())\n")
    done = subprocess.run([str(SPARK_SUBMIT), "--master", "local[1]", "--conf", "spark.ui.port=0", str(script)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"Spark application local-\d+ \(named\) on local\[1\], UI http://\S+:\d+",
                     done.stdout + done.stderr), done.stdout[-2000:] + done.stderr[-3000:]
