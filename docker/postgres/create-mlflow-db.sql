-- Runs once, when the Postgres volume is initialised: MLflow's tracking/registry store next to Airflow's.
CREATE DATABASE mlflow;
