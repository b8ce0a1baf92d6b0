"""Fault 2 of issue 29: one rank's Python worker SIGKILLed mid-epoch (a Horovod rank for torch, a Keras worker for
tensorflow), then the Airflow retry, which reruns jobs/train.py: `train_candidate` again for the same Airflow run."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from continuous_training.demo import generate
from continuous_training.paths import CHECKPOINTS_DIR, FEATURIZE, TRAIN, stage_dir
from continuous_training.pipeline import run_data_stages
from continuous_training.spec import TrainParams, load_spec
from continuous_training.tracking import AIRFLOW_RUN_ID_TAG, CANDIDATE_MODEL_TAG, filter_literal, mlflow_client
from continuous_training.training import tensorflow_rank, torch_rank
from continuous_training.training.barrier import BarrierStageError
from continuous_training.training.epochs import TrainConfig
from continuous_training.training.fit import fit
from continuous_training.training.train import AirflowContext, train_candidate

pytestmark = [pytest.mark.integration, pytest.mark.barrier]

KILLED_RUN = "manual__2026-12-02T10:00:00+00:00"
EPOCHS = 4
# Two rows a rank and step make an epoch of a few hundred steps: seconds, so the kill lands inside the training.
PARAMS = {"num_proc": 2, "epochs": EPOCHS, "batch_size": 2, "patience": 0, "seed": 7}
FAILURE_BOUND_S = 60  # the pass condition: from the kill to the exception
WAIT_S = 600  # deadlines for what a loaded machine only makes slower (not pass conditions)
CHECKPOINT_FILES = {"torch": torch_rank.CHECKPOINT_FILE, "tensorflow": tensorflow_rank.CHECKPOINT_FILE}


def checkpoint_epoch(path: Path, framework: str) -> int | None:
    """The last finished epoch a rank-0 checkpoint records, or None while there is none."""
    if not path.exists():
        return None
    if framework == "torch":
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    with np.load(path, allow_pickle=False) as stored:
        return int(json.loads(str(stored["meta"]))["epoch"])


def wait_until(condition: Callable[[], object], what: str, timeout: float = WAIT_S) -> object:
    """`condition`'s first truthy value, polled every 20 ms; an AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting until {what}")
        time.sleep(0.02)
    return value


class RankWatch:
    """Samples, every 20 ms, the barrier tasks' Python workers (the processes pyspark's daemon forks under this test's
    Spark JVM) and the TCP ports each listens on: Horovod's rendezvous server, gloo's pairs, the TensorFlow
    workers' servers of TF_CONFIG."""

    def __init__(self) -> None:
        self.workers: dict[int, psutil.Process] = {}
        self.listening: dict[int, set[tuple[str, int]]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RankWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            for process, addresses in rank_workers():
                self.workers.setdefault(process.pid, process)
                self.listening.setdefault(process.pid, set()).update(addresses)

    def ports(self) -> set[int]:
        return {port for addresses in self.listening.values() for _, port in addresses}

    def rank_1(self) -> int | None:
        """The worker of rank 1 while two ranks run: the one beside rank 0's, which alone hosts Horovod's rendezvous
        server on every IPv4 interface (barrier.py starts it for both frameworks)."""
        live = [process.pid for process, _ in rank_workers()]
        hosts = [pid for pid in live if any(ip == "0.0.0.0" for ip, _ in self.listening.get(pid, ()))]
        return next(pid for pid in live if pid not in hosts) if len(live) == 2 and len(hosts) == 1 else None


def rank_workers() -> list[tuple[psutil.Process, set[tuple[str, int]]]]:
    """Live Python workers forked by pyspark's daemon under this process, with their listening addresses (less any
    the daemon listens on itself, which a fresh fork holds until it closes it)."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            parent = process.parent()
            if parent is None or "pyspark.daemon" not in " ".join(parent.cmdline()):
                continue
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            daemon = {c.laddr for c in parent.net_connections("inet") if c.status == psutil.CONN_LISTEN}
            found.append((process, {(c.laddr.ip, c.laddr.port) for c in process.net_connections("inet")
                                    if c.status == psutil.CONN_LISTEN and c.laddr not in daemon}))
        except psutil.Error:
            continue
    return found


def leftovers(watch: RankWatch) -> list[str]:
    """Listeners still on a port a rank used, held by this test's process tree or a pyspark worker, and rank workers
    still alive."""
    tree = {os.getpid(), *(child.pid for child in psutil.Process().children(recursive=True))}
    ports = watch.ports()
    found = []
    for connection in psutil.net_connections("inet"):
        if connection.status != psutil.CONN_LISTEN or connection.laddr.port not in ports:
            continue
        try:
            owner = " ".join(psutil.Process(connection.pid).cmdline()) if connection.pid else ""
        except psutil.Error:
            owner = ""
        if connection.pid in tree or "pyspark.daemon" in owner or "pyspark.worker" in owner:
            found.append(f"pid {connection.pid} listens on {connection.laddr.ip}:{connection.laddr.port}")
    for process in watch.workers.values():
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                found.append(f"rank worker {process.pid} is still alive")
        except psutil.NoSuchProcess:
            continue
    return found


def airflow_runs(client, experiment: str, airflow_run_id: str) -> list:
    """Every MLflow run of an Airflow run."""
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              filter_string=f"tags.`{AIRFLOW_RUN_ID_TAG}` = {filter_literal(airflow_run_id)}")


class Attempt(threading.Thread):
    """One attempt of the train task in the background: `train_candidate` as jobs/train.py calls it."""

    def __init__(self, *args: object) -> None:
        super().__init__(daemon=True)
        self.args = args
        self.error: BaseException | None = None
        self.ended: float | None = None

    def run(self) -> None:
        try:
            train_candidate(*self.args)
        except BaseException as error:  # noqa: BLE001 - the test inspects what the attempt raised
            self.error = error
        finally:
            self.ended = time.monotonic()


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_a_rank_killed_mid_epoch_fails_the_stage_and_the_retry_resumes(spark, settings, tmp_path, framework):
    """Pass: with rank 1's Python worker SIGKILLed in epoch 2 or later, the barrier stage fails within 60 s of the
    kill (a BarrierStageError) and the MLflow run is FAILED; the retry (train_candidate again
    for the same Airflow run id) resumes from the checkpoint (MLflow tag start_epoch > 1); its final validation loss
    is within 5% of an uninterrupted fit's (same featurized data, seed and params); no LISTEN socket of this test's
    process tree or of a pyspark worker remains on a port any rank listened on, and no rank worker is left; the
    Airflow run has exactly one MLflow run, FINISHED, with exactly one logged model."""
    started = time.monotonic()
    generate(rows=1500, batches=2, seed=3, data_dir=settings.data_dir)
    spec = load_spec("churn", settings)
    params = TrainParams(**PARAMS, framework=framework)
    client = mlflow_client(settings)
    run_data_stages(spark, spec, KILLED_RUN, settings, max_quarantine_fraction=0.05)
    checkpoint = stage_dir(spec.name, TRAIN, KILLED_RUN, settings) / CHECKPOINTS_DIR / CHECKPOINT_FILES[framework]

    with RankWatch() as watch:
        print(f"{framework}: data stages {time.monotonic() - started:.0f} s")
        uninterrupted = fit(spark, TrainConfig.from_featurize(
            stage_dir(spec.name, FEATURIZE, KILLED_RUN, settings), tmp_path / "uninterrupted",
            epochs=EPOCHS, batch_size=params.batch_size, learning_rate=params.learning_rate, patience=params.patience,
            seed=params.seed, feed_memory_mb=settings.train_feed_memory_mb, framework=framework), params.num_proc)
        print(f"{framework}: uninterrupted fit done at {time.monotonic() - started:.0f} s")
        attempt = Attempt(spark, spec, KILLED_RUN, params, AirflowContext(), settings)
        attempt.start()
        wait_until(lambda: not attempt.is_alive() or (checkpoint_epoch(checkpoint, framework) or 0) >= 1,
                   "the checkpoint of epoch 1 exists")
        victim = wait_until(lambda: not attempt.is_alive() or watch.rank_1(), "rank 1's worker is known")
        killed_in = checkpoint_epoch(checkpoint, framework)
        assert attempt.is_alive(), f"the attempt ended before the kill: {attempt.error!r}"
        assert killed_in < EPOCHS, f"epoch {killed_in} was the last: the kill would come after the training"
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        attempt.join(WAIT_S)
        assert attempt.ended is not None, "the attempt still runs"
        failed_after = attempt.ended - killed_at
        print(f"{framework}: rank 1's worker killed after epoch {killed_in}'s checkpoint; the stage failed "
              f"{failed_after:.1f} s later: {str(attempt.error).splitlines()[0]}")
        assert isinstance(attempt.error, BarrierStageError), f"not a barrier stage failure: {attempt.error!r}"
        # Spark reports the stage's first failed task: the dead worker, or rank 0 if it raised first.
        assert "Python worker exited unexpectedly" in str(attempt.error) or attempt.error.worker_traceback
        assert failed_after < FAILURE_BOUND_S
        assert [run.info.status for run in airflow_runs(client, spec.name, KILLED_RUN)] == ["FAILED"]
        resumes_at = checkpoint_epoch(checkpoint, framework) + 1
        wait_until(lambda: not leftovers(watch), "no listener or worker of the killed attempt is left", timeout=60)
        print(f"{framework}: no listener or worker left {time.monotonic() - attempt.ended:.1f} s after the failure")

        retried = time.monotonic()
        train_candidate(spark, spec, KILLED_RUN, params, AirflowContext(), settings)
        print(f"{framework}: retry took {time.monotonic() - retried:.0f} s")
        wait_until(lambda: not leftovers(watch), "no listener or worker of the retry is left", timeout=60)

    runs = airflow_runs(client, spec.name, KILLED_RUN)
    assert [run.info.status for run in runs] == ["FINISHED"]
    run = runs[0]
    assert 1 < int(run.data.tags["start_epoch"]) == resumes_at <= EPOCHS
    assert {key: run.data.params[key] for key in ("epochs", "batch_size", "learning_rate", "patience", "seed")} == {
        key: str(getattr(params, key)) for key in ("epochs", "batch_size", "learning_rate", "patience", "seed")}
    assert uninterrupted.start_epoch == 1 and uninterrupted.batch_size == int(run.data.params["rank_batch_size"])
    models = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    assert len(models) == 1 and CANDIDATE_MODEL_TAG in run.data.tags
    resumed_loss = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_loss")}[EPOCHS]
    uninterrupted_loss = uninterrupted.history[-1]["val_loss"]
    print(f"{framework}: retry started at epoch {resumes_at}; final val_loss {resumed_loss:.6f} resumed, "
          f"{uninterrupted_loss:.6f} uninterrupted; ports watched {sorted(watch.ports())}; "
          f"test {time.monotonic() - started:.0f} s")
    assert resumed_loss == pytest.approx(uninterrupted_loss, rel=0.05)
