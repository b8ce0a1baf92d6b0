"""Fixtures of the serving tests: the tabular case's Spark frames, fitted pipeline and transform, a throwaway MLflow."""

from tabular_case import frames, tracking, transform  # noqa: F401
