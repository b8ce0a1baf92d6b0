"""Secrets stay out of what the project logs: a tracking store's URI is named without its password, and the
repository itself holds nothing detect-secrets finds (what `make lint` runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from continuous_training.config import PROJECT_ROOT
from continuous_training.tracking import redacted_uri

STORE_PASSWORD = "s3cret-store-Pw"  # pragma: allowlist secret


@pytest.mark.parametrize(("uri", "shown"), [
    (f"postgresql+psycopg2://mlflow:{STORE_PASSWORD}@postgres:5432/mlflow",
     "postgresql+psycopg2://mlflow:***@postgres:5432/mlflow"),
    (f"https://admin:{STORE_PASSWORD}@mlflow.example:5000/", "https://admin:***@mlflow.example:5000/"),
    ("http://mlflow:5000", "http://mlflow:5000"),
    ("sqlite:////srv/mlflow/mlflow.db", "sqlite:////srv/mlflow/mlflow.db"),
])
def test_a_tracking_uri_is_shown_without_its_password(uri: str, shown: str) -> None:
    assert redacted_uri(uri) == shown


def test_the_repository_holds_nothing_detect_secrets_finds() -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    existing = [name.decode() for name in files if name and (PROJECT_ROOT / name.decode()).is_file()]
    hook = Path(sys.executable).parent / "detect-secrets-hook"
    found = subprocess.run([str(hook), *existing], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stdout[-3000:]
