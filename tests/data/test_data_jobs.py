"""The data jobs under spark-submit, chained ingest → validate → stats → featurize on generated demo data.

The whole module shares one chain (four spark-submits); the tests then check what each stage left on disk,
reading the Parquet outputs with pyarrow as the Petastorm readers of the training stage do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from continuous_training import demo as demo_data
from continuous_training.config import PROJECT_ROOT, Settings
from continuous_training.data.validation import REASON
from continuous_training.paths import stage_dir

pytestmark = pytest.mark.integration

STAGES = ("ingest", "validate", "stats", "featurize")
SPEC_PATH = PROJECT_ROOT / "include" / "datasets" / "churn.yaml"
RUN_ID = "scheduled__2026-11-21T06:00:00+00:00"
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"
JOB_TIMEOUT_S = 600
POISON, UNFINISHED = "poison.csv", "batch-still-landing"


@dataclass
class Chain:
    demo: demo_data.DemoData
    dirs: dict[str, Path]
    stdout: dict[str, str]
    env: dict[str, str]


def submit(stage: str, dataset: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run jobs/<stage>.py as the DAG does: spark-submit on local[2]."""
    command = [
        str(SPARK_SUBMIT), "--master", "local[2]",
        "--conf", "spark.ui.enabled=false",
        str(PROJECT_ROOT / "jobs" / f"{stage}.py"), "--dataset", dataset, "--run-id", RUN_ID,
    ]
    return subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=JOB_TIMEOUT_S, check=False)


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Chain:
    data_dir = tmp_path_factory.mktemp("jobs") / "data"
    demo = demo_data.generate(rows=3000, batches=2, data_dir=data_dir, bad_fraction=0.01)
    batch = Path(demo.files[0]).parent
    (batch / POISON).write_text("not,the,spec,header\n1,2,3,4\n")
    unfinished = batch.parent / UNFINISHED
    unfinished.mkdir()
    (unfinished / "part-00000.csv").write_bytes(Path(demo.files[0]).read_bytes())
    env = dict(os.environ, DATA_DIR=str(data_dir), PYSPARK_PYTHON=sys.executable,
               PYSPARK_DRIVER_PYTHON=sys.executable)
    stdout = {}
    for stage in STAGES:
        result = submit(stage, str(SPEC_PATH), env)
        assert result.returncode == 0, f"{stage} exited {result.returncode}:\n{result.stdout[-4000:]}\n" \
                                       f"{result.stderr[-4000:]}"
        stdout[stage] = result.stdout
    settings = Settings(data_dir=data_dir)
    return Chain(demo, {stage: stage_dir("churn", stage, RUN_ID, settings) for stage in STAGES}, stdout, env)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_ingest_compacts_every_landing_row(chain):
    manifest = read_json(chain.dirs["ingest"] / "manifest.json")
    assert manifest["rows"] == chain.demo.rows_written == 3000
    assert manifest["files"] == {f"file:{path}": 1500 for path in chain.demo.files}
    assert 0 < manifest["corrupt_rows"] < chain.demo.bad_rows
    assert pq.read_table(chain.dirs["ingest"] / "data").num_rows == 3000
    assert "ingest: 3000 rows" in chain.stdout["ingest"]


def test_a_poison_file_and_an_unfinished_batch_are_named_and_the_run_goes_on(chain):
    """A file whose header is not the spec's is quarantined with its reason (manifest, validation.json, summary);
    a batch folder without `_SUCCESS` is skipped by name; the other files' 3000 rows go on."""
    poison = f"file:{Path(chain.demo.files[0]).parent / POISON}"
    manifest = read_json(chain.dirs["ingest"] / "manifest.json")
    validation = read_json(chain.dirs["validate"] / "validation.json")
    assert list(manifest["quarantined_files"]) == [poison] == list(validation["quarantined_files"])
    assert "header" in validation["quarantined_files"][poison]
    assert [Path(folder).name for folder in manifest["incomplete_batches"]] == [UNFINISHED]
    summary = subprocess.run([sys.executable, "-m", "continuous_training.summary", "--dataset", str(SPEC_PATH)],
                             env=chain.env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout
    assert f"file quarantined: {poison}: " in summary and "1 batch folders without _SUCCESS skipped" in summary


def test_validate_accounts_for_every_row(chain):
    report = read_json(chain.dirs["validate"] / "validation.json")
    valid = pq.read_table(chain.dirs["validate"] / "valid")
    quarantine = pq.read_table(chain.dirs["validate"] / "quarantine")
    assert report["rows_in"] == 3000 == report["valid"] + report["quarantined"]
    assert (valid.num_rows, quarantine.num_rows) == (report["valid"], report["quarantined"])
    assert chain.demo.bad_rows <= report["quarantined"] <= 2 * chain.demo.bad_rows
    assert pc.min(pc.utf8_length(quarantine.column(REASON))).as_py() > 0
    reasons = set(report["reasons"])
    assert {
        "malformed record: does not parse against the schema", "duplicate 'customer_id'",
        "'churned' not in allowed values", "'contract' not in allowed values",
        "'tenure_months' below min 0.0",
    } <= reasons
    assert any(reason.endswith("is NaN or infinite") for reason in reasons)


def test_stats_profiles_the_valid_rows(chain):
    stats = read_json(chain.dirs["stats"] / "stats.json")
    valid_rows = read_json(chain.dirs["validate"] / "validation.json")["valid"]
    assert stats["rows"] == valid_rows
    assert stats["columns"]["churned"]["count"] == valid_rows
    assert set(stats["columns"]) == {
        "tenure_months", "monthly_charges", "total_charges", "support_calls", "Avg Session (min)", "contract",
        "payment_method", "internet_service", "region", "churned",
    }
    page = (chain.dirs["stats"] / "report.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "monthly_charges" in page


def test_featurize_writes_dense_float_splits(chain):
    manifest = read_json(chain.dirs["featurize"] / "featurize.json")
    valid_rows = read_json(chain.dirs["validate"] / "validation.json")["valid"]
    categories = (
        demo_data.CONTRACTS, demo_data.PAYMENT_METHODS, demo_data.INTERNET_SERVICES, demo_data.REGIONS,
    )
    feature_dim = 5 + sum(len(values) + 1 for values in categories)
    assert manifest["feature_dim"] == feature_dim
    assert manifest["classes"] == ["0", "1"] and manifest["num_classes"] == 2
    assert sum(manifest["rows"].values()) == valid_rows

    for split, rows in manifest["rows"].items():
        table = pq.read_table(chain.dirs["featurize"] / split)
        features_type = table.schema.field("features").type
        assert pa.types.is_list(features_type) and features_type.value_type == pa.float32()
        assert table.schema.field("label").type == pa.float32()
        assert table.num_rows == rows > 0
        assert table.column("features").null_count == 0 and table.column("label").null_count == 0
        assert set(pc.list_value_length(table.column("features")).unique().to_pylist()) == {feature_dim}
        values = pc.list_flatten(table.column("features")).to_numpy()
        assert values.size == rows * feature_dim and np.isfinite(values).all()
        assert set(table.column("label").unique().to_pylist()) == {0.0, 1.0}


@pytest.mark.parametrize("kind", ["unknown-name", "invalid-spec"])
def test_bad_dataset_exits_non_zero_with_one_clear_line(chain, tmp_path, kind):
    if kind == "unknown-name":
        dataset, expected = "no_such_dataset", "unknown dataset 'no_such_dataset'"
    else:
        spec = SPEC_PATH.read_text().replace("label: churned", "label: cancelled")
        (tmp_path / "broken.yaml").write_text(spec)
        dataset, expected = str(tmp_path / "broken.yaml"), "label: column 'cancelled' is not in schema"

    result = submit("ingest", dataset, chain.env)

    assert result.returncode == 1
    # spark-submit merges the Python driver's stderr into its own stdout, so both streams are searched.
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if "ERROR continuous_training" in line]
    assert len(errors) == 1 and expected in errors[0], output
    assert "Traceback" not in output
