"""The stage I/O contract: where each stage of a run writes ($DATA_DIR/<dataset>/<stage>/run_id=<id>/), the names
of what it writes there, and its JSON result as a dataclass, written atomically and read back typed."""

from __future__ import annotations

import glob
import json
import re
from dataclasses import asdict, dataclass, is_dataclass
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import jinja2

from continuous_training.config import Settings, get_settings
from continuous_training.errors import PipelineError

# Written into a folder after its last data file: the folder is complete (Spark and Hadoop writers do the same).
SUCCESS_MARKER = "_SUCCESS"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+=-]")
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
    """What ingest read and wrote; saved as `manifest.json` beside the Parquet output."""

    dataset: str
    run_id: str
    source: str
    rows: int
    corrupt_rows: int
    files: dict[str, int]
    input_fingerprint: str
    output: str
    output_files: int



@dataclass(frozen=True)
class ValidationResult:
    """Counts of one validation run; saved as `validation.json`. rows_in == valid + quarantined."""

    dataset: str
    run_id: str
    rows_in: int
    valid: int
    quarantined: int
    quarantine_fraction: float
    max_quarantine_fraction: float
    reasons: dict[str, int]



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
    the one evaluate had scored; `reevaluated` says whether promote scored both again because they differ."""

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


def run_dir_name(run_id: str) -> str:
    """Folder name for a run id. Hadoop paths reject ':' so unsafe characters become '-'."""
    if not run_id:
        raise ValueError("run id must not be empty")
    return f"run_id={_UNSAFE.sub('-', run_id)}"


def stage_dir(dataset: str, stage: str, run_id: str, settings: Settings | None = None) -> Path:
    """Output folder of one stage for one run."""
    return (settings or get_settings()).data_dir / dataset / stage / run_dir_name(run_id)


def stage_for(stage: str, scoring: bool) -> str:
    """The stage folder name: scoring runs keep their ingest and validate outputs under `scoring/`."""
    return f"scoring/{stage}" if scoring else stage


def data_path(path: str, settings: Settings | None = None) -> str:
    """A file, folder or glob: URIs pass through, relative paths resolve against DATA_DIR."""
    if "://" in path:
        return path
    local = Path(path).expanduser()
    return str(local if local.is_absolute() else (settings or get_settings()).data_dir / local)


def dated_path(template: str, day: date, settings: Settings | None = None) -> str:
    """A path template of a date (`{{ ds }}`, `{{ ds_nodash }}`) rendered for `day`, resolved like `data_path`;
    jinja2.TemplateError for a bad template."""
    rendered = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template).render(
        ds=day.isoformat(), ds_nodash=day.strftime("%Y%m%d"))
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
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    partial.replace(path)


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
