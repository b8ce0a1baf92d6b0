"""MLflow tracking: one experiment per dataset (and one for its scoring and monitoring runs), one MLflow run per
Airflow run (found again on rerun), and the registry aliases."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import mlflow
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from continuous_training.config import Settings, get_settings
from continuous_training.errors import PipelineError

AIRFLOW_RUN_ID_TAG = "airflow.run_id"
AIRFLOW_DAG_ID_TAG, AIRFLOW_TASK_ID_TAG = "airflow.dag_id", "airflow.task_id"
CANDIDATE_MODEL_TAG = "candidate_model_uri"
CHAMPION, CHALLENGER = "champion", "challenger"
# The promotion gate's verdict on a model version (`registry._apply`): only an approved version may be scored.
VALIDATION_STATUS_TAG, APPROVED, REJECTED = "validation_status", "approved", "rejected"
STATS_ARTIFACT = "data/stats.json"
PREDICTION_PROFILE_ARTIFACT = "data/prediction_profile.json"


def mlflow_run_url(experiment_id: str, run_id: str, settings: Settings | None = None) -> str:
    """The run's page in the MLflow UI (MLFLOW_UI_URL)."""
    return f"{(settings or get_settings()).mlflow_ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def redacted_uri(uri: str) -> str:
    """A store URI fit for a log line: a password in it (`user:password@`) shown as `***`."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}"))


def mlflow_client(settings: Settings | None = None) -> MlflowClient:
    """Point MLflow at the configured tracking/registry store, with the request bound of the settings (MLflow's own
    variables win where set), and return a client."""
    settings = settings or get_settings()
    for variable, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", settings.mlflow_request_retries),
                            ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 1),
                            ("MLFLOW_HTTP_REQUEST_TIMEOUT", settings.mlflow_request_timeout_seconds)):
        os.environ.setdefault(variable, str(value))
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    return MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)


def ensure_experiment(client: MlflowClient, dataset: str, settings: Settings | None = None) -> str:
    """The experiment named after the dataset; local stores keep artifacts under MLFLOW_ARTIFACT_ROOT."""
    settings = settings or get_settings()
    experiment = client.get_experiment_by_name(dataset)
    if experiment is not None:
        return experiment.experiment_id
    uri = settings.mlflow_tracking_uri
    is_local_store = uri.startswith(("sqlite:", "file:")) or "://" not in uri
    location = (settings.mlflow_artifact_root / dataset).as_uri() if is_local_store else None
    return client.create_experiment(dataset, artifact_location=location)


def airflow_task_tags() -> dict[str, str]:
    """The dag id and task id of the Airflow task running this process, as run tags: Airflow exports them to the
    task's environment (`AIRFLOW_CTX_*`), which spark-submit jobs inherit. Empty outside Airflow."""
    variables = {AIRFLOW_DAG_ID_TAG: "AIRFLOW_CTX_DAG_ID", AIRFLOW_TASK_ID_TAG: "AIRFLOW_CTX_TASK_ID"}
    return {tag: os.environ[variable] for tag, variable in variables.items() if os.environ.get(variable)}


def filter_literal(value: str) -> str:
    """An MLflow filter string literal (the filter grammar has no escapes: quote with the other quote)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"cannot search MLflow for a value with both quote characters: {value!r}")


def find_airflow_run(client: MlflowClient, experiment: str, airflow_run_id: str) -> Run | None:
    """The run an Airflow run logged to in an experiment, if any (the first, when a store holds several)."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{AIRFLOW_RUN_ID_TAG}` = {filter_literal(airflow_run_id)}",
        order_by=["attributes.start_time ASC"],
        max_results=1,
    )
    return runs[0] if runs else None


def airflow_run(client: MlflowClient, experiment: str, airflow_run_id: str, run_name: str,
                tags: dict[str, str] | None = None, settings: Settings | None = None) -> Run:
    """The run of an Airflow run in an experiment: found again on a rerun or retry, else created with `tags`."""
    existing = find_airflow_run(client, experiment, airflow_run_id)
    if existing is not None:
        return existing
    return client.create_run(ensure_experiment(client, experiment, settings), run_name=run_name,
                             tags={AIRFLOW_RUN_ID_TAG: airflow_run_id, **(tags or {})})


def model_tags(name: str, version: str, run_id: str) -> dict[str, str]:
    """The tags that name the model version a scoring or monitoring run used."""
    return {"model.name": name, "model.version": version, "model.run_id": run_id}


def require_training_run(client: MlflowClient, dataset: str, airflow_run_id: str) -> Run:
    """The training run of an Airflow run, with a logged candidate model; a clear error otherwise."""
    run = find_airflow_run(client, dataset, airflow_run_id)
    if run is None or CANDIDATE_MODEL_TAG not in run.data.tags:
        raise PipelineError(
            f"no trained candidate for dataset {dataset!r} and run {airflow_run_id!r} in MLflow "
            f"({redacted_uri(client.tracking_uri)}); did the train task succeed?"
        )
    return run


def start_training_run(client: MlflowClient, dataset: str, airflow_run_id: str, tags: dict[str, str],
                       settings: Settings | None = None) -> Run:
    """Reuse this Airflow run's training run (rerun/retry) or create it."""
    return airflow_run(client, dataset, airflow_run_id, f"train {airflow_run_id}", tags, settings)


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding an alias, or None."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        raise


def is_approved(version: ModelVersion) -> bool:
    """Whether the promotion gate approved this model version."""
    return version.tags.get(VALIDATION_STATUS_TAG) == APPROVED


def require_approved(version: ModelVersion, alias: str) -> None:
    """A PipelineError in one line, naming the version and how to approve or roll back, unless the promotion gate
    approved the version that holds `alias`."""
    if is_approved(version):
        return
    name, status = version.name, version.tags.get(VALIDATION_STATUS_TAG, "unset")
    run = version.tags.get(AIRFLOW_RUN_ID_TAG)
    raise PipelineError(
        f"model {name!r} version {version.version} holds @{alias} but the promotion gate did not approve it "
        f"({VALIDATION_STATUS_TAG}={status}): roll back with MlflowClient().set_registered_model_alias({name!r}, "
        f"{alias!r}, '<an approved version>'); to have version {version.version} gated, roll back first (or "
        f"delete_registered_model_alias if no version is approved), then clear the promote task of its training DAG "
        f"run{f' {run!r}' if run else ''}"
    )


def version_for_run(client: MlflowClient, name: str, training_run_id: str) -> ModelVersion | None:
    """The registered version created from a training run, if any."""
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{training_run_id}'")
    return min(versions, key=lambda v: int(v.version)) if versions else None
