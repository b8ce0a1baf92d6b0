"""Retention on real folders in a temporary DATA_DIR and a real MLflow registry on SQLite: what cleanup keeps (the
last N runs, registered versions' records, the champion's and challenger's test split, the last M days of scoring
and monitoring), that a dry run lists exactly what the real run removes, that a held stage lock or an unreadable
registry protects everything, the storage bound over simulated days, and the `cleanup` DAG through `dags test`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from continuous_training.config import PROJECT_ROOT, Settings
from continuous_training.errors import PipelineError
from continuous_training.paths import (
    EVALUATE,
    FEATURIZE,
    INGEST,
    MONITORING,
    PROMOTE,
    STATS,
    TRAIN,
    VALIDATE,
    run_dir_name,
    stage_dir,
    stage_for,
)
from continuous_training.registry import DATA_RUN_TAG
from continuous_training.retention import cleanup
from continuous_training.serving.scored import partition_dir
from continuous_training.spec import load_spec
from continuous_training.tracking import AIRFLOW_RUN_ID_TAG, CHALLENGER, CHAMPION, mlflow_client, start_training_run

pytestmark = pytest.mark.integration

DATASET = "ret"
START = datetime(2026, 11, 1, 6, tzinfo=UTC)
# What a training run writes per stage: (file or folder, bytes); folders hold one data file.
RECORDS = {INGEST: ["inputs.json", "manifest.json"], VALIDATE: ["validation.json"], STATS: ["stats.json"],
           FEATURIZE: ["featurize.json"], TRAIN: [], EVALUATE: ["evaluation.json"], PROMOTE: ["promotion.json"]}
BULK = {INGEST: ["data"], VALIDATE: ["valid", "quarantine"], FEATURIZE: ["raw_splits", "train", "validation", "test"],
        TRAIN: ["checkpoints"]}


def make_settings(tmp_path: Path, **retention) -> Settings:
    datasets = tmp_path / "datasets"
    datasets.mkdir(exist_ok=True)
    (datasets / f"{DATASET}.yaml").write_text(yaml.safe_dump({
        "name": DATASET, "source": {"path": "landing/ret/*.csv", "format": "csv"},
        "schema": {"id": "string", "x": "double", "label": "string"}, "label": "label",
        "task": "binary_classification", "id_column": "id", "features": {"numeric": ["x"]}}))
    settings = Settings(data_dir=tmp_path / "data", mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                        mlflow_artifact_root=tmp_path / "artifacts", datasets_dir=datasets, **retention)
    mlflow_client(settings).search_experiments()  # creates the store
    return settings


def stamp(path: Path, when: datetime) -> None:
    os.utime(path, (when.timestamp(), when.timestamp()))


def write_training_run(settings: Settings, run_id: str, when: datetime, bulk_bytes: int = 100) -> None:
    """The stage folders of one training run, dated `when`."""
    for stage in RECORDS:
        folder = stage_dir(DATASET, stage, run_id, settings)
        folder.mkdir(parents=True, exist_ok=True)
        for name in RECORDS[stage]:
            (folder / name).write_text("{}")
        for name in BULK.get(stage, []):
            (folder / name).mkdir(exist_ok=True)
            (folder / name / "part-0.parquet").write_bytes(b"x" * bulk_bytes)
        stamp(folder, when)


def register(settings: Settings, run_id: str, alias: str | None = None) -> str:
    """A real registered version whose training run is the Airflow run `run_id`."""
    client = mlflow_client(settings)
    name = load_spec(DATASET, settings).registered_model_name
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    run = start_training_run(client, DATASET, run_id, {}, settings)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id,
                                          tags={DATA_RUN_TAG: run_id, AIRFLOW_RUN_ID_TAG: run_id})
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return version.version


def files(settings: Settings) -> set[Path]:
    return {path for path in settings.data_dir.rglob("*") if "_locks" not in path.parts}


def run_ids(count: int) -> list[str]:
    return [f"scheduled__2026-11-{day:02d}T06:00:00+00:00" for day in range(1, count + 1)]


def test_keeps_the_last_n_runs_and_what_registered_versions_champion_and_challenger_need(tmp_path):
    settings = make_settings(tmp_path, retention_runs=2)
    runs = run_ids(6)
    for day, run_id in enumerate(runs):
        write_training_run(settings, run_id, START + timedelta(days=day))
    register(settings, runs[1])
    register(settings, runs[2], CHAMPION)
    register(settings, runs[3], CHALLENGER)

    cleanup(DATASET, START + timedelta(days=6), settings=settings)

    def left(run_id: str, stage: str) -> set[str]:
        folder = stage_dir(DATASET, stage, run_id, settings)
        return {path.name for path in folder.iterdir()} if folder.exists() else set()

    for stage in RECORDS:
        assert left(runs[0], stage) == set(), f"{stage}: an unregistered old run goes"
        for recent in runs[4:]:
            assert left(recent, stage) == {*RECORDS[stage], *BULK.get(stage, [])}, f"{stage}: the last 2 stay whole"
        assert left(runs[1], stage) == set(RECORDS[stage]), f"{stage}: a registered run keeps its records only"
        for serving in runs[2:4]:
            whole = {*RECORDS[stage], *BULK.get(stage, [])}
            assert left(serving, stage) == (whole if stage == FEATURIZE else set(RECORDS[stage])), stage
    assert not (settings.data_dir / "_trash").exists() or not any((settings.data_dir / "_trash").iterdir())


def test_keeps_the_last_m_days_of_scoring_and_monitoring_and_deletes_old_scoring_mlflow_runs(tmp_path):
    settings = make_settings(tmp_path, retention_days=3, mlflow_retention_days=5)
    spec = load_spec(DATASET, settings)
    now = START + timedelta(days=10)
    for day in range(10):
        when = START + timedelta(days=day)
        partition = partition_dir(spec, when.date(), settings)
        partition.mkdir(parents=True)
        (partition / "_summary.json").write_text("{}")
        for stage in (stage_for(INGEST, True), stage_for(VALIDATE, True), MONITORING):
            folder = stage_dir(DATASET, stage, f"scheduled__{when.date()}", settings)
            folder.mkdir(parents=True)
            (folder / "out.json").write_text("{}")
            stamp(folder, when)
    client = mlflow_client(settings)
    training = start_training_run(client, DATASET, "old_training", {}, settings)
    client.set_terminated(training.info.run_id)
    scoring = client.create_experiment(f"{DATASET}-scoring")
    old, recent = (client.create_run(scoring, start_time=int((now - timedelta(days=age)).timestamp() * 1000))
                   for age in (6, 4))
    running = client.create_run(scoring, start_time=int((now - timedelta(days=9)).timestamp() * 1000))
    for run in (old, recent):
        client.set_terminated(run.info.run_id)

    cleanup(DATASET, now, settings=settings)

    kept = sorted(path.name for path in (settings.data_dir / DATASET / "predictions").iterdir())
    assert kept == [f"scored_for={START.date() + timedelta(days=day)}" for day in (7, 8, 9)]
    for stage in (stage_for(INGEST, True), stage_for(VALIDATE, True), MONITORING):
        kept = sorted(path.name for path in (settings.data_dir / DATASET / stage).iterdir())
        assert kept == [run_dir_name(f"scheduled__{START.date() + timedelta(days=day)}") for day in (7, 8, 9)]
    states = {run.info.run_id: client.get_run(run.info.run_id).info.lifecycle_stage
              for run in (old, recent, running, training)}
    assert states == {old.info.run_id: "deleted", recent.info.run_id: "active", running.info.run_id: "active",
                      training.info.run_id: "active"}


def test_outputs_written_now_for_old_dates_age_by_their_dates_as_in_a_simulated_month(tmp_path):
    """A backfill (or the soak's compressed days) writes today what is for old dates: the scoring run folders (by
    the run id their partition's summary names), the monitoring outputs (their drift.json's checked_for) and the
    MLflow runs (their scored_for / checked_for tags) age by those dates, not by when they were written."""
    settings = make_settings(tmp_path, retention_days=3, mlflow_retention_days=3)
    spec = load_spec(DATASET, settings)
    now = START + timedelta(days=10)
    client = mlflow_client(settings)
    scoring = client.create_experiment(f"{DATASET}-scoring")
    monitoring = client.create_experiment(f"{DATASET}-monitoring")
    runs = {}
    for day in (2, 8):
        scored_for = (START + timedelta(days=day)).date()
        run_id = f"manual__2026-12-07T10:00:0{day}.123456+00:00"  # written now, for an old date
        partition = partition_dir(spec, scored_for, settings)
        partition.mkdir(parents=True)
        (partition / "_summary.json").write_text(json.dumps({"scored_for": scored_for.isoformat(), "model": {},
                                                             "airflow_run_id": run_id}))
        for stage in (stage_for(INGEST, True), stage_for(VALIDATE, True), MONITORING):
            stage_dir(DATASET, stage, run_id, settings).mkdir(parents=True)
        (stage_dir(DATASET, MONITORING, run_id, settings) / "drift.json").write_text(
            json.dumps({"checked_for": scored_for.isoformat()}))
        for experiment, tag in ((scoring, "scored_for"), (monitoring, "checked_for")):
            run = client.create_run(experiment, tags={tag: scored_for.isoformat()})
            client.set_terminated(run.info.run_id)
            runs[run.info.run_id] = day

    cleanup(DATASET, now, settings=settings)

    for stage in (stage_for(INGEST, True), stage_for(VALIDATE, True), MONITORING):
        kept = [path.name for path in (settings.data_dir / DATASET / stage).iterdir()]
        assert kept == [run_dir_name("manual__2026-12-07T10:00:08.123456+00:00")], stage
    states = {run_id: client.get_run(run_id).info.lifecycle_stage for run_id in runs}
    assert states == {run_id: "deleted" if day == 2 else "active" for run_id, day in runs.items()}


def test_dry_run_deletes_nothing_and_lists_exactly_what_the_real_run_deletes(tmp_path):
    settings = make_settings(tmp_path, retention_runs=1, retention_days=2)
    spec = load_spec(DATASET, settings)
    runs = run_ids(4)
    for day, run_id in enumerate(runs):
        write_training_run(settings, run_id, START + timedelta(days=day))
        partition = partition_dir(spec, (START + timedelta(days=day)).date(), settings)
        partition.mkdir(parents=True)
        (partition / "_summary.json").write_text("{}")
    register(settings, runs[0], CHAMPION)
    before = files(settings)
    now = START + timedelta(days=4)

    listed = cleanup(DATASET, now, dry_run=True, settings=settings)
    assert files(settings) == before, "a dry run removes nothing"
    removed = cleanup(DATASET, now, settings=settings)

    assert [line.replace("would remove", "removed", 1) for line in listed.removed] == removed.removed
    named = {Path(line.split()[2]) for line in listed.removed}
    gone = before - files(settings)
    assert named and named <= gone
    assert all(any(path == top or top in path.parents for top in named) for path in gone), "nothing unlisted went"


def test_a_held_stage_lock_protects_its_folder(tmp_path):
    settings = make_settings(tmp_path, retention_runs=1)
    runs = run_ids(3)
    for day, run_id in enumerate(runs):
        write_training_run(settings, run_id, START + timedelta(days=day))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from continuous_training.paths import stage_lock\n"
         f"with stage_lock({DATASET!r}, {TRAIN!r}, {runs[0]!r}):\n    print('held', flush=True); sys.stdin.read()"],
        env={**os.environ, "DATA_DIR": str(settings.data_dir)}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        outcome = cleanup(DATASET, START + timedelta(days=3), settings=settings)
    finally:
        holder.communicate("", timeout=30)
    assert outcome.skipped == [f"skipped {stage_dir(DATASET, TRAIN, runs[0], settings)}: a task holds its stage lock"]
    assert (stage_dir(DATASET, TRAIN, runs[0], settings) / "checkpoints" / "part-0.parquet").is_file()
    assert not stage_dir(DATASET, FEATURIZE, runs[0], settings).exists(), "an unlocked folder of the run goes"
    assert not stage_dir(DATASET, TRAIN, runs[1], settings).exists()


@pytest.mark.parametrize("store", ["not a database", None])
def test_an_unreadable_registry_deletes_nothing(tmp_path, store):
    settings = make_settings(tmp_path, retention_runs=1)
    for day, run_id in enumerate(run_ids(3)):
        write_training_run(settings, run_id, START + timedelta(days=day))
    broken = tmp_path / "broken.db"
    if store is not None:
        broken.write_text(store * 100)
    before = files(settings)

    with pytest.raises(PipelineError, match="cleanup refused: the model registry .* nothing is deleted"):
        cleanup(DATASET, START + timedelta(days=3),
                settings=settings.model_copy(update={"mlflow_tracking_uri": f"sqlite:///{broken}"}))
    assert files(settings) == before


def test_storage_stays_bounded_over_simulated_days(tmp_path):
    """One training run a day copies the landing history (ingest, validate, featurize: 3 copies) and registers a
    version; the champion moves every third day; scoring and monitoring write a fixed amount a day. After retention
    the derived bytes stay under (3N + 2) x history + N x checkpoints + M x daily scoring + records; without it they
    grow with the square of the days."""
    runs_kept, days_kept, landed, checkpoint, scored = 2, 3, 1_000, 500, 300
    settings = make_settings(tmp_path, retention_runs=runs_kept, retention_days=days_kept)
    spec = load_spec(DATASET, settings)
    derived, unbounded = [], 0
    for day in range(1, 21):
        when = START + timedelta(days=day)
        run_id = f"scheduled__{when.date()}"
        history = landed * day
        for stage in RECORDS:
            folder = stage_dir(DATASET, stage, run_id, settings)
            folder.mkdir(parents=True)
            for name in RECORDS[stage]:
                (folder / name).write_text("{}")
            for name in BULK.get(stage, []):
                size = checkpoint if stage == TRAIN else history if name in ("data", "valid", "raw_splits") else 0
                (folder / name).mkdir()
                (folder / name / "part-0.parquet").write_bytes(b"x" * size)
            stamp(folder, when)
        register(settings, run_id, CHAMPION if day % 3 == 0 else CHALLENGER)
        partition = partition_dir(spec, when.date(), settings)
        partition.mkdir(parents=True)
        (partition / "part-0.parquet").write_bytes(b"x" * scored)
        unbounded += 3 * history + checkpoint + scored
        cleanup(DATASET, when, settings=settings)
        derived.append(sum(path.stat().st_size for path in files(settings) if path.is_file()))
        records = sum(len("{}") * len(names) for names in RECORDS.values()) * day
        assert derived[-1] <= ((3 * runs_kept + 2) * history + runs_kept * checkpoint
                               + (days_kept + 1) * scored + records), day
    # The champion moves every third day, so the kept copies repeat every three days: each day of the cycle grows
    # by a constant from one cycle to the next (linear in the days, not quadratic).
    growth = [later - earlier for earlier, later in zip(derived[5:], derived[8:], strict=False)]
    print(json.dumps({"derived_bytes_by_day": derived, "without_retention_day_20": unbounded,
                      "growth_per_3_days": growth}))
    assert growth[3:] == growth[:-3]
    assert derived[-1] < unbounded / 3


def test_the_cleanup_dag_removes_through_airflow(tmp_path, airflow_env):
    settings = make_settings(tmp_path, retention_runs=1)
    runs = run_ids(3)
    for day, run_id in enumerate(runs):
        write_training_run(settings, run_id, START + timedelta(days=day))
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(PROJECT_ROOT / "dags" / "cleanup.py", dags)
    env = airflow_env(tmp_path, AIRFLOW__CORE__DAGS_FOLDER=str(dags), DATASETS_DIR=str(settings.datasets_dir),
                      RETENTION_RUNS="1")
    subprocess.run(["airflow", "db", "migrate"], env=env, capture_output=True, check=True, timeout=300)
    done = subprocess.run(["airflow", "dags", "test", "cleanup", "--conf", json.dumps({"dataset": DATASET})],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert [path.name for path in (settings.data_dir / DATASET / INGEST).iterdir()] == [run_dir_name(runs[-1])]
