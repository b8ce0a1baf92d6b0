"""Drive simulated days through the real scheduler of the running services (`make up`, or the distributed stack) and
check that the loop stays exactly-once, bounded and leak-free (`make soak`).

A demo dataset (the churn spec under the name `--dataset`, run by the generic DAGs) is trained once; then each day
gets a new landing batch, a batch to score and the previous day's labels, and the DAGs run for it with the day as
their logical date (no waiting for the wall clock): batch_scoring for the day, drift_check for the previous day
(which lands its labelled rows and may trigger retraining, waited for), cleanup. The days listed in `--drift-days`
get drifted batches. After each day the script records DATA_DIR bytes, MLflow store bytes, the api-server's and the
scheduler's memory (PSS, with their children), and the processes, listeners and temporary files left behind.

Pass (exit 0; the report says which check failed otherwise): every day scored exactly once; every labelled row
landed exactly once; retraining exactly for the drifted days (no retrain storm); no task process, listener or
temporary file left behind after a day; the api-server's and the scheduler's memory flat (within
MEMORY_GROWTH_LIMIT from the second day on); DATA_DIR bytes below `--max-data-bytes` when given. The JSON report
(`--report`) holds the per-day figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psutil
import services
import sqlalchemy
from continuous_training.demo import generate, generate_scoring, write_churn_spec
from continuous_training.monitoring.labels import LANDING_MANIFEST, landed_batches
from continuous_training.paths import dated_path
from continuous_training.serving.scored import SUMMARY_FILE, partition_dir
from continuous_training.spec import load_spec

SETTINGS = services.SETTINGS
TRAINING, SCORING, DRIFT, CLEANUP = "training_pipeline", "batch_scoring", "drift_check", "cleanup"
RUN_TIMEOUT_S = 3600
MEMORY_GROWTH_LIMIT = 1.25
"""A service whose memory grows more than this from the second day to the last one fails the soak."""


@dataclass
class Day:
    """What one simulated day did and left."""

    date: str
    scored: int | None
    """Rows the day's predictions summary holds, read as the day ends (retention removes it later)."""
    scoring_run: str
    check_run: str | None
    retraining_run: str | None
    data_bytes: int
    mlflow_store_bytes: int
    mlflow_artifact_bytes: int
    memory_mb: dict[str, float]
    task_processes: list[str]
    listeners: int
    temp_entries: int
    seconds: float


@dataclass
class Report:
    days: list[Day] = field(default_factory=list)
    training_runs: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def folder_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file()) if path.exists() else 0


def mlflow_store_bytes() -> int:
    """Bytes of the MLflow server's store: the SQLite file, or the PostgreSQL database."""
    uri = services.backend_store_uri()
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).stat().st_size
    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.connect() as connection:
            return connection.execute(sqlalchemy.text("SELECT pg_database_size(current_database())")).scalar_one()
    finally:
        engine.dispose()


def tree(pid: int) -> list[psutil.Process]:
    try:
        process = psutil.Process(pid)
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def memory_mb(name: str) -> float:
    """A component's memory with its children's (the scheduler's executor workers, the api-server's): their PSS,
    which counts a page shared by forked processes once, not once per process as RSS does."""
    pid = services.running_pid(name)
    total = 0
    for process in tree(pid) if pid else []:
        try:
            total += process.memory_full_info().pss
        except psutil.Error:
            continue
    return round(total / 2**20, 1)


def listeners() -> int:
    """Listening sockets of the services' process trees."""
    pids = {process.pid for name in services.COMPONENTS if (pid := services.running_pid(name)) for process in tree(pid)}
    return sum(1 for connection in psutil.net_connections("inet")
               if connection.status == psutil.CONN_LISTEN and connection.pid in pids)


def temp_entries() -> int:
    folder = Path(os.environ.get("TMPDIR", "/tmp"))
    return sum(1 for _ in folder.iterdir())


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.airflow = services.AirflowClient()
        self.spec_folder = SETTINGS.data_dir / "_soak"
        self.spec_folder.mkdir(parents=True, exist_ok=True)
        self.spec = str(write_churn_spec(self.spec_folder, args.dataset, without=("training",)))
        self.report = Report()

    def run_dag(self, dag_id: str, conf: dict[str, Any], day: date | None = None) -> str:
        """Trigger a run (for `day` as its logical date) and wait until it succeeds; its run id."""
        body = {"logical_date": f"{day.isoformat()}T00:00:00Z" if day else None, "conf": conf}
        run_id = self.airflow.call("POST", f"/dags/{dag_id}/dagRuns", body)["dag_run_id"]
        self.wait(dag_id, run_id)
        return run_id

    def wait(self, dag_id: str, run_id: str) -> None:
        if services.wait_run(dag_id, run_id, RUN_TIMEOUT_S) != 0:
            raise SystemExit(f"soak stopped: {dag_id} run {run_id} did not succeed")

    def training_runs(self) -> list[dict[str, Any]]:
        return self.airflow.call("GET", f"/dags/{TRAINING}/dagRuns?order_by=run_after&limit=1000")["dag_runs"]

    def day(self, index: int, today: date) -> Day:
        began = time.monotonic()
        drifted = index + 1 in self.args.drift_days
        generate(rows=self.args.landing_rows, batches=1, start_date=today, seed=1000 + index,
                 drift=1.0 if drifted else 0.0, data_dir=SETTINGS.data_dir, dataset_name=self.args.dataset)
        generate_scoring(days=1, rows_per_day=self.args.scoring_rows, start_date=today, seed=2000 + index,
                         drift=1.0 if drifted else 0.0, data_dir=self.staging, dataset_name=self.args.dataset)
        self.arrive("incoming", today)
        scoring_run = self.run_dag(SCORING, {"dataset": self.spec}, today)
        check_run = retraining_run = None
        if index > 0:  # the previous day's labels arrive, and its drift check runs
            yesterday = today - timedelta(days=1)
            self.arrive("labels", yesterday)
            before = {run["dag_run_id"] for run in self.training_runs()}
            check_run = self.run_dag(DRIFT, {"dataset": self.spec}, yesterday)
            retraining_run = self.wait_for_retraining(before)
        self.run_dag(CLEANUP, {"dataset": self.spec}, today)
        summary_file = partition_dir(load_spec(self.spec, SETTINGS), today, SETTINGS) / SUMMARY_FILE
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        return Day(date=today.isoformat(), scored=summary.get("scored"), scoring_run=scoring_run, check_run=check_run,
                   retraining_run=retraining_run, data_bytes=folder_bytes(SETTINGS.data_dir),
                   mlflow_store_bytes=mlflow_store_bytes(),
                   mlflow_artifact_bytes=folder_bytes(SETTINGS.mlflow_artifact_root),
                   memory_mb={name: memory_mb(name) for name in ("api-server", "scheduler")},
                   task_processes=[" ".join(process.cmdline()[:3]) for process in services.task_processes()],
                   listeners=listeners(), temp_entries=temp_entries(), seconds=round(time.monotonic() - began, 1))

    def wait_for_retraining(self, before: set[str]) -> str | None:
        new = [run["dag_run_id"] for run in self.training_runs() if run["dag_run_id"] not in before]
        for run_id in new:
            self.wait(TRAINING, run_id)
        return new[0] if new else None

    @property
    def staging(self) -> Path:
        return self.spec_folder / "arriving"

    def arrive(self, kind: str, day: date) -> None:
        """Move a day's folder of `kind` (incoming, labels) from where it was generated into DATA_DIR, whole."""
        source = self.staging / kind / self.args.dataset / f"date={day.isoformat()}"
        target = SETTINGS.data_dir / kind / self.args.dataset / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)

    def run(self) -> Report:
        first = date.fromisoformat(self.args.start_date)
        generate(rows=self.args.initial_rows, batches=2, start_date=first - timedelta(days=2), seed=1,
                 data_dir=SETTINGS.data_dir, dataset_name=self.args.dataset)
        for dag_id in (TRAINING, SCORING, DRIFT, CLEANUP):
            self.airflow.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        self.run_dag(TRAINING, {"dataset": self.spec, **self.args.train_conf})
        for index in range(self.args.days):
            day = self.day(index, first + timedelta(days=index))
            self.report.days.append(day)
            print(json.dumps(asdict(day)), flush=True)
        last = first + timedelta(days=self.args.days - 1)
        self.arrive("labels", last)
        before = {run["dag_run_id"] for run in self.training_runs()}
        self.run_dag(DRIFT, {"dataset": self.spec}, last)
        self.wait_for_retraining(before)
        self.report.training_runs = [{"run_id": run["dag_run_id"], "triggered_by": run["conf"].get("triggered_by", "")}
                                     for run in self.training_runs()]
        self.report.failures = self.check(first)
        return self.report

    def check(self, first: date) -> list[str]:
        """The pass conditions that failed, one line each."""
        failures = []
        dates = [first + timedelta(days=index) for index in range(self.args.days)]
        spec = load_spec(self.spec, SETTINGS)
        for record in self.report.days:
            if record.scored != self.args.scoring_rows:
                failures.append(f"{record.date}: {record.scored} rows scored, not {self.args.scoring_rows}")
        for day in dates:
            landed = landed_batches(Path(dated_path(spec.monitoring.labelled_batches, day, SETTINGS)))
            rows = sum(json.loads((batch / LANDING_MANIFEST).read_text())["rows_landed"] for batch in landed)
            if rows != self.args.scoring_rows:
                failures.append(f"{day}: {rows} labelled rows landed in {len(landed)} batches, not "
                                f"{self.args.scoring_rows} once")
        retrained_for = sorted(re.findall(r"for (\d{4}-\d{2}-\d{2})", run["triggered_by"])[0]
                               for run in self.report.training_runs if run["triggered_by"])
        drifted = sorted(dates[day - 1].isoformat() for day in self.args.drift_days)
        if retrained_for != drifted:
            failures.append(f"retraining for {retrained_for}, drift on {drifted}")
        for day in self.report.days:
            if day.task_processes:
                failures.append(f"{day.date}: task processes left behind: {day.task_processes}")
        for name, values in (("listeners", [day.listeners for day in self.report.days]),
                             ("temporary entries", [day.temp_entries for day in self.report.days])):
            if values and max(values[1:] or values) > values[0]:
                failures.append(f"{name} grew from {values[0]} to {max(values)}")
        if len(self.report.days) >= 3:  # the first day warms the services up
            for name in ("api-server", "scheduler"):
                settled, last = self.report.days[1].memory_mb[name], self.report.days[-1].memory_mb[name]
                if last > settled * MEMORY_GROWTH_LIMIT:
                    failures.append(f"{name} memory grew from {settled} MB to {last} MB")
        if self.args.max_data_bytes and (peak := max(day.data_bytes for day in self.report.days)) > \
                self.args.max_data_bytes:
            failures.append(f"DATA_DIR reached {peak} bytes, above the bound {self.args.max_data_bytes}")
        return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--drift-days", type=lambda text: [int(day) for day in text.split(",")], default=[10, 20],
                        help="1-based days whose batches drift (10,20)")
    parser.add_argument("--start-date", default="2026-10-01")
    parser.add_argument("--dataset", default="soak", help="name of the demo dataset (soak)")
    parser.add_argument("--initial-rows", type=int, default=2_000, help="rows of the first training data (2000)")
    parser.add_argument("--landing-rows", type=int, default=500, help="rows of each day's landing batch (500)")
    parser.add_argument("--scoring-rows", type=int, default=500, help="rows of each day's batch to score (500)")
    parser.add_argument("--train-conf", type=json.loads, default={"epochs": 3, "num_proc": 2},
                        help="training_pipeline conf of the first run (JSON)")
    parser.add_argument("--max-data-bytes", type=int, default=None, help="the storage bound to hold")
    parser.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    args = parser.parse_args()
    report = Soak(args).run()
    if args.report:
        args.report.write_text(json.dumps(asdict(report), indent=1))
    for failure in report.failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print(f"{len(report.days)} days, {len(report.training_runs)} training runs, "
          f"{'passed' if not report.failures else f'{len(report.failures)} checks failed'}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
