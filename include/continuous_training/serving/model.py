"""`TabularModel` under the class path that pickled (not code-logged) pyfunc models refer to."""

from continuous_training.model.pyfunc import TabularModel

__all__ = ["TabularModel"]
