"""The argument types and the exit handling the jobs share."""

import argparse
import socket
import time

import pytest
from continuous_training.cli import optional, run_job
from continuous_training.config import get_settings
from continuous_training.monitoring.reference import load_reference
from continuous_training.spec import load_spec
from continuous_training.tracking import mlflow_client


def test_optional_reads_an_unset_airflow_param_as_none():
    parse = optional(int)

    assert parse("512") == 512
    assert parse("None") is None and parse("") is None and parse(" null ") is None
    assert optional(float)("0.7") == 0.7
    with pytest.raises(argparse.ArgumentTypeError, match="expected int or None, got 'big'"):
        parse("big")


def test_a_job_whose_mlflow_server_is_down_exits_in_one_line_within_seconds(tmp_path, monkeypatch, caplog):
    """A tracking server that is not there (a port nothing listens on): the job's MLflow call gives up after the
    settings' 2 retries, a few seconds, not MLflow's default of minutes, and exits 1 with one line naming it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for variable in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                     "MLFLOW_HTTP_REQUEST_TIMEOUT"):  # unset here, and again after the test
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        began = time.monotonic()
        with pytest.raises(SystemExit) as exited:
            run_job(lambda: mlflow_client().search_experiments())
        elapsed = time.monotonic() - began
    finally:
        get_settings.cache_clear()
    assert exited.value.code == 1
    assert elapsed < 20, f"gave up after {elapsed:.0f} s"
    [line] = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert line == (f"the MLflow tracking server http://127.0.0.1:{port} cannot be reached after 2 retries "
                    "(connection refused or lost); the task's retry goes on once it is back")


def test_a_drift_check_whose_mlflow_server_is_down_says_so_rather_than_that_the_reference_is_missing(
        tmp_path, monkeypatch, caplog):
    """Reading a model's drift reference from a stopped tracking server fails as the server being unreachable,
    not as a training run without its stats (which would tell the user to retrain)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit):
            run_job(lambda: load_reference(mlflow_client(), load_spec("churn"), "0" * 32, "models:/churn_model/1"))
    finally:
        get_settings.cache_clear()
    [line] = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert "cannot be reached" in line and "retrain" not in line, line
