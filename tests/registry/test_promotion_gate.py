"""The promotion gate's decision rule and the registry lock (the registry moves themselves are tested in
tests/integration/test_registry_gate.py and end to end)."""

import math
import subprocess
import sys
import time

import pytest
from continuous_training.config import Settings
from continuous_training.errors import PipelineError
from continuous_training.registry import decide, older_data, registry_lock, registry_lock_path
from continuous_training.spec import LOWER_IS_BETTER
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

NAN, INF = float("nan"), float("inf")


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


@pytest.mark.parametrize(("metric", "candidate", "champion", "named"), [
    ("test_rmse", NAN, 1.0, "test_rmse=nan"),                   # NaN predictions: rmse is NaN
    ("test_auc", NAN, 0.8, "test_auc=nan"),
    ("test_rmse", -INF, 1.0, "test_rmse=-inf"),
    ("test_auc", INF, 0.8, "test_auc=inf"),
    ("test_auc", NAN, None, "test_auc=nan"),                    # the first model too
    ("test_auc", 0.9, NAN, "champion's test_auc=nan"),          # a NaN champion is not beaten by anything
    ("test_rmse", 1.0, INF, "champion's test_rmse=inf"),
])
def test_a_non_finite_metric_never_passes_the_gate(metric, candidate, champion, named) -> None:
    threshold = 2.0 if metric in LOWER_IS_BETTER else 0.7

    promoted, reason = decide(metric, candidate, champion, threshold, 0.0)

    assert not promoted, reason
    assert named in reason and "not finite" in reason and "\n" not in reason


METRICS = [*sorted(LOWER_IS_BETTER), "test_auc", "test_accuracy", "test_r2"]
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([NAN, INF, -INF, 0.0, 0.5, 1.0])


@hypothesis_settings(max_examples=50, deadline=None)
@given(metric=st.sampled_from(METRICS), candidate=ANY_FLOAT, champion=st.none() | ANY_FLOAT,
       threshold=st.none() | ANY_FLOAT, min_improvement=st.floats(min_value=0.0, allow_infinity=False))
def test_the_gate_promotes_exactly_finite_metrics_that_meet_the_threshold_and_beat_the_champion(
        metric, candidate, champion, threshold, min_improvement) -> None:
    higher_is_better = metric not in LOWER_IS_BETTER

    promoted, reason = decide(metric, candidate, champion, threshold, min_improvement)

    finite = math.isfinite(candidate) and (champion is None or math.isfinite(champion))
    meets = threshold is None or (candidate >= threshold if higher_is_better else candidate <= threshold)
    improvement = None if champion is None else candidate - champion if higher_is_better else champion - candidate
    beats = improvement is None or (improvement > 0 and improvement >= min_improvement)
    assert promoted is (finite and meets and beats), reason
    assert metric in reason and "\n" not in reason


DAY_1, DAY_2 = "2026-11-05T08:00:00.000+00:00", "2026-11-06T08:00:00.000+00:00"


@pytest.mark.parametrize(("candidate", "champion", "refused"), [
    (DAY_1, DAY_2, "champion version 7 was trained on newer data (newest input 2026-11-06"),
    (DAY_1, "2026-11-05T09:00:00.000+01:00", None),     # the same instant: retraining on the same data may win
    (DAY_2, DAY_1, None),
    (DAY_1, None, None),                                # a champion registered before the tag, its ingest gone
    (None, DAY_1, "the candidate's training data has no known age"),
    (None, None, None),
])
def test_a_candidate_trained_on_older_data_than_the_champion_is_refused(candidate, champion, refused) -> None:
    reason = older_data(candidate, champion, "7")

    if refused is None:
        assert reason is None
    else:
        assert refused in reason and "\n" not in reason


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
