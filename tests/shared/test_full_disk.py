"""The data jobs under spark-submit when DATA_DIR (a small tmpfs) fills up, then turns read-only.

Each failure must end in one line naming the path and the cause, leave no empty or partial result file, and the
same job of the same run must succeed once the space (or write access) is back.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from continuous_training import demo as demo_data
from continuous_training.cli import storage_failure
from continuous_training.config import PROJECT_ROOT, Settings
from continuous_training.paths import (
    INGEST,
    INGESTED_DATA,
    INPUTS_FILE,
    MANIFEST_FILE,
    VALIDATE,
    VALIDATION_FILE,
    stage_dir,
)

pytestmark = pytest.mark.integration

SPEC_PATH = PROJECT_ROOT / "include" / "datasets" / "churn.yaml"
RUN_ID = "scheduled__2026-11-21T06:00:00+00:00"
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
ROWS, TMPFS_SIZE = 2000, "8m"
# Room for the small JSON files ingest writes first, not for its Parquet output: the disk fills inside Spark's write.
HEADROOM = 64 * 1024
FULL, READ_ONLY = "No space left on device", "Read-only file system"


def submit(stage: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run jobs/<stage>.py as the DAG does: spark-submit on local[2]."""
    command = [str(SPARK_SUBMIT), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
               str(PROJECT_ROOT / "jobs" / f"{stage}.py"), "--dataset", str(SPEC_PATH), "--run-id", RUN_ID]
    return subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                          check=False)


def mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def data_dir(tmp_path, request) -> Path:
    """A small tmpfs mounted on a tmp folder, unmounted when the test ends."""
    if shutil.which("mount") is None:
        pytest.skip("no mount command to mount a small tmpfs as DATA_DIR")
    root = tmp_path / "data"
    root.mkdir()
    mounted = mount("-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(root))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs as DATA_DIR: {mounted.stderr.strip() or mounted.returncode}")
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(root)], check=False))
    return root


def fill(root: Path, headroom: int) -> Path:
    """A file taking all but `headroom` bytes of the file system holding `root`."""
    filler = root / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (1 << 16, 4096, 1):
            try:
                while out.write(b"\0" * size):
                    pass
            except OSError:
                pass
    os.truncate(filler, max(filler.stat().st_size - headroom, 0))
    return filler


def assert_one_clear_line(result: subprocess.CompletedProcess, cause: str, root: Path) -> None:
    """The job failed with one error line of its own naming `root` and `cause`, and no Python trace."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    errors = [line for line in output.splitlines() if " ERROR continuous_training" in line]
    assert len(errors) == 1, f"error lines: {errors}\n{output[-3000:]}"
    assert cause in errors[0] and str(root) in errors[0], f"error line: {errors[0]!r}"
    assert "Traceback" not in output, output[-3000:]


def assert_results_whole(root: Path) -> None:
    """Every result JSON under `root` is absent or whole; no staging file is left beside one."""
    for path in root.rglob("*.json"):
        assert path.stat().st_size > 0, f"empty result {path}"
        json.loads(path.read_text())
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".partial")]
    assert not leftovers, leftovers


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_a_full_or_read_only_disk_is_told_apart_from_other_errors():
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as full:
            raise RuntimeError("while writing the result") from full
    except RuntimeError as wrapped:
        assert storage_failure(wrapped) == FULL
    read_only = OSError(errno.EROFS, os.strerror(errno.EROFS), "/data/x.lock")
    assert storage_failure(read_only) == f"{READ_ONLY} (/data/x.lock)"
    assert storage_failure(RuntimeError(f"Caused by: java.io.IOException: {FULL}\n\tat ...")) == FULL
    assert storage_failure(OSError(errno.ENOENT, os.strerror(errno.ENOENT), "/data/x")) is None


def test_full_then_read_only_data_dir_fails_in_one_line_and_the_rerun_succeeds(data_dir):
    demo_data.generate(rows=ROWS, batches=1, data_dir=data_dir)
    env = dict(os.environ, DATA_DIR=str(data_dir), PYSPARK_PYTHON=sys.executable,
               PYSPARK_DRIVER_PYTHON=sys.executable)
    settings = Settings(data_dir=data_dir)
    ingest_dir, validate_dir = (stage_dir("churn", stage, RUN_ID, settings) for stage in (INGEST, VALIDATE))

    filler = fill(data_dir, HEADROOM)
    assert_one_clear_line(submit("ingest", env), FULL, data_dir)
    assert_results_whole(data_dir)
    assert not (ingest_dir / MANIFEST_FILE).exists() and not (ingest_dir / INGESTED_DATA / "_SUCCESS").exists()
    assert (ingest_dir / INPUTS_FILE).exists(), "the disk filled before Spark's write, not inside it"

    filler.unlink()
    rerun = submit("ingest", env)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    manifest = json.loads((ingest_dir / MANIFEST_FILE).read_text())
    assert manifest["rows"] == ROWS

    assert mount("-o", "remount,ro", str(data_dir)).returncode == 0
    before = snapshot(data_dir)
    assert_one_clear_line(submit("validate", env), READ_ONLY, data_dir)
    assert snapshot(data_dir) == before

    assert mount("-o", "remount,rw", str(data_dir)).returncode == 0
    rerun = submit("validate", env)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    validation = json.loads((validate_dir / VALIDATION_FILE).read_text())
    assert validation["rows_in"] == ROWS == validation["valid"] + validation["quarantined"]
    assert_results_whole(data_dir)
