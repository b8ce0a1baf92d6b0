"""The stage I/O contract: where each stage of a run writes ($DATA_DIR/<dataset>/<stage>/run_id=<id>/), the names
of what it writes there, and its JSON result as a dataclass, written atomically and read back typed."""

from __future__ import annotations

import glob
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout

from continuous_training.config import Settings, get_settings
from continuous_training.errors import PipelineError
from continuous_training.names import DATASET_NAME_PATTERN, render_date_template

# Written into a folder after its last data file: the folder is complete (Spark and Hadoop writers do the same).
SUCCESS_MARKER = "_SUCCESS"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+=-]")
_STAGE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
Result = TypeVar("Result")

# Stage folders under $DATA_DIR/<dataset>/.
INGEST, VALIDATE, STATS, FEATURIZE = "ingest", "validate", "stats", "featurize"
TRAIN, EVALUATE, PROMOTE, MONITORING = "train", "evaluate", "promote", "monitoring"
# What the stages write into their folder.
INGESTED_DATA, MANIFEST_FILE, INPUTS_FILE = "data", "manifest.json", "inputs.json"
VALID_DATA, QUARANTINE_DATA, VALIDATION_FILE = "valid", "quarantine", "validation.json"
STATS_FILE, STATS_REPORT_FILE = "stats.json", "report.html"
RAW_SPLITS_DATA, FEATURIZE_FILE = "raw_splits", "featurize.json"
CHECKPOINTS_DIR = "checkpoints"
EVALUATION_FILE, PROMOTION_FILE = "evaluation.json", "promotion.json"


@dataclass(frozen=True)
class IngestResult:
    """What ingest read and wrote; saved as `manifest.json` beside the Parquet output. `files`: rows per file read;
    `quarantined_files`: the files it could not read, with the reason; `incomplete_batches`: batch folders left
    out for want of a `_SUCCESS` marker."""

    dataset: str
    run_id: str
    source: str
    rows: int
    corrupt_rows: int
    files: dict[str, int]
    input_fingerprint: str
    output: str
    output_files: int
    quarantined_files: dict[str, str] = field(default_factory=dict)
    incomplete_batches: list[str] = field(default_factory=list)



@dataclass(frozen=True)
class ValidationResult:
    """Counts of one validation run; saved as `validation.json`. rows_in == valid + quarantined; the files ingest
    could not read are listed apart, with their reasons (`quarantined_files`)."""

    dataset: str
    run_id: str
    rows_in: int
    valid: int
    quarantined: int
    quarantine_fraction: float
    max_quarantine_fraction: float
    reasons: dict[str, int]
    quarantined_files: dict[str, str] = field(default_factory=dict)



@dataclass(frozen=True)
class FeaturizeResult:
    """What featurize wrote; saved as `featurize.json` (read by train and evaluate)."""

    dataset: str
    run_id: str
    task: str
    feature_dim: int
    num_classes: int | None
    classes: list[str] | None
    rows: dict[str, int]
    numeric: list[str]
    categorical: list[str]
    data_fingerprint: str



@dataclass(frozen=True)
class Evaluation:
    """What one evaluation logged to the candidate's run; `to_json` is `evaluation.json`."""

    mlflow_run_id: str
    champion_version: str | None
    metrics: dict[str, float]
    rows_evaluated: int
    unknown_labels: dict[str | None, int]

    def to_json(self) -> dict:
        """A JSON document; unknown labels as a list, since a label may be null."""
        return {
            "mlflow_run_id": self.mlflow_run_id,
            "champion_version": self.champion_version,
            "metrics": self.metrics,
            "rows_evaluated": self.rows_evaluated,
            "rows_unknown_label": sum(self.unknown_labels.values()),
            "unknown_labels": [{"label": label, "rows": rows} for label, rows in self.unknown_labels.items()],
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Evaluation:
        """The evaluation an `evaluation.json` document describes."""
        return cls(mlflow_run_id=document["mlflow_run_id"], champion_version=document["champion_version"],
                   metrics=document["metrics"], rows_evaluated=document["rows_evaluated"],
                   unknown_labels={entry["label"]: entry["rows"] for entry in document["unknown_labels"]})


@dataclass(frozen=True)
class PromotionDecision:
    """The gate's verdict for one candidate version; written as `promotion.json`.

    `champion_version` is the version that held `@champion` when the gate decided; `champion_version_at_evaluate`
    the one evaluate had scored; `reevaluated` says whether promote scored both again because they differ. The
    `*_data_as_of` fields date each one's training data (the newest input file its ingest pinned; None: unknown)."""

    model_name: str
    version: str
    metric: str
    candidate_value: float
    champion_version: str | None
    champion_value: float | None
    champion_version_at_evaluate: str | None
    reevaluated: bool
    threshold: float | None
    min_improvement: float
    promoted: bool
    reason: str
    candidate_data_as_of: str | None = None
    champion_data_as_of: str | None = None


def run_dir_name(run_id: str) -> str:
    """Folder name for a run id. Hadoop paths reject ':' so unsafe characters become '-'."""
    if not run_id:
        raise ValueError("run id must not be empty")
    return f"run_id={_UNSAFE.sub('-', run_id)}"


def stage_dir(dataset: str, stage: str, run_id: str, settings: Settings | None = None) -> Path:
    """Output folder of one stage for one run, always under DATA_DIR: a PipelineError for a dataset or stage name
    that would leave it."""
    if not re.fullmatch(DATASET_NAME_PATTERN, dataset) or not all(map(_STAGE_PART.fullmatch, stage.split("/"))):
        raise PipelineError(f"dataset {dataset!r} / stage {stage!r}: not a folder name under DATA_DIR")
    return (settings or get_settings()).data_dir / dataset / stage / run_dir_name(run_id)


def stage_for(stage: str, scoring: bool) -> str:
    """The stage folder name: scoring runs keep their ingest and validate outputs under `scoring/`."""
    return f"scoring/{stage}" if scoring else stage


def stage_lock_path(dataset: str, stage: str, key: str, settings: Settings | None = None) -> Path:
    """The lock file of one stage's output for one run or date."""
    name = ".".join(_UNSAFE.sub("-", part) for part in (dataset, stage, key))
    return (settings or get_settings()).data_dir / "_locks" / f"{name}.lock"


@contextmanager
def stage_lock(dataset: str, stage: str, key: str, settings: Settings | None = None) -> Iterator[Path]:
    """Hold the lock on one stage's output of a run or a date (`key`), across processes and hosts sharing DATA_DIR:
    a second writer (another attempt, another DAG) raises a PipelineError naming the lock at once. The OS releases
    the lock when its holder dies, so a killed writer leaves none behind."""
    path = stage_lock_path(dataset, stage, key, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, fallback_to_soft=False, preserve_lock_file=True)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise PipelineError(f"{stage} of {dataset} for {key} is being written by another attempt or DAG run (it "
                            f"holds the lock {path}): this one stops so the output stays one run's; rerun it once "
                            "the other has finished") from None
    try:
        yield path
    finally:
        lock.release()


def data_path(path: str, settings: Settings | None = None) -> str:
    """A file, folder or glob: URIs pass through, relative paths resolve against DATA_DIR."""
    if "://" in path:
        return path
    local = Path(path).expanduser()
    return str(local if local.is_absolute() else (settings or get_settings()).data_dir / local)


def dated_path(template: str, day: date, settings: Settings | None = None) -> str:
    """A path template of a date (`{{ ds }}`, `{{ ds_nodash }}`, nothing else) rendered for `day`, resolved like
    `data_path`; a PipelineError naming a template with any other template syntax."""
    try:
        rendered = render_date_template(template, day)
    except ValueError as error:
        raise PipelineError(str(error)) from None
    return data_path(rendered, settings)


def local_matches(pattern: str) -> list[str] | None:
    """Local files and folders a source glob matches; None when Python cannot tell (a URI other than file:, or
    Hadoop's `{a,b}` alternation), in which case the reader decides."""
    if pattern.startswith("file:"):
        pattern = pattern.removeprefix("file:").replace("///", "/", 1)
    if "://" in pattern or "{" in pattern:
        return None
    return sorted(glob.glob(pattern))


def write_result(path: Path, result: Any) -> None:
    """Write a stage's JSON result (a dataclass or a dict) beside `path`, then rename it into place, so a reader
    never sees half a file."""
    document = result.to_json() if hasattr(result, "to_json") else asdict(result) if is_dataclass(result) else result
    write_text_atomic(path, json.dumps(document, indent=2, allow_nan=False) + "\n")


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file (a JSON result, an HTML report) beside `path`, then rename it into place: a reader sees the
    last whole file, never half of one, and a failed write (a full disk) leaves nothing beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def read_result(path: Path, result_type: type[Result]) -> Result:
    """A stage's JSON result as `result_type` (its dataclass, or dict); a PipelineError naming the file when it is
    missing or does not hold that result."""
    try:
        document = json.loads(Path(path).read_text())
        if result_type is dict:
            return document
        return result_type.from_json(document) if hasattr(result_type, "from_json") else result_type(**document)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise PipelineError(f"cannot read {path}: {error}") from None


def read_featurize_result(out_dir: Path) -> FeaturizeResult:
    """The manifest a featurize run wrote."""
    return read_result(Path(out_dir) / FEATURIZE_FILE, FeaturizeResult)
