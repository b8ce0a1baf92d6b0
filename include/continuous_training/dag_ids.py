"""The DAG ids: which DAGs exist and which one runs a dataset.

Each kind has a generic DAG that takes any spec by name or path, and one own DAG `<prefix>__<name>` per spec under
the datasets dir that declares the kind's section. A dataset runs in its own DAG when it is given by that spec's
name (the own DAG's `dataset` param accepts only the name) and the spec has the section, else in the generic one.
"""

from __future__ import annotations

from continuous_training.config import Settings
from continuous_training.spec import DatasetSpec, load_spec, named_specs

TRAINING, SCORING, DRIFT = "training", "scoring", "drift"
KINDS = (TRAINING, SCORING, DRIFT)
GENERIC_DAG = {TRAINING: "training_pipeline", SCORING: "batch_scoring", DRIFT: "drift_check"}
_OWN_PREFIX = {TRAINING: "training", SCORING: "batch_scoring", DRIFT: "drift_check"}
_SECTION = {TRAINING: "training", SCORING: "scoring", DRIFT: "monitoring"}


def has_own_dag(kind: str, spec: DatasetSpec) -> bool:
    """Whether a named spec gets its own DAG of this kind: it declares the kind's section."""
    return getattr(spec, _SECTION[kind]) is not None


def own_dag_id(kind: str, spec: DatasetSpec) -> str:
    return f"{_OWN_PREFIX[kind]}__{spec.name}"


def dags(kind: str, settings: Settings | None = None) -> list[tuple[str, DatasetSpec | None]]:
    """Every DAG of a kind with the spec it is fixed to: the own DAGs of the named specs, then the generic one."""
    own = [(own_dag_id(kind, spec), spec) for spec in named_specs(settings) if has_own_dag(kind, spec)]
    return [*own, (GENERIC_DAG[kind], None)]


def dag_id(kind: str, spec: DatasetSpec, dataset: str) -> str:
    """The DAG that runs `spec`, given as `dataset` (a name or a spec path)."""
    return own_dag_id(kind, spec) if dataset == spec.name and has_own_dag(kind, spec) else GENERIC_DAG[kind]


def dataset_dag_id(kind: str, dataset: str, settings: Settings | None = None) -> str:
    """The DAG that runs a dataset given by name or spec path."""
    return dag_id(kind, load_spec(dataset, settings), dataset)


_LABEL = {TRAINING: "Training", SCORING: "Batch scoring", DRIFT: "Drift check"}


def dag_display_name(kind: str, spec: DatasetSpec | None) -> str:
    """The name the UI shows for a dataset's own DAG of a kind, or the generic one (spec None)."""
    return f"{_LABEL[kind]}: {spec.name}" if spec else f"{_LABEL[kind]} (any dataset)"


def dag_doc(kind: str, spec: DatasetSpec | None, doc: str) -> str:
    """The DAG's doc, headed, for a dataset's own DAG, by what its spec sets for it."""
    if spec is None:
        return doc
    lines = [f"#### {dag_display_name(kind, spec)}", "", f"- source: `{spec.source.path}` ({spec.source.format})"]
    if kind == TRAINING and spec.training:
        if spec.training.schedule:
            lines.append(f"- schedule: `{spec.training.schedule}`")
        if spec.training.on_new_data:
            lines.append(f"- on new data: a new batch folder with `_SUCCESS` under `{spec.landing_dir()}`")
        if spec.training.params:
            lines.append(f"- trigger form defaults: `{spec.training.params}`")
    elif kind == SCORING and spec.scoring:
        lines += [f"- schedule: `{spec.scoring.schedule}`", f"- batch of each date: `{spec.scoring.path}`",
                  f"- model: `@{spec.scoring.model_alias}`, waiting {spec.scoring.deadline_hours:g} h for `_SUCCESS`"]
    elif kind == DRIFT and spec.monitoring:
        monitoring = spec.monitoring
        lines += [f"- schedule: `{monitoring.schedule}`", f"- window: the last {monitoring.window} scored date(s)"]
        if monitoring.labels:
            lines.append(f"- delayed labels: `{monitoring.labels.path}`")
    return "\n".join([*lines, "", doc])
