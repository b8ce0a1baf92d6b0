"""Shared argument parsing and exit handling for the thin scripts in jobs/."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import TypeVar

from continuous_training.errors import PipelineError
from continuous_training.spec import SpecError

log = logging.getLogger("continuous_training")
Value = TypeVar("Value")


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


def run_job(main: Callable[[], object]) -> None:
    """Run a job's main; a PipelineError or SpecError exits 1 with its message, anything else with a trace."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        main()
    except (PipelineError, SpecError) as error:
        log.error("%s", error)
        sys.exit(1)
