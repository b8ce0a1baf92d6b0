"""Continuous training on Spark: shared library for the Airflow DAGs and Spark jobs."""
