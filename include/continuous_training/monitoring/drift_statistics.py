"""Drift statistics of one column from two profiles on the same bins (`continuous_training.profiles`).

* PSI, sum((q - p) * ln(q / p)) over bins with shares p (reference) and q (window), each floored at `PSI_EPSILON`:
  numeric over `PSI_GROUPS` groups of about equal reference mass; categorical over the reference values plus the
  slot of every other value.
* KS (numeric), the largest gap between the two empirical CDFs read at every bin edge; the true statistic exceeds
  it by at most that bin's larger share (`ks_max_error`). Discrete columns are exact at their values.
* Unseen share (categorical): the window's share of non-null values outside the reference's values.
* Null rate change: the window's null rate minus the reference's. Nulls are left out of PSI and KS.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

PSI_EPSILON = 1e-4
PSI_GROUPS = 10


def psi(reference_counts: Any, window_counts: Any) -> float | None:
    """Population stability index of two count vectors on the same bins; None when either side is empty."""
    reference, window = np.asarray(reference_counts, float), np.asarray(window_counts, float)
    if reference.sum() == 0 or window.sum() == 0:
        return None
    p = np.maximum(reference / reference.sum(), PSI_EPSILON)
    q = np.maximum(window / window.sum(), PSI_EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def decile_groups(reference_counts: Any, groups: int = PSI_GROUPS) -> np.ndarray:
    """The group of each bin: bins are merged in order into `groups` groups of about equal reference mass (a bin
    goes to the group its mass's midpoint falls in)."""
    counts = np.asarray(reference_counts, float)
    total = counts.sum()
    if total == 0:
        return np.zeros(len(counts), int)
    midpoints = (np.cumsum(counts) - counts / 2) / total
    return np.minimum((midpoints * groups).astype(int), groups - 1)


def grouped(counts: Any, groups: np.ndarray) -> np.ndarray:
    return np.bincount(groups, weights=np.asarray(counts, float), minlength=int(groups.max()) + 1)


def ks_statistic(reference_counts: Any, window_counts: Any) -> tuple[float | None, float | None]:
    """(KS read at the bin edges, its largest possible error); (None, None) when either side is empty."""
    reference, window = np.asarray(reference_counts, float), np.asarray(window_counts, float)
    if reference.sum() == 0 or window.sum() == 0:
        return None, None
    p, q = reference / reference.sum(), window / window.sum()
    gap = np.abs(np.cumsum(p) - np.cumsum(q))
    return float(gap.max()), float(np.maximum(p, q).max())


def compare(reference: Mapping[str, Any], window: Mapping[str, Any], thresholds: Any) -> dict[str, Any]:
    """Every statistic of one column, which thresholds it passes (`reasons`) and whether it drifted."""
    ref_counts, win_counts = reference["counts"], window["counts"]
    null_rate_reference = reference["nulls"] / reference["rows"] if reference["rows"] else 0.0
    null_rate_window = window["nulls"] / window["rows"] if window["rows"] else 0.0
    result: dict[str, Any] = {
        "kind": reference["kind"],
        "null_rate_reference": null_rate_reference,
        "null_rate_window": null_rate_window,
        "null_rate_change": null_rate_window - null_rate_reference,
    }
    reasons = []
    if reference["kind"] == "numeric":
        groups = decile_groups(ref_counts)
        result["psi"] = psi(grouped(ref_counts, groups), grouped(win_counts, groups))
        result["ks"], result["ks_max_error"] = ks_statistic(ref_counts, win_counts)
        if result["ks"] is not None and result["ks"] > thresholds.ks_threshold:
            reasons.append(f"KS {result['ks']:.3f} > {thresholds.ks_threshold}")
    else:
        result["psi"] = psi(ref_counts, win_counts)
        non_null = sum(win_counts)
        result["unseen_share"] = win_counts[-1] / non_null if non_null else 0.0
        if result["unseen_share"] > thresholds.unseen_share_threshold:
            reasons.append(f"{result['unseen_share']:.1%} of values outside the reference > "
                           f"{thresholds.unseen_share_threshold:.1%}")
    if result["psi"] is not None and result["psi"] > thresholds.psi_threshold:
        reasons.insert(0, f"PSI {result['psi']:.3f} > {thresholds.psi_threshold}")
    if abs(result["null_rate_change"]) > thresholds.null_rate_threshold:
        reasons.append(f"null rate {null_rate_reference:.1%} -> {null_rate_window:.1%}")
    return {**result, "drifted": bool(reasons), "reasons": reasons}
