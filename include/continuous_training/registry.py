"""Registry transitions: register a candidate as `@challenger`, promote it to `@champion` behind a gate.

Aliases are the source of truth; classic stages are mirrored for tools that still read them
(challenger → Staging, champion → Production with the previous Production archived, rejected → Archived).
Every move is idempotent: rerunning a step for the same Airflow run finds the same version and changes nothing twice.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from continuous_training.config import Settings, get_settings
from continuous_training.errors import PipelineError
from continuous_training.paths import stage_dir
from continuous_training.spec import LOWER_IS_BETTER, DatasetSpec
from continuous_training.tracking import AIRFLOW_RUN_ID_TAG, CANDIDATE_MODEL_TAG, mlflow_client, require_training_run

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
STAGE_FOR = {CHALLENGER: "Staging", CHAMPION: "Production", "rejected": "Archived"}


@dataclass(frozen=True)
class PromotionDecision:
    """The gate's verdict for one candidate version; written as `promotion.json`."""

    model_name: str
    version: str
    metric: str
    candidate_value: float
    champion_version: str | None
    champion_value: float | None
    threshold: float | None
    min_improvement: float
    promoted: bool
    reason: str


def _mirror_stage(client: MlflowClient, name: str, version: str, stage: str, archive_existing: bool = False) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(name, version, stage, archive_existing_versions=archive_existing)


def alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding an alias, or None."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        raise


def version_for_run(client: MlflowClient, name: str, training_run_id: str) -> ModelVersion | None:
    """The registered version created from a training run, if any."""
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{training_run_id}'")
    return min(versions, key=lambda v: int(v.version)) if versions else None


def register_candidate(spec: DatasetSpec, airflow_run_id: str, settings: Settings | None = None) -> ModelVersion:
    """Create (or find) the model version of this run's candidate, tag it, and point `@challenger` at it."""
    client = mlflow_client(settings)
    run = require_training_run(client, spec.name, airflow_run_id)
    name = spec.registered_model_name
    version = version_for_run(client, name, run.info.run_id) if _model_exists(client, name) else None
    if version is None:
        version = mlflow.register_model(run.data.tags[CANDIDATE_MODEL_TAG], name)
        log.info("registered %s version %s from run %s", name, version.version, run.info.run_id)
    else:
        log.info("run %s is already %s version %s; reusing it", run.info.run_id, name, version.version)
    tags = {
        key: str(value) for key, value in run.data.metrics.items() if key.startswith(("test_", "champion_test_"))
    } | {
        "data_run_id": airflow_run_id,
        AIRFLOW_RUN_ID_TAG: airflow_run_id,
        "training_run_id": run.info.run_id,
        "validation_status": version.tags.get("validation_status", "pending"),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, value)
    if version.tags.get("validation_status", "pending") == "pending":
        client.set_registered_model_alias(name, CHALLENGER, version.version)
        _mirror_stage(client, name, version.version, STAGE_FOR[CHALLENGER])
    return client.get_model_version(name, version.version)


def _model_exists(client: MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def decide(metric: str, candidate: float, champion: float | None, threshold: float | None,
           min_improvement: float) -> tuple[bool, str]:
    """The gate: pass the absolute threshold (if any) and beat the champion by at least min_improvement (> 0)."""
    higher_is_better = metric not in LOWER_IS_BETTER
    if threshold is not None and (candidate < threshold if higher_is_better else candidate > threshold):
        bar = ">=" if higher_is_better else "<="
        return False, f"{metric}={candidate:.6g} fails the absolute threshold ({bar} {threshold:.6g})"
    if champion is None:
        return True, f"{metric}={candidate:.6g} passes the threshold and there is no champion yet"
    improvement = candidate - champion if higher_is_better else champion - candidate
    if improvement <= 0 or improvement < min_improvement:
        return False, (f"{metric}={candidate:.6g} does not beat the champion's {champion:.6g} on the same holdout "
                       f"by at least {min_improvement:.6g} (improvement {improvement:.6g})")
    return True, f"{metric}={candidate:.6g} beats the champion's {champion:.6g} by {improvement:.6g}"


def promote_candidate(spec: DatasetSpec, airflow_run_id: str, threshold: float | None = None,
                      min_improvement: float = 0.0, settings: Settings | None = None) -> PromotionDecision:
    """Move `@champion` to this run's version only if it passes the gate; otherwise tag it rejected."""
    settings = settings or get_settings()
    client = mlflow_client(settings)
    run = require_training_run(client, spec.name, airflow_run_id)
    name = spec.registered_model_name
    version = version_for_run(client, name, run.info.run_id) if _model_exists(client, name) else None
    if version is None:
        raise PipelineError(f"run {airflow_run_id!r} has no registered version of {name}; run register first")
    metric = spec.promotion_metric
    if metric not in run.data.metrics:
        raise PipelineError(f"the candidate run has no {metric!r}; known metrics: {sorted(run.data.metrics)}")
    candidate_value = run.data.metrics[metric]
    champion = alias_version(client, name, CHAMPION)
    champion_value = run.data.metrics.get(f"champion_{metric}")
    threshold = spec.promotion.threshold if threshold is None else threshold
    if champion is not None and champion.version == version.version:
        promoted, reason = True, f"version {version.version} already holds @champion"
    elif champion is not None and champion_value is None:
        raise PipelineError(f"champion version {champion.version} was not scored on this run's holdout; run evaluate")
    else:
        promoted, reason = decide(metric, candidate_value, champion_value if champion else None, threshold,
                                  min_improvement)
    decision = PromotionDecision(
        model_name=name, version=version.version, metric=metric, candidate_value=candidate_value,
        champion_version=champion.version if champion else None,
        champion_value=champion_value if champion else None, threshold=threshold,
        min_improvement=min_improvement, promoted=promoted, reason=reason,
    )
    _apply(client, decision, champion)
    out_dir = stage_dir(spec.name, "promote", airflow_run_id, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "promotion.json").write_text(json.dumps(asdict(decision), indent=2))
    client.set_tag(run.info.run_id, "promotion", "promoted" if promoted else "rejected")
    client.set_tag(run.info.run_id, "promotion.reason", reason)
    log.info("%s %s version %s: %s", "PROMOTED" if promoted else "REJECTED", name, version.version, reason)
    return decision


def _apply(client: MlflowClient, decision: PromotionDecision, champion: ModelVersion | None) -> None:
    name, version = decision.model_name, decision.version
    client.set_model_version_tag(name, version, "validation_status", "approved" if decision.promoted else "rejected")
    client.set_model_version_tag(name, version, "promotion_reason", decision.reason)
    challenger = alias_version(client, name, CHALLENGER)
    if challenger is not None and challenger.version == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    if decision.promoted:
        if champion is None or champion.version != version:
            client.set_registered_model_alias(name, CHAMPION, version)
            _mirror_stage(client, name, version, STAGE_FOR[CHAMPION], archive_existing=True)
    else:
        _mirror_stage(client, name, version, STAGE_FOR["rejected"])
