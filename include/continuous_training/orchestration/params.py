"""The trigger forms (Airflow Params) of the training, scoring and drift-check DAGs."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from airflow.sdk import Param

from continuous_training.config import get_settings
from continuous_training.names import ALLOWED_PLACEHOLDERS, DATE_TEMPLATE_PATTERN
from continuous_training.spec import ALIAS_PATTERN, FRAMEWORKS, USE_GPU_CHOICES, DatasetSpec, TrainParams
from continuous_training.tracking import CHAMPION

SECTIONS = {
    "Data": ("dataset", "input", "max_quarantine_fraction"),
    "Training": ("framework", "num_proc", "use_gpu", "epochs", "batch_size", "learning_rate", "patience", "seed"),
    "Gate": ("promotion_threshold", "min_improvement"),
    "Model": ("model_alias",),
    "Window": ("window",),
    "Advanced": ("triggered_by",),
}
"""The trigger forms' sections: each form shows its params grouped, in the order of the form."""


def _in_sections(form: dict[str, Param]) -> dict[str, Param]:
    """The form with each param's `section` set (the trigger form groups fields by it)."""
    for section, names in SECTIONS.items():
        for name in names:
            if name in form:
                form[name].schema["section"] = section
    return form


def dataset_param(spec: DatasetSpec | None, verb: str) -> Param:
    """A dataset's own DAG fixes `dataset` to its name; the generic DAG (spec None) takes a name or a path."""
    if spec is None:
        return Param("churn", type="string", minLength=1,
                     description="Dataset name (include/datasets/<name>.yaml) or path to a spec file.")
    return Param(spec.name, type="string", enum=[spec.name], description=f"The dataset this DAG {verb}.")


def training_params(spec: DatasetSpec | None) -> dict[str, Param]:
    """The trigger form of a training run; a dataset's own DAG takes its defaults from `training.params`."""
    defaults: dict[str, Any] = {
        "max_quarantine_fraction": get_settings().quarantine_max_fraction, **asdict(TrainParams()),
        "promotion_threshold": None, "min_improvement": 0.0,
        **(spec.training.params if spec and spec.training else {}),
    }
    return _in_sections({
        "dataset": dataset_param(spec, "trains"),
        "max_quarantine_fraction": Param(defaults["max_quarantine_fraction"], type="number", minimum=0, maximum=1,
                                         description="validate fails above this quarantined fraction."),
        "framework": Param(defaults["framework"], enum=list(FRAMEWORKS),
                           description="torch: Horovod ranks; tensorflow: Keras workers "
                                       "(MultiWorkerMirroredStrategy)."),
        "num_proc": Param(defaults["num_proc"], type="integer", minimum=1,
                          description="Ranks or workers (barrier tasks)."),
        "use_gpu": Param(defaults["use_gpu"], enum=list(USE_GPU_CHOICES),
                         description="auto: GPUs when the cluster schedules them; true: require; false: CPU."),
        "epochs": Param(defaults["epochs"], type="integer", minimum=1,
                        description="Maximum epochs (early stopping may end sooner)."),
        "batch_size": Param(defaults["batch_size"], type=["null", "integer"], minimum=1,
                            description="Rows per rank and step (the global batch is this × num_proc); empty: 512, "
                                        "fewer when an epoch would take less than 32 steps."),
        "learning_rate": Param(defaults["learning_rate"], type="number", exclusiveMinimum=0,
                               description="Base learning rate (scaled by the number of ranks)."),
        "patience": Param(defaults["patience"], type="integer", minimum=0,
                          description="Early-stopping patience in epochs."),
        "seed": Param(defaults["seed"], type="integer", description="Seed for weights and data order."),
        "promotion_threshold": Param(defaults["promotion_threshold"], type=["null", "number"],
                                     description="Absolute bar on the dataset's promotion metric (default: spec)."),
        "min_improvement": Param(defaults["min_improvement"], type="number", minimum=0,
                                 description="How much the candidate must beat the champion by."),
        "triggered_by": Param("", type="string", description="What started this run (a drift check that triggers "
                                                                "retraining says which check and batch); empty for a "
                                                                "run of new data: the batches are named instead."),
    })


def scoring_params(spec: DatasetSpec | None) -> dict[str, Param]:
    """The form of a scoring run."""
    scoring = spec.scoring if spec else None
    return _in_sections({
        "dataset": dataset_param(spec, "scores"),
        "input": Param(None, type=["null", "string"], minLength=1, pattern=DATE_TEMPLATE_PATTERN,
                       description=f"File or glob of the batch to score (relative to DATA_DIR; templates: only "
                                   f"{ALLOWED_PLACEHOLDERS}); default: the spec's scoring.path for the run's date."),
        "model_alias": Param(scoring.model_alias if scoring else CHAMPION, type="string", pattern=ALIAS_PATTERN,
                             description="Registered model alias to score with (resolved once, at the start)."),
        "max_quarantine_fraction": Param(get_settings().quarantine_max_fraction, type="number", minimum=0,
                                         maximum=1, description="validate fails above this quarantined fraction."),
    })


def drift_params(spec: DatasetSpec | None) -> dict[str, Param]:
    """The form of a drift check."""
    window = spec.monitoring.window if spec and spec.monitoring else 1
    return _in_sections({
        "dataset": dataset_param(spec, "checks"),
        "window": Param(window, type="integer", minimum=1,
                        description="Scored dates checked: the last N up to the run's date."),
    })
