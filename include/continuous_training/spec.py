"""Dataset specs: a YAML file that describes a source, its schema, label, features and rules."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from continuous_training.config import Settings, get_settings
from continuous_training.model.casts import FLOATING_TYPES, INTEGRAL_TYPES
from continuous_training.names import DATASET_NAME_PATTERN, check_date_template

NUMERIC_TYPES = INTEGRAL_TYPES | FLOATING_TYPES
OTHER_TYPES = {"string", "boolean", "date", "timestamp", "timestamp_ntz"}
_DECIMAL = re.compile(r"^decimal\(\s*\d+\s*,\s*\d+\s*\)$")

Task = Literal["regression", "binary_classification", "multiclass_classification"]

DEFAULT_PROMOTION_METRIC: dict[str, str] = {
    "regression": "test_rmse",
    "binary_classification": "test_auc",
    "multiclass_classification": "test_accuracy",
}
LOWER_IS_BETTER = {"test_rmse", "test_mae", "test_logloss"}


class SpecError(ValueError):
    """A dataset spec that cannot be loaded or is invalid; the message names the field."""


def is_numeric_type(spark_type: str) -> bool:
    """True for Spark SQL numeric type names (integral, floating, decimal)."""
    spark_type = spark_type.strip().lower()
    return spark_type in NUMERIC_TYPES or bool(_DECIMAL.match(spark_type))


def _check_schedule(schedule: str) -> str:
    from croniter import croniter

    presets = {"@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly"}
    if schedule not in presets and not croniter.is_valid(schedule):
        raise ValueError(f"{schedule!r} is neither a cron expression nor one of {sorted(presets)}")
    return schedule


Schedule = Annotated[str, Field(min_length=1), AfterValidator(_check_schedule)]
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]*$"
# A path of a date: `{{ ds }}` and `{{ ds_nodash }}` render, any other template syntax is refused at load.
DatePathTemplate = Annotated[str, AfterValidator(check_date_template)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    """Where the dataset's files are read from."""

    path: str = Field(description="File or glob; relative paths resolve against DATA_DIR.")
    format: Literal["csv", "parquet", "json"] = Field(description="The files' format, read by Spark.")
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Options of the Spark reader (e.g. header, encoding, maxCharsPerColumn).")
    require_success_marker: bool = Field(
        True, description="Where path has a wildcard in its folder part (batch folders, e.g. landing/churn/*/*.csv), "
                          "ingest reads only the folders that hold a `_SUCCESS` marker, as the landing trigger does; "
                          "false reads every file the glob matches.")


class DatedSource(Source):
    """A source of one date's files: its path is a template of the date."""

    path: DatePathTemplate = Field(description="File or glob, a template of the date (`{{ ds }}`, `{{ ds_nodash }}`);"
                                               " relative paths resolve against DATA_DIR.")


class ColumnRules(_Strict):
    """Validation rules of one column; a row that breaks one is quarantined with the reason."""

    min: float | None = Field(None, description="Smallest valid value.")
    max: float | None = Field(None, description="Largest valid value.")
    allowed: list[str | int | float | bool] | None = Field(None, description="The only valid values.")
    not_null: bool = Field(False, description="A null is invalid.")
    unique: bool = Field(False, description="A non-null value that occurs more than once is invalid in every row "
                                                "holding it.")

    @model_validator(mode="after")
    def _min_not_above_max(self) -> ColumnRules:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Features(_Strict):
    """The model's input columns."""

    numeric: list[str] = Field(default_factory=list, description="Numeric columns: nulls imputed by the median, then "
                                                                   "standardised.")
    categorical: list[str] = Field(default_factory=list, description="Categorical columns, one-hot encoded.")
    max_categories: int = Field(100, ge=1, description="Categories kept per categorical feature (the most frequent "
                                "in training); the rest, unseen values and nulls share one extra 'other' slot.")


class Promotion(_Strict):
    """The gate a new model version passes to become @champion."""

    metric: str | None = Field(None, description="Metric the gate compares; default depends on the task.")
    threshold: float | None = Field(None, description="Absolute bar a candidate must pass.")


class Scoring(_Strict):
    """Where a dataset's batches to score arrive, when, and with which model alias."""

    path: DatePathTemplate = Field(description="File or glob of one day's batch, a template of the logical date (e.g. "
                                               "incoming/churn/date={{ ds }}/*.csv); relative paths resolve against "
                                               "DATA_DIR.")
    schedule: Schedule = Field("@daily", description="Cron expression or preset of batch_scoring__<name>.")
    model_alias: str = Field("champion", pattern=ALIAS_PATTERN,
                             description="Registered model alias whose version scores the batch.")
    deadline_hours: float = Field(4, gt=0, description="How long after the run's date (its scheduled time) scoring "
                                                       "waits, deferred, for the `_SUCCESS` marker in the batch's "
                                                       "folder; past it the run fails naming the date and marker.")


class Monitoring(_Strict):
    """Drift checks of a dataset's scored batches: when, over which window, the thresholds, where labels arrive."""

    schedule: Schedule = Field("0 6 * * *", description="Cron expression or preset of drift_check__<name> "
                                                        "(default 06:00 UTC daily, after the daily scoring run).")
    window: int = Field(1, ge=1, description="Dates checked: the last N the scoring schedule fires on, up to the "
                                             "run's date; those not scored are named as missing.")
    psi_threshold: float = Field(0.2, gt=0, description="A feature (or the predictions) drifted above this PSI.")
    ks_threshold: float = Field(0.1, gt=0, le=1, description="A numeric column drifted above this KS statistic.")
    null_rate_threshold: float = Field(0.05, gt=0, le=1, description="A column drifted when its null rate moves by "
                                                                     "more than this.")
    unseen_share_threshold: float = Field(0.05, gt=0, le=1, description="A categorical drifted when more than this "
                                                                        "share of values is outside its reference.")
    drifted_feature_share: float = Field(0.3, gt=0, le=1, description="The dataset drifted when at least this share "
                                                                      "of its features drifted.")
    metric_drop: float = Field(0.05, gt=0, description="The dataset drifted when the promotion metric on labelled "
                                                       "rows is worse than at training by more than this fraction, "
                                                       "at the one-sided 95% lower bound of the drop (from the "
                                                       "window's standard error).")
    min_labelled_rows: int = Field(100, ge=1, description="Fewer labelled rows in the window: no performance check.")
    cooldown_hours: float = Field(24, ge=0, description="No retraining trigger within this many hours (by logical "
                                                        "date) of the previous one.")
    labels: DatedSource | None = Field(None, description="Where the delayed labels of a scored date arrive: path is "
                                                         "a template of the date (e.g. labels/churn/date={{ ds }}/"
                                                         "*.csv).")
    labels_complete_after_days: int | None = Field(
        None, ge=0, description="A scored date's labels feed is complete once its folder holds a `_SUCCESS` marker, "
                                "or (when set) this many days after the date; labels arriving later land as a "
                                "follow-up batch.")
    labelled_batches: DatePathTemplate | None = Field(None, description="Folder template (e.g. landing/churn/"
                                                                        "labelled_for={{ ds }}) where a scored date's "
                                                                        "rows with their labels land as a training "
                                                                        "batch, in the source's format.")


Framework = Literal["torch", "tensorflow"]
UseGpu = Literal["auto", "true", "false"]
FRAMEWORKS: tuple[str, ...] = get_args(Framework)
USE_GPU_CHOICES: tuple[str, ...] = get_args(UseGpu)


@dataclass(frozen=True)
class TrainParams:
    """Hyperparameters and placement of one training run, with their defaults (the DAG params, the train job's
    flags, a spec's `training.params`)."""

    num_proc: int = 2
    epochs: int = 10
    batch_size: int | None = None  # rows per rank and step; None: sized to the train split by the trainer
    learning_rate: float = 1e-3
    patience: int = 3
    seed: int = 42
    use_gpu: UseGpu = "auto"
    framework: Framework = "torch"


# The training_pipeline params a spec's `training.params` may give defaults for (the trigger form shows them).
TRAINING_PARAMS = frozenset({field.name for field in fields(TrainParams)}
                            | {"max_quarantine_fraction", "promotion_threshold", "min_improvement"})


class Training(_Strict):
    """When a dataset's own `training__<name>` DAG runs, and the defaults of its run params."""

    schedule: Schedule | None = Field(None, description="Cron expression or preset of training__<name>.")
    on_new_data: bool = Field(False, description="A new complete batch in the landing area starts one run: a "
                                                 "subfolder of `landing` with a `_SUCCESS` marker file.")
    landing: str | None = Field(None, min_length=1,
                                description="Folder whose batch subfolders are the training data (relative paths "
                                            "resolve against DATA_DIR); default: source.path up to its first "
                                            "wildcard.")
    params: dict[str, str | int | float | bool | None] = Field(
        default_factory=dict, description="Defaults of the DAG's params (e.g. epochs, batch_size); a run from the UI "
                                          "or the API may still override them.")

    @field_validator("params")
    @classmethod
    def _known_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - TRAINING_PARAMS)
        if unknown:
            raise ValueError(f"unknown training params {unknown} (known: {sorted(TRAINING_PARAMS)})")
        return params

    @model_validator(mode="after")
    def _scheduled_somehow(self) -> Training:
        if self.schedule is None and not self.on_new_data:
            raise ValueError("give a schedule, on_new_data: true, or both")
        return self


class DatasetSpec(_Strict):
    """A validated dataset spec."""

    name: str = Field(pattern=DATASET_NAME_PATTERN, description="Names the MLflow experiment, the data folders and "
                                                               "the dataset's DAGs.")
    source: Source = Field(description="The files training reads.")
    schema_: dict[str, str] = Field(alias="schema", min_length=1, description="Every source column, in file order: "
                                                                           "name (verbatim) to Spark SQL type.")
    label: str = Field(description="The column the model predicts.")
    task: Task = Field(description="What the model does with the label.")
    features: Features = Field(description="The model's input columns.")
    id_column: str | None = Field(None, description="A unique row id: checked for duplicates, hashed for the "
                                                    "deterministic split, and joins delayed labels to predictions.")
    timestamp_column: str | None = Field(None, description="The column of each row's event time.")
    rules: dict[str, ColumnRules] = Field(default_factory=dict, description="Validation rules by column.")
    model_name: str | None = Field(None, description="Registered model name; default <name>_model.")
    promotion: Promotion = Field(default_factory=Promotion, description="The promotion gate.")
    scoring: Scoring | None = Field(None, description="Gives the dataset its own batch_scoring__<name> DAG.")
    monitoring: Monitoring | None = Field(None, description="Gives the dataset its own drift_check__<name> DAG.")
    training: Training | None = Field(None, description="Gives the dataset its own training__<name> DAG.")

    @field_validator("schema_")
    @classmethod
    def _known_types(cls, schema: dict[str, str]) -> dict[str, str]:
        normalized = {column: str(spark_type).strip().lower() for column, spark_type in schema.items()}
        for column, spark_type in normalized.items():
            if not (spark_type in OTHER_TYPES or is_numeric_type(spark_type)):
                raise ValueError(f"column {column!r} has unknown Spark SQL type {schema[column]!r}")
        return normalized

    @model_validator(mode="after")
    def _columns_exist(self) -> DatasetSpec:
        def require(field: str, column: str) -> None:
            if column not in self.schema_:
                raise ValueError(f"{field}: column {column!r} is not in schema")

        require("label", self.label)
        for column in self.features.numeric:
            require("features.numeric", column)
            if not is_numeric_type(self.schema_[column]):
                raise ValueError(f"features.numeric: column {column!r} has non-numeric type {self.schema_[column]}")
        for column in self.features.categorical:
            require("features.categorical", column)
        if not self.feature_columns:
            raise ValueError("features: at least one numeric or categorical feature is required")
        overlap = set(self.features.numeric) & set(self.features.categorical)
        if overlap:
            raise ValueError(f"features: columns listed as both numeric and categorical: {sorted(overlap)}")
        if self.label in self.feature_columns:
            raise ValueError(f"features: the label {self.label!r} cannot also be a feature")
        for field in ("id_column", "timestamp_column"):
            if getattr(self, field) is not None:
                require(field, getattr(self, field))
        for column, rules in self.rules.items():
            require(f"rules.{column}", column)
            if (rules.min is not None or rules.max is not None) and not is_numeric_type(self.schema_[column]):
                raise ValueError(f"rules.{column}: min/max need a numeric column, got {self.schema_[column]}")
        if self.task == "regression" and not is_numeric_type(self.schema_[self.label]):
            raise ValueError(f"label: regression needs a numeric label, {self.label!r} is {self.schema_[self.label]}")
        return self

    @property
    def feature_columns(self) -> list[str]:
        return [*self.features.numeric, *self.features.categorical]

    @property
    def registered_model_name(self) -> str:
        return self.model_name or f"{self.name}_model"

    @property
    def promotion_metric(self) -> str:
        return self.promotion.metric or DEFAULT_PROMOTION_METRIC[self.task]

    @property
    def ddl_schema(self) -> str:
        """The schema as a Spark DDL string, with every column name quoted verbatim."""
        return ", ".join(f"`{column.replace('`', '``')}` {spark_type}" for column, spark_type in self.schema_.items())

    def source_path(self, settings: Settings | None = None) -> str:
        """The source glob, with a relative path resolved against DATA_DIR."""
        path = Path(self.source.path).expanduser()
        if "://" in self.source.path:
            return self.source.path
        return str(path if path.is_absolute() else (settings or get_settings()).data_dir / path)

    def landing_dir(self, settings: Settings | None = None) -> Path:
        """The folder whose batch subfolders feed training: `training.landing`, else the source path up to its
        first wildcard."""
        if self.training and self.training.landing:
            folder = Path(self.training.landing).expanduser()
            return folder if folder.is_absolute() else (settings or get_settings()).data_dir / folder
        parts = Path(self.source_path(settings)).parts
        fixed = next((index for index, part in enumerate(parts) if any(char in part for char in "*?[{")),
                     len(parts) - 1)
        return Path(*parts[:fixed])


def _field_path(location: tuple[Any, ...]) -> str:
    return ".".join("schema" if part == "schema_" else str(part) for part in location) or "<root>"


def parse_spec(document: Any, origin: str = "<spec>") -> DatasetSpec:
    """Validate a parsed YAML document; errors name each offending field."""
    if not isinstance(document, dict):
        raise SpecError(f"dataset spec {origin}: expected a mapping at the top level, got {type(document).__name__}")
    try:
        return DatasetSpec.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(f"field '{_field_path(e['loc'])}': {e['msg']}" for e in error.errors())
        raise SpecError(f"dataset spec {origin} is invalid: {problems}") from None


def resolve_spec_path(name_or_path: str, settings: Settings | None = None) -> Path:
    """A spec file from a dataset name (looked up in the datasets dir) or a path."""
    settings = settings or get_settings()
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in {".yaml", ".yml"} or "/" in name_or_path:
        if not candidate.is_file():
            raise SpecError(f"dataset spec file {candidate} does not exist")
        return candidate.resolve()
    for suffix in (".yaml", ".yml"):
        named = settings.datasets_dir / f"{name_or_path}{suffix}"
        if named.is_file():
            return named
    known = sorted(p.stem for p in settings.datasets_dir.glob("*.y*ml"))
    raise SpecError(f"unknown dataset {name_or_path!r}: no spec in {settings.datasets_dir} (known: {known})")


def load_spec(name_or_path: str, settings: Settings | None = None) -> DatasetSpec:
    """Load and validate a spec by dataset name or path."""
    path = resolve_spec_path(name_or_path, settings)
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SpecError(f"dataset spec {path} is not valid YAML: {error}") from None
    return parse_spec(document, str(path))


def named_specs(settings: Settings | None = None) -> list[DatasetSpec]:
    """The specs under the datasets dir, by name."""
    settings = settings or get_settings()
    return [load_spec(str(path), settings) for path in sorted(settings.datasets_dir.glob("*.y*ml"))]
