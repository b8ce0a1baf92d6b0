#!/bin/sh
# Runs once, when the Postgres volume is initialised: MLflow's tracking/registry store next to Airflow's, in its own
# database owned by its own role `mlflow` (password MLFLOW_DB_PASSWORD), which cannot connect to Airflow's.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -v password="$MLFLOW_DB_PASSWORD" \
  -v airflow_db="$POSTGRES_DB" <<'SQL'
CREATE ROLE mlflow LOGIN PASSWORD :'password';
CREATE DATABASE mlflow OWNER mlflow;
REVOKE ALL ON DATABASE mlflow FROM PUBLIC;
REVOKE ALL ON DATABASE :"airflow_db" FROM PUBLIC;
SQL
