"""`make check-spec SPEC=…`: validate a dataset spec and show what its paths find now, without Spark or Airflow.

The source glob is listed with Python's glob on local paths (Hadoop's `{a,b}` alternation is not expanded here, and
a remote path is not listed); batch folders count as ingest counts them, and those without `_SUCCESS` are named."""

from __future__ import annotations

import argparse
import glob
import os

from continuous_training.cli import run_job
from continuous_training.config import Settings, get_settings
from continuous_training.data.ingest import batch_depth
from continuous_training.paths import SUCCESS_MARKER
from continuous_training.spec import DatasetSpec, load_spec, resolve_spec_path


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def source_found(spec: DatasetSpec, settings: Settings) -> str:
    """What the source glob finds now: its files, and the batch folders ingest would read or skip."""
    source = spec.source_path(settings)
    if "://" in source and not source.startswith("file://"):
        return f"{source}: a remote path, not listed here"
    files = sorted(glob.glob(source.removeprefix("file://")))
    depth = batch_depth(source) if spec.source.require_success_marker else None
    if depth is None:
        return f"{source}: {_count(len(files), 'file')}"
    folders = {file: file.rsplit("/", depth)[0] for file in files}
    skipped = sorted(folder for folder in set(folders.values())
                     if not os.path.exists(os.path.join(folder, SUCCESS_MARKER)))
    read = [file for file in files if folders[file] not in skipped]
    found = (f"{source}: {_count(len(read), 'file')} in "
             f"{_count(len(set(folders.values())) - len(skipped), 'batch folder')} with {SUCCESS_MARKER}")
    if skipped:
        found += (f"; {_count(len(skipped), 'folder')} without it {'is' if len(skipped) == 1 else 'are'} skipped "
                  f"({', '.join(os.path.basename(folder) for folder in skipped)})")
    return found


def describe(name_or_path: str, settings: Settings | None = None) -> list[str]:
    """The spec's summary lines; a SpecError names the invalid field."""
    settings = settings or get_settings()
    path, spec = resolve_spec_path(name_or_path, settings), load_spec(name_or_path, settings)
    lines = [f"{spec.name} ({path}): valid, {spec.task}",
             f"  columns    {len(spec.schema_)}; features {len(spec.feature_columns)}; label {spec.label!r}",
             f"  source     {source_found(spec, settings)}"]
    if spec.scoring:
        lines.append(f"  scoring    {spec.scoring.path} (of each date), schedule {spec.scoring.schedule!r}")
    if spec.monitoring and spec.monitoring.labels:
        lines.append(f"  labels     {spec.monitoring.labels.path} (of each scored date)")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec", help="Dataset name or spec path.")
    args = parser.parse_args(argv)
    run_job(lambda: print("\n".join(describe(args.spec))))


if __name__ == "__main__":
    main()
