"""The promotion gate's decision rule and the registry lock (the registry moves themselves are tested in
tests/integration/test_registry_gate.py and end to end)."""

import subprocess
import sys
import time

import pytest
from continuous_training.config import Settings
from continuous_training.errors import PipelineError
from continuous_training.registry import decide, registry_lock, registry_lock_path


@pytest.mark.parametrize(("metric", "candidate", "champion", "threshold", "min_improvement", "promoted"), [
    ("test_auc", 0.80, None, 0.70, 0.0, True),          # first model above the bar
    ("test_auc", 0.65, None, 0.70, 0.0, False),         # first model below the bar
    ("test_auc", 0.82, 0.80, 0.70, 0.01, True),         # beats the champion by enough
    ("test_auc", 0.805, 0.80, 0.70, 0.01, False),       # better, but not by min_improvement
    ("test_auc", 0.80, 0.80, 0.70, 0.0, False),         # a tie never replaces the champion
    ("test_auc", 0.75, 0.80, None, 0.0, False),         # worse, no threshold
    ("test_rmse", 9.0, 10.0, 12.0, 0.5, True),          # lower is better
    ("test_rmse", 9.8, 10.0, 12.0, 0.5, False),
    ("test_rmse", 13.0, None, 12.0, 0.0, False),        # above an rmse bar
])
def test_decide(metric, candidate, champion, threshold, min_improvement, promoted) -> None:
    decision, reason = decide(metric, candidate, champion, threshold, min_improvement)
    assert decision is promoted, reason
    assert metric in reason


HOLD_LOCK = """
import fcntl, sys, time
with open(sys.argv[1], "a") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_registry_lock_waits_for_another_process_to_release_it(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    path = registry_lock_path("churn_model", settings)
    assert path == tmp_path / "_locks" / "churn_model.registry.lock"
    path.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), "2"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with registry_lock("churn_model", settings, timeout_s=30):
            waited = time.monotonic() - started
    finally:
        holder.wait(timeout=30)
    assert waited >= 1.5, f"acquired the lock after {waited:.2f} s while another process held it for 2 s"
    with registry_lock("churn_model", settings, timeout_s=0):
        pass


def test_registry_lock_gives_up_after_its_timeout_naming_the_lock_file(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path)
    with registry_lock("churn/model", settings):
        started = time.monotonic()
        with pytest.raises(PipelineError, match="registry lock .*churn_model.registry.lock"), \
                registry_lock("churn/model", settings, timeout_s=0.5):
            pass
        assert time.monotonic() - started >= 0.5
    with registry_lock("churn/model", settings, timeout_s=0):
        pass
