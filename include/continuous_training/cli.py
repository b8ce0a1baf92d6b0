"""Shared argument parsing and exit handling for the thin scripts in jobs/."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

import requests

from continuous_training.config import get_settings
from continuous_training.errors import PipelineError
from continuous_training.spec import SpecError
from continuous_training.tracking import redacted_uri

log = logging.getLogger("continuous_training")
Value = TypeVar("Value")
# Writes refused by the storage itself: a full disk or quota, a read-only mount.
STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def optional(cast: Callable[[str], Value]) -> Callable[[str], Value | None]:
    """An argparse type: `cast` of the text, or None for an empty text, `None` or `null` (an unset Airflow param)."""
    def parse(text: str) -> Value | None:
        if text.strip().lower() in {"", "none", "null"}:
            return None
        try:
            return cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {cast.__name__} or None, got {text!r}") from None

    return parse


def job_parser(stage: str) -> argparse.ArgumentParser:
    """Parser with the arguments every stage takes: --dataset and --run-id."""
    parser = argparse.ArgumentParser(prog=f"{stage}.py", description=f"The {stage} stage of training_pipeline.")
    parser.add_argument("--dataset", required=True, help="Dataset name (under include/datasets/) or spec path.")
    parser.add_argument("--run-id", required=True, help="Run id (the Airflow run id) naming this run's data.")
    return parser


def storage_failure(error: BaseException) -> str | None:
    """What refused a write when `error` (or an error it was raised from, a Java one through Spark included) is a
    full or read-only file system: its reason and the file when known; None for any other error."""
    seen = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in STORAGE_ERRORS:
            return f"{seen.strerror} ({seen.filename})" if seen.filename else seen.strerror
        seen = seen.__cause__ or seen.__context__
    text = str(error)
    return next((reason for reason in map(os.strerror, STORAGE_ERRORS) if reason in text), None)


def tracking_server_unreachable(error: BaseException) -> str | None:
    """Why MLflow's tracking server could not be reached when `error` (or one it was raised from) is a request that
    failed to connect or timed out after the client's retries; None for any other error."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, requests.ConnectionError):
            return "connection refused or lost"
        if isinstance(seen, requests.Timeout):
            return f"no answer within {get_settings().mlflow_request_timeout_seconds} s"
        seen = seen.__cause__ or seen.__context__
    return None


def run_job(main: Callable[[], object]) -> None:
    """Run a job's main; a PipelineError or SpecError exits 1 with its message, an unreachable MLflow server or a
    write refused by a full or read-only file system exits 1 with one line naming it and the reason, anything else
    with a trace."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        main()
    except (PipelineError, SpecError) as error:
        log.error("%s", error)
        sys.exit(1)
    except Exception as error:
        if (unreachable := tracking_server_unreachable(error)) is not None:
            log.error("%s", mlflow_unreachable_message(unreachable))
            sys.exit(1)
        reason = storage_failure(error)
        if reason is None:
            raise
        log.error("cannot write under DATA_DIR %s: %s; free space or restore write access there, then rerun the "
                  "same run", get_settings().data_dir, reason)
        sys.exit(1)


def mlflow_unreachable_message(reason: str) -> str:
    """The one line a task fails with when the MLflow tracking server cannot be reached."""
    settings = get_settings()
    return (f"the MLflow tracking server {redacted_uri(settings.mlflow_tracking_uri)} cannot be reached after "
            f"{settings.mlflow_request_retries} retries ({reason}); the task's retry goes on once it is back")
