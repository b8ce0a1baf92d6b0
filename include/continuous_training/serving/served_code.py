"""The code a model version was logged with against the installed package's: scoring runs every model with the
installed `model/` code (`predict._ThisPackageFirst`), so a version whose `CODE_DIGEST` differs from the installed
code's (or that has none) is scored only once both codes predict the same on its input example and a sample of the
batch, each code in a fresh interpreter."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import Model
from mlflow.models.model import ModelInfo
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

import continuous_training
from continuous_training.errors import PipelineError
from continuous_training.model.pyfunc import CODE_DIGEST, THREADS_ENV, served_code_digest
from continuous_training.spark import col

log = logging.getLogger(__name__)

SAMPLE_ROWS = 100
"""Rows of the batch (the first by a hash of their values), besides the input example, both codes predict."""
TOLERANCE = 1e-5
"""Largest difference of a numeric prediction between the two codes, absolute and relative (labels: none)."""
TIMEOUT_S = 600
"""Longest either code may take to load the model and predict."""
LOGGED, INSTALLED = "logged", "installed"
_PREDICT = """
import json
import sys
from pathlib import Path

model, installed, folder, side = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
if installed:
    sys.path.insert(0, installed)
    import continuous_training
import mlflow.pyfunc
import pandas as pd

loaded = mlflow.pyfunc.load_model(model)
(folder / side).mkdir()
for rows in sorted(folder.glob("*.parquet")):
    loaded.predict(pd.read_parquet(rows)).to_parquet(folder / side / rows.name)
print(json.dumps({"package": getattr(sys.modules.get("continuous_training"), "__file__", None)}))
"""
"""Run in a fresh interpreter: load the model (the installed package imported first when `installed` names its
folder, else the model's own `code/` first on `sys.path`, as MLflow puts it), predict each input Parquet file into
`<folder>/<side>/`, print the file `continuous_training` came from."""


class ServedCodeMismatch(PipelineError):
    """A version logged under other code than the installed package's that is not shown to predict the same with
    it."""


def check_served_code(rows: DataFrame, model_uri: str, info: ModelInfo) -> None:
    """Nothing when the version's code digest is the installed code's; else predict its input example and a sample
    of `rows` (the model's input columns) with its own code and with the installed code, and raise a one-line
    `ServedCodeMismatch` at the first prediction that differs (or when either code cannot predict)."""
    logged = (info.metadata or {}).get(CODE_DIGEST)
    installed = served_code_digest()
    if logged == installed:
        return
    codes = f"its logged code {logged[:12] if logged else '(no digest)'}, the installed code {installed[:12]}"
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        model_dir = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(folder / "model")))
        checked = _write_inputs(rows, model_dir, folder)
        if not checked:
            raise ServedCodeMismatch(f"{model_uri}: {codes}: no input example and no rows to check that both predict "
                                f"the same")
        predictions = _predict_both(model_uri, model_dir, folder, codes)
    for name, frame in predictions[LOGGED].items():
        difference = _first_difference(frame, predictions[INSTALLED][name])
        if difference:
            raise ServedCodeMismatch(f"{model_uri}: {codes}; they predict differently on the {name}, {difference}; "
                                     "roll the code back to the one it was logged with, or move the alias to a "
                                     "version logged under the installed code (until then evaluate refuses it too)")
    log.info("%s: %s; parity held on %s", model_uri, codes,
             " and ".join(f"{len(frame)} rows of the {name}" for name, frame in predictions[LOGGED].items()))


def _write_inputs(rows: DataFrame, model_dir: Path, folder: Path) -> list[str]:
    """The input example and the sample of `rows` as Parquet files `<folder>/<name>.parquet`; returns the names."""
    inputs = {"input example": Model.load(str(model_dir)).load_input_example(str(model_dir)),
              "batch sample": rows.orderBy(F.xxhash64(*[col(c) for c in rows.columns])).limit(SAMPLE_ROWS)
              .toPandas()}
    written = [name for name, frame in inputs.items() if isinstance(frame, pd.DataFrame) and len(frame)]
    for name in written:
        inputs[name].to_parquet(folder / f"{name}.parquet")
    return written


def _predict_both(model_uri: str, model_dir: Path, folder: Path, codes: str) -> dict[str, dict[str, pd.DataFrame]]:
    """Per code, its predictions on each input file by name, both run at once; `ServedCodeMismatch` when one
    fails, or loads `continuous_training` from elsewhere than its own code (`model_dir/code`) or the installed
    package."""
    package = Path(continuous_training.__file__).resolve()
    expected = {LOGGED: model_dir.resolve() / "code", INSTALLED: package.parent}
    env = {**os.environ, THREADS_ENV: "1", "TF_NUM_INTRAOP_THREADS": "1"}
    runs = {side: subprocess.Popen(
        [sys.executable, "-c", _PREDICT, str(model_dir), str(package.parents[1]) if side == INSTALLED else "",
         str(folder), side], cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for side in (LOGGED, INSTALLED)}
    outputs = {}
    for side, run in runs.items():
        try:
            outputs[side] = run.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for started in runs.values():
                started.kill()
                started.communicate()
            raise ServedCodeMismatch(f"{model_uri}: {codes}; the {side} code did not predict within "
                                     f"{TIMEOUT_S} s") from None
    predictions = {}
    for side, (stdout, stderr) in outputs.items():
        if runs[side].returncode != 0:
            last = next((line for line in reversed(stderr.splitlines()) if line.strip()),
                        f"exit status {runs[side].returncode}")
            raise ServedCodeMismatch(f"{model_uri}: {codes}; the {side} code could not predict: {last.strip()}")
        loaded = json.loads(stdout.strip().splitlines()[-1])["package"]
        if loaded is not None and not Path(loaded).resolve().is_relative_to(expected[side]):
            raise ServedCodeMismatch(f"{model_uri}: {codes}; the {side} code's check loaded continuous_training from "
                                f"{loaded}, not from {expected[side]}")
        predictions[side] = {path.stem: pd.read_parquet(path) for path in sorted((folder / side).glob("*.parquet"))}
    return predictions


def _first_difference(logged: pd.DataFrame, installed: pd.DataFrame) -> str | None:
    """Where two prediction frames first differ (column by column), or None: labels exactly, numbers within
    `TOLERANCE`."""
    if list(logged.columns) != list(installed.columns) or len(logged) != len(installed):
        return (f"columns {list(logged.columns)} on {len(logged)} rows (logged) vs {list(installed.columns)} on "
                f"{len(installed)} rows (installed)")
    for column in logged.columns:
        for row, (mine, theirs) in enumerate(zip(logged[column], installed[column], strict=True)):
            if not _same(mine, theirs):
                return f"row {row}, column {column!r}: {_shown(mine)} (logged) vs {_shown(theirs)} (installed)"
    return None


def _same(mine: Any, theirs: Any) -> bool:
    if isinstance(mine, str) or isinstance(theirs, str) or mine is None or theirs is None:
        return mine == theirs
    mine, theirs = np.asarray(mine, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    return mine.shape == theirs.shape and bool(np.allclose(mine, theirs, rtol=TOLERANCE, atol=TOLERANCE,
                                                           equal_nan=True))


def _shown(value: Any) -> str:
    return repr(value.tolist() if isinstance(value, np.ndarray) else value)
