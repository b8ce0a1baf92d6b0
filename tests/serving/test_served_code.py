"""Scoring a version logged under other code than the installed package: its own code and the installed code must
predict the same on its input example and a sample of the batch, or scoring refuses; a version logged under the
installed code scores without that check."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import continuous_training
import mlflow
import numpy as np
import pytest
from continuous_training.errors import PipelineError
from continuous_training.serving.predict import predict_spark
from tabular_case import log_model

pytestmark = pytest.mark.integration

TASK = "multiclass_classification"
SCALING = "blocks.append((imputed - np.asarray(self.means)) * scale)"
LOG_UNDER_OTHER_CODE = """
import json
import sys

import continuous_training
import mlflow
import pandas as pd
from continuous_training.model.transform import FeatureTransform
from tabular_case import log_model

assert continuous_training.__file__.startswith(sys.argv[1]), continuous_training.__file__
transform = FeatureTransform.from_dict(json.loads(sys.argv[2]))
info = log_model(sys.argv[3], transform, pd.read_parquet(sys.argv[4]))
print(mlflow.register_model(info.model_uri, "serving_test").version)
"""


def champion_under_other_code(tmp_path: Path, transform, example, change) -> str:
    """Log and register, as @champion, a model from a copy of the package whose `model/transform.py` is
    `change(text)`, in a separate interpreter where that copy is the installed package; returns its version."""
    other = tmp_path / "other_code"
    shutil.copytree(Path(continuous_training.__file__).parent, other / "continuous_training",
                    ignore=shutil.ignore_patterns("__pycache__"))
    module = other / "continuous_training" / "model" / "transform.py"
    module.write_text(change(module.read_text()))
    example.to_parquet(tmp_path / "example.parquet")
    tests = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(other), str(tests)]),
           "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
           "MLFLOW_EXPERIMENT_ID": mlflow.get_experiment_by_name("serving").experiment_id}
    logged = subprocess.run([sys.executable, "-c", LOG_UNDER_OTHER_CODE, str(other),
                             json.dumps(transform.to_dict()), TASK, str(tmp_path / "example.parquet")],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert logged.returncode == 0, logged.stderr[-3000:]
    version = logged.stdout.strip().splitlines()[-1]
    mlflow.MlflowClient().set_registered_model_alias("serving_test", "champion", version)
    return version


def scaled_twice(text: str) -> str:
    assert SCALING in text, "the test's code change no longer applies to model/transform.py"
    return text.replace(SCALING, SCALING.replace("* scale)", "* scale * 2)"))


def test_a_champion_logged_under_code_that_transforms_differently_is_refused(frames, transform, tracking, tmp_path):
    _, feature_transform = transform
    version = champion_under_other_code(tmp_path, feature_transform, frames[1].toPandas(), scaled_twice)

    refusal = rf"models:/serving_test/{version}: .*predict differently on the .*, column "
    with pytest.raises(PipelineError, match=refusal):
        predict_spark(frames[1], "models:/serving_test@champion", TASK)


def test_a_version_whose_code_differs_only_in_bytes_scores_after_its_parity_check(frames, transform, tracking,
                                                                                  tmp_path, caplog):
    _, feature_transform = transform
    version = champion_under_other_code(tmp_path, feature_transform, frames[1].toPandas(),
                                        lambda text: f"{text}\n# a comment: the same transform\n")
    expected = mlflow.pyfunc.load_model(f"models:/serving_test/{version}").predict(
        frames[1].orderBy("customer id").toPandas())

    with caplog.at_level(logging.INFO, logger="continuous_training.serving.served_code"):
        scored = predict_spark(frames[1], "models:/serving_test@champion", TASK)
    result = scored.toPandas().sort_values("customer id", ignore_index=True)

    assert result["prediction"].tolist() == expected["prediction"].tolist()
    np.testing.assert_allclose(result["probability"], expected["probability"], atol=1e-9)
    assert any(f"models:/serving_test/{version}" in record.getMessage() and "parity held" in record.getMessage()
               for record in caplog.records), [record.getMessage() for record in caplog.records]


def test_a_model_logged_under_the_installed_code_scores_without_a_parity_subprocess(frames, transform, tracking,
                                                                                    monkeypatch):
    _, feature_transform = transform
    info = log_model(TASK, feature_transform, frames[1].toPandas())
    expected = mlflow.pyfunc.load_model(info.model_uri).predict(frames[1].orderBy("customer id").toPandas())

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"scoring started a subprocess: {args[:1]}")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    scored = predict_spark(frames[1], info.model_uri, TASK).toPandas().sort_values("customer id", ignore_index=True)
    monkeypatch.undo()

    assert scored["prediction"].tolist() == expected["prediction"].tolist()
