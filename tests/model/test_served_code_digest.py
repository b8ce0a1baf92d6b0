"""The digest of the served code: recorded in a logged model, equal to the digest of the code it carries and of the
installed code it was logged from, and changed by any change to that code."""

from __future__ import annotations

import shutil
from pathlib import Path

import continuous_training
import mlflow
import pytest
from continuous_training.model.pyfunc import CODE_DIGEST, served_code_digest
from tabular_case import log_model

pytestmark = pytest.mark.integration


def test_a_logged_model_records_the_digest_of_the_code_it_carries(frames, transform, tracking):
    _, feature_transform = transform
    info = log_model("binary_classification", feature_transform, frames[1].toPandas())
    local_model = Path(mlflow.artifacts.download_artifacts(info.model_uri))

    recorded = mlflow.models.get_model_info(info.model_uri).metadata[CODE_DIGEST]

    assert recorded == served_code_digest(local_model / "code" / "continuous_training") == served_code_digest()


def test_the_served_code_digest_changes_with_any_byte_of_the_served_code_only(tmp_path):
    package = tmp_path / "continuous_training"
    shutil.copytree(Path(continuous_training.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    installed = served_code_digest()
    assert served_code_digest(package) == installed

    (package / "model" / "__pycache__").mkdir()
    (package / "model" / "__pycache__" / "transform.cpython-311.pyc").write_bytes(b"compiled")
    (package / "spec.py").write_text("# not served\n")
    assert served_code_digest(package) == installed

    (package / "model" / "casts.py").write_text((package / "model" / "casts.py").read_text() + " ")
    assert served_code_digest(package) != installed
