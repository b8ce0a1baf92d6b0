"""The learning tasks and the width of a model's output for each (no framework imported)."""

from __future__ import annotations

TASKS = ("regression", "binary_classification", "multiclass_classification")


def output_dim(task: str, num_classes: int | None) -> int:
    """Width of the model's output: 1 for regression and binary classification, C for multiclass."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if task != "multiclass_classification":
        return 1
    if num_classes is None or num_classes < 2:
        raise ValueError(f"multiclass_classification needs num_classes >= 2, got {num_classes}")
    return num_classes
