"""Where each stage of a run reads and writes: $DATA_DIR/<dataset>/<stage>/run_id=<id>/."""

from __future__ import annotations

import glob
import re
from datetime import date
from pathlib import Path

import jinja2

from continuous_training.config import Settings, get_settings

# Written into a folder after its last data file: the folder is complete (Spark and Hadoop writers do the same).
SUCCESS_MARKER = "_SUCCESS"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+=-]")


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
