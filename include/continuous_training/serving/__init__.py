"""Serving: the pyfunc model on raw columns (`model`), batch scoring in Spark (`batch`) and where it writes
(`scored`).

`TabularModel` is re-exported here: versions logged before the package was arranged by stage pickled it as
`continuous_training.serving.TabularModel`.
"""

from typing import Any

__all__ = ["TabularModel"]


def __getattr__(name: str) -> Any:
    """`TabularModel` on first use, so that importing the light modules here does not import MLflow."""
    if name == "TabularModel":
        from continuous_training.serving.model import TabularModel

        return TabularModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
