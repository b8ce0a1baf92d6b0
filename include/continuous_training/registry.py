"""Registry transitions: register a candidate as `@challenger`, promote it to `@champion` behind a gate.

Aliases are the source of truth; classic stages are mirrored (challenger → Staging, champion → Production with the
previous Production archived, rejected → Archived). Every move is idempotent: rerunning a step for the same Airflow
run finds the same version and changes nothing twice.

Moves of one model are serialised by `registry_lock`, a lock file under `$DATA_DIR/_locks/` held from reading the
aliases to moving them (also for runs outside the Airflow pool `mlflow_registry`). When `@champion` moved since
evaluate (tag `champion_version_evaluated`), promote scores the candidate and the current champion again on the
run's test split (`training.evaluate.evaluate_against`), so it never promotes a model worse than the champion it
replaces. Nor one trained on older data than the champion's (tag `data_as_of`, the modification time of the newest
input file the run's ingest pinned), as clearing an old run's promote would; and a version that holds `@champion`
without the gate's approval is not approved by rerunning its promote.

Every move of `@champion` (a promotion, a rejection, a rollback) is appended to the model's promotion history (who,
when, why, the metrics, the Airflow run), kept as `promotion_history.json` in a run of the experiment
`<dataset>-registry`; `rollback` moves `@champion` back, by default to the version it replaced. Commands:
`python -m continuous_training.registry {rollback,history} --dataset NAME` (`make rollback`, `make history`).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import math
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from filelock import FileLock, Timeout
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from continuous_training.cli import run_job
from continuous_training.config import Settings, get_settings
from continuous_training.errors import PipelineError
from continuous_training.paths import (
    FEATURIZE,
    FEATURIZE_FILE,
    INGEST,
    INPUTS_FILE,
    PROMOTE,
    PROMOTION_FILE,
    PromotionDecision,
    read_featurize_result,
    read_result,
    stage_dir,
    write_result,
)
from continuous_training.spec import LOWER_IS_BETTER, DatasetSpec, load_spec
from continuous_training.tracking import (
    AIRFLOW_RUN_ID_TAG,
    APPROVED,
    CANDIDATE_MODEL_TAG,
    CHALLENGER,
    CHAMPION,
    REJECTED,
    VALIDATION_STATUS_TAG,
    airflow_task_tags,
    alias_version,
    ensure_experiment,
    is_approved,
    mlflow_client,
    mlflow_run_url,
    require_training_run,
    version_for_run,
)
from continuous_training.training.evaluate import CHAMPION_EVALUATED_TAG, evaluate_against

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

STAGE_FOR = {CHALLENGER: "Staging", CHAMPION: "Production", REJECTED: "Archived"}
DATA_AS_OF_TAG, DATA_RUN_TAG = "data_as_of", "data_run_id"
HISTORY_ARTIFACT, HISTORY_OF_TAG = "promotion_history.json", "promotion_history_of"
PROMOTED, REJECTED_MOVE, ROLLED_BACK = "promoted", "rejected", "rolled_back"
REGISTRY_LOCK_TIMEOUT_S = 600.0
_LOCK_POLL_S = 0.2
_UNSAFE_FILE_NAME = re.compile(r"[^A-Za-z0-9_.+=-]")


def registry_lock_path(model_name: str, settings: Settings | None = None) -> Path:
    """The lock file that serialises the registry moves of one model."""
    file_name = f"{_UNSAFE_FILE_NAME.sub('_', model_name)}.registry.lock"
    return (settings or get_settings()).data_dir / "_locks" / file_name


@contextmanager
def registry_lock(model_name: str, settings: Settings | None = None,
                  timeout_s: float = REGISTRY_LOCK_TIMEOUT_S) -> Iterator[Path]:
    """Hold the exclusive lock on a model's registry moves (across processes and hosts sharing DATA_DIR).

    Waits at most `timeout_s` for another holder, then raises a PipelineError naming the lock file."""
    path = registry_lock_path(model_name, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, poll_interval=_LOCK_POLL_S, fallback_to_soft=False, preserve_lock_file=True)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        log.info("waiting for the registry lock %s (held by another register or promote)", path)
        try:
            lock.acquire(timeout=timeout_s)
        except Timeout:
            raise PipelineError(
                f"gave up after {timeout_s:g} s waiting for the registry lock {path}: another register or "
                "promote of this model still holds it (if no such task is running, retry this task)"
            ) from None
    try:
        yield path
    finally:
        lock.release()


def _mirror_stage(client: MlflowClient, name: str, version: str, move: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client.transition_model_version_stage(name, version, STAGE_FOR[move],
                                              archive_existing_versions=move == CHAMPION)


def _metric_tags(metrics: Mapping[str, float]) -> dict[str, str]:
    """The evaluation metrics a model version carries as tags."""
    return {key: str(value) for key, value in metrics.items() if key.startswith(("test_", "champion_test_"))}


def data_as_of(dataset: str, airflow_run_id: str, settings: Settings | None = None) -> str | None:
    """When the newest input file a training run's ingest pinned (`inputs.json`) was modified, as ISO 8601 UTC; None
    when the run's ingest output is gone."""
    path = stage_dir(dataset, INGEST, airflow_run_id, settings) / INPUTS_FILE
    if not path.is_file():
        return None
    newest = max((file["modified_ms"] for file in read_result(path, dict)["files"]), default=None)
    return None if newest is None else datetime.fromtimestamp(newest / 1000, UTC).isoformat(timespec="milliseconds")


def version_data_as_of(version: ModelVersion, dataset: str, settings: Settings | None = None) -> str | None:
    """The age of a version's training data: its `data_as_of` tag, else (registered before the tag) read from its
    run's ingest output; None when neither is there."""
    if DATA_AS_OF_TAG in version.tags:
        return version.tags[DATA_AS_OF_TAG]
    data_run = version.tags.get(DATA_RUN_TAG)
    return data_as_of(dataset, data_run, settings) if data_run else None


def older_data(candidate: str | None, champion: str | None, champion_version: str) -> str | None:
    """Why a candidate must not replace the champion for the age of its training data (one line), or None.

    Refuses a candidate trained on older data than the champion, and one of unknown age against a champion of known
    age; a champion of unknown age (registered before the tag, its ingest output gone) does not block."""
    if champion is None:
        return None
    if candidate is None:
        return (f"the candidate's training data has no known age ({DATA_AS_OF_TAG} tag or ingest inputs) and champion "
                f"version {champion_version} was trained on data as of {champion}: refusing to replace it")
    if datetime.fromisoformat(champion) > datetime.fromisoformat(candidate):
        return (f"champion version {champion_version} was trained on newer data (newest input {champion}) than the "
                f"candidate ({candidate}): refusing to move @champion back to older data; train on current data")
    return None


def register_candidate(spec: DatasetSpec, airflow_run_id: str, settings: Settings | None = None) -> ModelVersion:
    """Create (or find) the model version of this run's candidate, tag it (metrics, runs, the age of its training
    data), and point `@challenger` at it."""
    client = mlflow_client(settings)
    name = spec.registered_model_name
    with registry_lock(name, settings):
        run = require_training_run(client, spec.name, airflow_run_id)
        version = _registered_version(client, name, run.info.run_id)
        if version is None:
            version = mlflow.register_model(run.data.tags[CANDIDATE_MODEL_TAG], name)
            log.info("registered %s version %s from run %s", name, version.version, run.info.run_id)
        else:
            log.info("run %s is already %s version %s; reusing it", run.info.run_id, name, version.version)
        as_of = data_as_of(spec.name, airflow_run_id, settings)
        tags = _metric_tags(run.data.metrics) | {
            DATA_RUN_TAG: airflow_run_id,
            AIRFLOW_RUN_ID_TAG: airflow_run_id,
            "training_run_id": run.info.run_id,
            VALIDATION_STATUS_TAG: version.tags.get(VALIDATION_STATUS_TAG, "pending"),
        } | ({DATA_AS_OF_TAG: as_of} if as_of else {})
        for key, value in tags.items():
            client.set_model_version_tag(name, version.version, key, value)
        if version.tags.get(VALIDATION_STATUS_TAG, "pending") == "pending":
            client.set_registered_model_alias(name, CHALLENGER, version.version)
            _mirror_stage(client, name, version.version, CHALLENGER)
        _describe(client, spec, str(version.version), run, airflow_run_id, as_of, "pending until `promote`", settings)
        return client.get_model_version(name, version.version)


def model_card(spec: DatasetSpec, version: str, run, airflow_run_id: str, as_of: str | None, verdict: str,
               settings: Settings | None = None) -> str:
    """A version's description (Markdown): what it was trained on and how, its test metrics against the champion
    on the same rows, the gate's verdict, what started its run, links to its MLflow run."""
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    inputs = stage_dir(spec.name, INGEST, airflow_run_id, settings) / INPUTS_FILE
    files = len(read_result(inputs, dict)["files"]) if inputs.is_file() else None
    featurized = stage_dir(spec.name, FEATURIZE, airflow_run_id, settings) / FEATURIZE_FILE
    rows = read_featurize_result(featurized.parent).rows if featurized.is_file() else None
    tested = [f"{key} {value:.4g}" + (f" (champion on the same rows: {metrics[f'champion_{key}']:.4g})"
                                      if f"champion_{key}" in metrics else "")
              for key, value in sorted(metrics.items()) if key.startswith("test_")]
    trained = ", ".join(f"{key} {params[key]}" for key in ("framework", "num_proc", "epochs", "batch_size",
                                                            "learning_rate", "seed") if key in params)
    return "\n".join([
        f"**{spec.registered_model_name} version {version}** of dataset `{spec.name}`",
        "",
        f"- **Airflow run**: `{airflow_run_id}` of `{tags.get('airflow.dag_id', 'training')}`; started by: "
        f"{tags.get('triggered_by') or 'a manual or scheduled run, or new data'}",
        f"- **Data**: {'?' if files is None else files} input files pinned by ingest, newest modified "
        f"{as_of or 'unknown'}; fingerprint `{params.get('data_fingerprint', 'unknown')}`"
        + (f"; rows {', '.join(f'{split} {count:,}' for split, count in rows.items())}" if rows else ""),
        f"- **Training**: {trained or 'no parameters logged'}",
        f"- **Test metrics**: {'; '.join(tested) or 'none logged'}",
        f"- **Gate**: {verdict}",
        f"- **MLflow run**: {mlflow_run_url(run.info.experiment_id, run.info.run_id, settings)} (stats report: "
        "artifact `data/report.html`)",
    ])


def _describe(client: MlflowClient, spec: DatasetSpec, version: str, run, airflow_run_id: str, as_of: str | None,
              verdict: str, settings: Settings | None) -> None:
    """Write the model card as the version's description and the training run's note."""
    card = model_card(spec, version, run, airflow_run_id, as_of, verdict, settings)
    client.update_model_version(spec.registered_model_name, version, description=card)
    client.set_tag(run.info.run_id, "mlflow.note.content", card)


def _registered_version(client: MlflowClient, name: str, training_run_id: str) -> ModelVersion | None:
    """The version of a model registered from a training run; None also while the model does not exist."""
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return version_for_run(client, name, training_run_id)


def decide(metric: str, candidate: float, champion: float | None, threshold: float | None,
           min_improvement: float) -> tuple[bool, str]:
    """The gate: finite metrics, pass the absolute threshold (if any) and beat the champion by at least
    min_improvement (> 0). Every comparison is written so that a NaN refuses."""
    higher_is_better = metric not in LOWER_IS_BETTER
    if not math.isfinite(candidate):
        return False, f"{metric}={candidate:.6g} is not finite (NaN or inf predictions?): refusing the candidate"
    if champion is not None and not math.isfinite(champion):
        return False, (f"the champion's {metric}={champion:.6g} on this holdout is not finite: refusing to compare "
                       "against it (roll @champion back to a version that scores finite metrics)")
    if threshold is not None and not (candidate >= threshold if higher_is_better else candidate <= threshold):
        bar = ">=" if higher_is_better else "<="
        return False, f"{metric}={candidate:.6g} fails the absolute threshold ({bar} {threshold:.6g})"
    if champion is None:
        return True, f"{metric}={candidate:.6g} passes the threshold and there is no champion yet"
    improvement = candidate - champion if higher_is_better else champion - candidate
    if not (improvement > 0 and improvement >= min_improvement):
        return False, (f"{metric}={candidate:.6g} does not beat the champion's {champion:.6g} on the same holdout "
                       f"by at least {min_improvement:.6g} (improvement {improvement:.6g})")
    return True, f"{metric}={candidate:.6g} beats the champion's {champion:.6g} by {improvement:.6g}"


def promote_candidate(spark: SparkSession, spec: DatasetSpec, airflow_run_id: str, threshold: float | None = None,
                      min_improvement: float = 0.0, settings: Settings | None = None) -> PromotionDecision:
    """Move `@champion` to this run's version only if it passes the gate against the version holding `@champion`
    now and was not trained on older data than it; otherwise tag it rejected. Holds the registry lock; re-evaluates
    when `@champion` moved since evaluate."""
    if min_improvement < 0:
        raise PipelineError(f"min_improvement must be >= 0, got {min_improvement}")
    settings = settings or get_settings()
    client = mlflow_client(settings)
    name, metric = spec.registered_model_name, spec.promotion_metric
    threshold = spec.promotion.threshold if threshold is None else threshold
    with registry_lock(name, settings):
        run = require_training_run(client, spec.name, airflow_run_id)
        version = _registered_version(client, name, run.info.run_id)
        if version is None:
            raise PipelineError(f"run {airflow_run_id!r} has no registered version of {name}; run register first")
        if metric not in run.data.metrics:
            raise PipelineError(f"the candidate run has no {metric!r}; run evaluate first "
                                f"(known metrics: {sorted(run.data.metrics)})")
        candidate_version = str(version.version)  # an int from some stores, a str from others
        champion = alias_version(client, name, CHAMPION)
        champion_now = str(champion.version) if champion else None
        champion_at_evaluate = run.data.tags.get(CHAMPION_EVALUATED_TAG)
        metrics, reevaluated = run.data.metrics, False
        candidate_as_of = version_data_as_of(version, spec.name, settings)
        champion_as_of = version_data_as_of(champion, spec.name, settings) if champion else None
        if champion_now == candidate_version:
            promoted = is_approved(champion)
            reason = (f"version {candidate_version} already holds @champion" if promoted else
                      f"version {candidate_version} holds @champion but the gate did not approve it (moved by hand?): "
                      "move @champion back to an approved version (or delete the alias if none is), then rerun this "
                      "promote to gate it")
            champion_value = metrics[metric]
        else:
            if champion_now != champion_at_evaluate or (champion and f"champion_{metric}" not in metrics):
                log.warning("re-evaluating run %r: evaluate scored it against %s version %s, @champion is now "
                            "version %s", airflow_run_id, name, champion_at_evaluate, champion_now)
                metrics = evaluate_against(spark, spec, airflow_run_id, run, champion, client, settings).metrics
                reevaluated = True
                for key, value in _metric_tags(metrics).items():
                    client.set_model_version_tag(name, candidate_version, key, value)
            champion_value = metrics[f"champion_{metric}"] if champion else None
            promoted, reason = decide(metric, metrics[metric], champion_value, threshold, min_improvement)
            stale = older_data(candidate_as_of, champion_as_of, champion_now) if promoted and champion else None
            if stale is not None:
                promoted, reason = False, stale
            elif promoted and champion and champion_as_of is None:
                log.warning("the training data of champion version %s has no known age: gating on %s alone",
                            champion_now, metric)
        decision = PromotionDecision(
            model_name=name, version=candidate_version, metric=metric, candidate_value=metrics[metric],
            champion_version=champion_now, champion_value=champion_value,
            champion_version_at_evaluate=champion_at_evaluate, reevaluated=reevaluated, threshold=threshold,
            min_improvement=min_improvement, promoted=promoted, reason=reason,
            candidate_data_as_of=candidate_as_of, champion_data_as_of=champion_as_of,
        )
        _apply(client, decision, champion)
        _describe(client, spec, candidate_version, client.get_run(run.info.run_id), airflow_run_id, candidate_as_of,
                  f"{'promoted to @champion' if promoted else 'rejected'}: {reason}", settings)
        record_move(spec, {
            "action": PROMOTED if promoted else REJECTED_MOVE, "version": candidate_version,
            "replaced": champion_now if promoted and champion_now != candidate_version else None,
            "champion": champion_now, "airflow_run_id": airflow_run_id, "metric": metric,
            "value": metrics[metric], "champion_value": champion_value, "reason": reason}, settings)
    write_result(stage_dir(spec.name, PROMOTE, airflow_run_id, settings) / PROMOTION_FILE, decision)
    client.set_tag(run.info.run_id, "promotion", "promoted" if promoted else "rejected")
    client.set_tag(run.info.run_id, "promotion.reason", reason)
    log.info("%s %s version %s: %s", "PROMOTED" if promoted else "REJECTED", name, candidate_version, reason)
    return decision


def _apply(client: MlflowClient, decision: PromotionDecision, champion: ModelVersion | None) -> None:
    name, version = decision.model_name, decision.version
    approved_before = is_approved(client.get_model_version(name, version))
    if decision.promoted or not approved_before:  # a version the gate approved once stays a rollback target
        client.set_model_version_tag(name, version, VALIDATION_STATUS_TAG, APPROVED if decision.promoted else REJECTED)
    client.set_model_version_tag(name, version, "promotion_reason", decision.reason)
    challenger = alias_version(client, name, CHALLENGER)
    if challenger is not None and str(challenger.version) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    if decision.promoted:
        if champion is None or str(champion.version) != version:
            client.set_registered_model_alias(name, CHAMPION, version)
            _mirror_stage(client, name, version, CHAMPION)
    else:
        _mirror_stage(client, name, version, REJECTED)


def registry_experiment(spec: DatasetSpec) -> str:
    return f"{spec.name}-registry"


def _history_run(client: MlflowClient, spec: DatasetSpec, settings: Settings | None, create: bool) -> str | None:
    """The run holding the model's promotion history (created when `create`), None when there is none."""
    name = spec.registered_model_name
    experiment = client.get_experiment_by_name(registry_experiment(spec))
    if experiment is None and not create:
        return None
    experiment_id = experiment.experiment_id if experiment else ensure_experiment(
        client, registry_experiment(spec), settings)
    found = client.search_runs([experiment_id], f"tags.`{HISTORY_OF_TAG}` = '{name}'", max_results=1)
    if found:
        return found[0].info.run_id
    if not create:
        return None
    run = client.create_run(experiment_id, run_name=f"promotion history of {name}", tags={HISTORY_OF_TAG: name})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def promotion_history(spec: DatasetSpec, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The moves of the model's `@champion`, oldest first."""
    client = mlflow_client(settings)
    run_id = _history_run(client, spec, settings, create=False)
    if run_id is None or HISTORY_ARTIFACT not in {artifact.path for artifact in client.list_artifacts(run_id)}:
        return []
    with tempfile.TemporaryDirectory() as folder:
        return json.loads(Path(client.download_artifacts(run_id, HISTORY_ARTIFACT, folder)).read_text())


def record_move(spec: DatasetSpec, move: dict[str, Any], settings: Settings | None = None) -> None:
    """Append a move to the model's promotion history, with when it happened (the registry's clock), who made it
    and the Airflow task it ran in; a rerun of a run's move is not appended twice. Call under the registry lock."""
    history = promotion_history(spec, settings)
    if move.get("airflow_run_id") and any(
            (event["action"], event["version"], event.get("airflow_run_id"))
            == (move["action"], move["version"], move["airflow_run_id"]) for event in history):
        return
    event = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"), "by": getpass.getuser(),
             **airflow_task_tags(), **move}
    client = mlflow_client(settings)
    client.log_text(_history_run(client, spec, settings, create=True), json.dumps([*history, event], indent=2),
                    HISTORY_ARTIFACT)


def champion_on(history: list[dict[str, Any]], moment: datetime) -> str | None:
    """The version that held `@champion` at `moment` by the history, None before its first promotion."""
    champion = None
    for event in history:
        if datetime.fromisoformat(event["at"]) > moment:
            break
        if event["action"] in (PROMOTED, ROLLED_BACK):
            champion = event["version"]
    return champion


def rollback(spec: DatasetSpec, version: str | None = None, reason: str = "rolled back by hand",
             settings: Settings | None = None) -> tuple[str, str]:
    """Move `@champion` back to `version` (default: the version the current champion replaced, by the history)
    under the registry lock, tag both versions with why, record the move; returns (replaced, now champion). Only a
    version the gate approved can become `@champion` again."""
    client = mlflow_client(settings)
    name = spec.registered_model_name
    with registry_lock(name, settings):
        champion = alias_version(client, name, CHAMPION)
        if champion is None:
            raise PipelineError(f"{name} has no @champion to roll back")
        current = str(champion.version)
        if version is None:
            replaced = [event["replaced"] for event in promotion_history(spec, settings)
                        if event["action"] in (PROMOTED, ROLLED_BACK) and event["version"] == current
                        and event.get("replaced")]
            if not replaced:
                raise PipelineError(f"the promotion history of {name} names no version that @champion (version "
                                    f"{current}) replaced: give the version to roll back to (VERSION=)")
            version = replaced[-1]
        if version == current:
            raise PipelineError(f"version {current} of {name} already holds @champion: nothing to roll back")
        try:
            target = client.get_model_version(name, version)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise PipelineError(f"{name} has no version {version}") from None
        if not is_approved(target):
            raise PipelineError(f"version {version} of {name} was never approved by the promotion gate "
                                f"({VALIDATION_STATUS_TAG}={target.tags.get(VALIDATION_STATUS_TAG)}): refusing to "
                                "make it @champion")
        client.set_registered_model_alias(name, CHAMPION, version)
        _mirror_stage(client, name, version, CHAMPION)
        client.set_model_version_tag(name, version, "rollback_reason", f"replaced version {current}: {reason}")
        client.set_model_version_tag(name, current, "rolled_back", f"replaced by version {version}: {reason}")
        record_move(spec, {"action": ROLLED_BACK, "version": version, "replaced": current, "champion": current,
                           "airflow_run_id": None, "reason": reason}, settings)
    log.info("ROLLED BACK %s: @champion moved from version %s to version %s (%s)", name, current, version, reason)
    return current, version


def history_lines(spec: DatasetSpec, on: date | None = None, settings: Settings | None = None) -> list[str]:
    """The promotion history as lines, or which version held `@champion` at the end of the day `on` (UTC)."""
    history, name = promotion_history(spec, settings), spec.registered_model_name
    if on is not None:
        version = champion_on(history, datetime.combine(on + timedelta(days=1), time(), UTC) - timedelta(seconds=1))
        return [f"{name}: {'no version' if version is None else f'version {version}'} held @champion at the end of "
                f"{on} (UTC)"]
    if not history:
        return [f"{name}: no move of @champion recorded"]
    lines = [f"promotion history of {name}"]
    for event in history:
        metric = (f"{event['metric']} {event['value']:.4g} vs champion {event['champion_value']:.4g}; "
                  if event.get("champion_value") is not None else
                  f"{event['metric']} {event['value']:.4g}; " if event.get("metric") else "")
        where = event.get("airflow_run_id") or "by hand"
        replaced = f" (replacing {event['replaced']})" if event.get("replaced") else ""
        lines.append(f"  {event['at']}  {event['action']:<11} version {event['version']}{replaced}  by "
                     f"{event['by']} ({where}): {metric}{event['reason']}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Roll @champion back, or show the model's promotion history.")
    commands = parser.add_subparsers(dest="command", required=True)
    back = commands.add_parser("rollback", help="Move @champion back (default: to the version it replaced).")
    back.add_argument("--dataset", required=True, help="Dataset name or spec path.")
    back.add_argument("--version", help="The version to make @champion again.")
    back.add_argument("--reason", default=f"rolled back by hand by {getpass.getuser()}",
                      help="Why (tagged on both versions and kept in the history).")
    shown = commands.add_parser("history", help="Every move of @champion, oldest first.")
    shown.add_argument("--dataset", required=True, help="Dataset name or spec path.")
    shown.add_argument("--on", type=date.fromisoformat, metavar="DATE",
                       help="Only which version held @champion at the end of this day (UTC).")
    args = parser.parse_args(argv)

    def text() -> str:
        spec = load_spec(args.dataset)
        if args.command == "history":
            return "\n".join(history_lines(spec, args.on))
        replaced, champion = rollback(spec, args.version or None, args.reason)
        return f"@champion of {spec.registered_model_name}: version {champion}, replacing version {replaced}"

    run_job(lambda: print(text()))


if __name__ == "__main__":
    main()
