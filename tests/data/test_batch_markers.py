"""Where a source's files sit in batch folders (a wildcard in the folder part of its glob), ingest pins only the
folders that hold `_SUCCESS`, as the landing trigger does; a spec can opt out."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from continuous_training.data.ingest import ingest
from continuous_training.errors import PipelineError
from continuous_training.paths import stage_dir
from test_bad_input import HEADER, RUN_ID, make_spec

pytestmark = pytest.mark.integration


def land_batches(landing: Path) -> tuple[Path, Path]:
    """One complete batch folder, and one still being written: a complete part, a part cut mid-line that parses
    as a valid row (`4.` for `4.75`), and no marker yet."""
    complete, partial = landing / "date=2026-11-01", landing / "date=2026-11-02"
    complete.mkdir(parents=True)
    partial.mkdir()
    (complete / "part-00000.csv").write_text(HEADER + "a,1.0,basic,0\nb,2.0,pro,1\n")
    (complete / "_SUCCESS").touch()
    (partial / "part-00000.csv").write_text(HEADER + "c,3.0,basic,0\n")
    (partial / "part-00001.csv").write_text(HEADER + "d,4.")
    return complete, partial


def test_a_batch_folder_without_its_success_marker_is_not_pinned(spark, settings, tmp_path, caplog):
    complete, partial = land_batches(tmp_path / "landing")
    spec = make_spec(tmp_path / "landing", pattern="*/*.csv")
    out_dir = stage_dir(spec.name, "ingest", RUN_ID, settings)

    with caplog.at_level(logging.WARNING, logger="continuous_training.data.ingest"):
        result = ingest(spark, spec, RUN_ID, out_dir, settings)

    pinned = json.loads((out_dir / "inputs.json").read_text())
    assert [file["path"] for file in pinned["files"]] == [f"file:{complete / 'part-00000.csv'}"]
    assert result.files == {f"file:{complete / 'part-00000.csv'}": 2} and result.rows == 2
    assert result.incomplete_batches == pinned["incomplete_batches"] == [f"file:{partial}"]
    assert f"1 batch folder without _SUCCESS skipped: file:{partial}" in caplog.text


def test_a_spec_can_opt_out_of_the_success_marker(spark, settings, tmp_path):
    land_batches(tmp_path / "landing")
    spec = make_spec(tmp_path / "landing", pattern="*/*.csv", require_success_marker=False)

    result = ingest(spark, spec, RUN_ID, stage_dir(spec.name, "ingest", RUN_ID, settings), settings)

    assert result.rows == 4 and len(result.files) == 3 and result.incomplete_batches == []


def test_no_complete_batch_stops_ingest_naming_the_folders(spark, settings, tmp_path):
    _, partial = land_batches(tmp_path / "landing")
    spec = make_spec(tmp_path / "landing", pattern="date=2026-11-02*/*.csv")

    incomplete = r"no complete batch .*: 1 batch folder without _SUCCESS .*require_success_marker: false"
    with pytest.raises(PipelineError, match=incomplete):
        ingest(spark, spec, RUN_ID, stage_dir(spec.name, "ingest", RUN_ID, settings), settings)

    assert not (stage_dir(spec.name, "ingest", RUN_ID, settings) / "manifest.json").exists()


def test_files_matched_without_a_folder_wildcard_need_no_marker(spark, settings, tmp_path):
    _, partial = land_batches(tmp_path / "landing")
    spec = make_spec(partial, pattern="part-00000.csv")

    result = ingest(spark, spec, RUN_ID, stage_dir(spec.name, "ingest", RUN_ID, settings), settings)

    assert result.rows == 1 and result.incomplete_batches == []


def test_the_marker_is_looked_for_in_the_folder_the_wildcard_matches(spark, settings, tmp_path):
    landing = tmp_path / "landing"
    for batch, marker_in in (("b1", "b1"), ("b2", "b2/part")):
        (landing / batch / "part").mkdir(parents=True)
        (landing / batch / "part" / "rows.csv").write_text(HEADER + f"{batch},1.0,basic,0\n")
        (landing / marker_in / "_SUCCESS").touch()
    spec = make_spec(landing, pattern="*/part/*.csv")

    result = ingest(spark, spec, RUN_ID, stage_dir(spec.name, "ingest", RUN_ID, settings), settings)

    assert result.files == {f"file:{landing / 'b1' / 'part' / 'rows.csv'}": 1}
    assert result.incomplete_batches == [f"file:{landing / 'b2'}"]
