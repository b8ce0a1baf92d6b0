"""Landing file names with spaces, URI-escaped or glob characters and non-ASCII letters are ingested on the first
run, on a rerun of it (which reads the pinned files back) and on the next run, each named in the manifest."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from continuous_training.config import Settings
from continuous_training.data.ingest import ingest
from continuous_training.paths import stage_dir
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from test_bad_input import HEADER, RUN_ID, make_spec, run_stages

pytestmark = pytest.mark.integration

NAMES = ["a b.csv", "x[1].csv", "100%.csv", "é.csv", "{b}.csv", "s*.csv", "q?.csv", "h#.csv", "p+q.csv",
         "x%5B1%5D.csv", "back\\slash.csv"]
# ASCII printable but '/' (a folder) and ':' (Hadoop paths cannot hold it), plus the characters of the issue.
ALPHABET = "".join(chr(code) for code in range(32, 127) if chr(code) not in "/:") + " %[]{}*?#é"


def test_names_with_spaces_glob_characters_and_non_ascii_letters_are_ingested_on_every_run(spark, settings,
                                                                                           tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    for index, name in enumerate(NAMES):
        (landing / name).write_text(HEADER + f"id{index},{index}.5,basic,{index % 2}\n")
    spec = make_spec(landing)
    expected_ids = [f"id{index}" for index in range(len(NAMES))]

    first = run_stages(spark, spec, settings, expected_ids)
    rerun = ingest(spark, spec, RUN_ID, stage_dir(spec.name, "ingest", RUN_ID, settings), settings)
    next_id = "manual__2026-11-22T00:00:00+00:00"
    next_run = ingest(spark, spec, next_id, stage_dir(spec.name, "ingest", next_id, settings), settings)

    named = {f"file:{landing / name}": 1 for name in NAMES}
    assert first.ingested.files == rerun.files == next_run.files == named
    assert sorted(first.valid_ids) == sorted(expected_ids)
    sources = spark.read.parquet(str(stage_dir(spec.name, "ingest", RUN_ID, settings) / "data"))
    assert {row["_source_file"] for row in sources.select("_source_file").collect()} == set(named)


@hypothesis_settings(max_examples=10, deadline=None)
@given(names=st.lists(st.text(ALPHABET, min_size=1, max_size=12), min_size=1, max_size=4,
                      unique=True))
def test_any_file_name_over_ascii_and_the_special_characters_is_ingested(spark, names):
    names = [f"f{name}.csv" for name in names]  # '_' or '.' first would make a hidden file, as _SUCCESS is
    with tempfile.TemporaryDirectory() as root:
        settings = Settings(data_dir=Path(root) / "data")
        landing = Path(root) / "landing"
        landing.mkdir()
        for index, name in enumerate(names):
            (landing / name).write_text(HEADER + f"id{index},1.0,basic,0\n")
        spec = make_spec(landing)

        result = ingest(spark, spec, RUN_ID, stage_dir(spec.name, "ingest", RUN_ID, settings), settings)

        assert result.files == {f"file:{landing / name}": 1 for name in names}
