"""Serving: the pyfunc model on raw columns (`model`) and batch scoring in Spark (`batch`).

`TabularModel` is re-exported here: versions logged before the package was arranged by stage pickled it as
`continuous_training.serving.TabularModel`.
"""

from continuous_training.serving.model import TabularModel

__all__ = ["TabularModel"]
