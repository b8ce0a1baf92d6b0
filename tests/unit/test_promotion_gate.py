"""The promotion gate's decision rule (the registry moves themselves are tested end to end)."""

import pytest

from continuous_training.registry import decide


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
