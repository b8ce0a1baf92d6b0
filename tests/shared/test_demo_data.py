"""The churn demo data generator: layout, determinism, chunking, bad rows and drift."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from continuous_training.demo import COLUMNS, CONTRACTS, PLAN_TIERS, generate, main


def _read(files: tuple[Path, ...]) -> pd.DataFrame:
    return pd.concat((pd.read_csv(path) for path in files), ignore_index=True)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_layout_columns_and_row_count(tmp_path: Path) -> None:
    result = generate(rows=1_001, batches=3, start_date="2026-11-01", seed=1, data_dir=tmp_path)
    assert result.landing_dir == tmp_path / "landing" / "churn"
    assert result.rows_written == 1_001 and result.bad_rows == 0
    assert [path.parent.name for path in result.files] == [
        "date=2026-11-01",
        "date=2026-11-02",
        "date=2026-11-03",
    ]
    assert all(path.name == "part-00000.csv" for path in result.files)
    frame = _read(result.files)
    assert tuple(frame.columns) == COLUMNS
    assert len(frame) == 1_001
    assert frame["customer_id"].is_unique
    assert frame["customer_id"].str.fullmatch(r"C\d{16}").all()
    assert frame["tenure_months"].between(0, 72).all()
    assert set(frame["churned"]) == {0, 1}
    assert set(frame["contract"]) == set(CONTRACTS)
    assert set(frame["internet_service"]) == {"DSL", "fiber", "none"}
    assert set(frame["plan_tier"]) == set(PLAN_TIERS)
    assert 4 <= frame["region"].nunique() <= 8 and frame["payment_method"].nunique() == 4
    signup = pd.to_datetime(frame["signup_date"], format="%Y-%m-%d")
    assert (signup <= pd.Timestamp("2026-11-03")).all()
    assert frame.select_dtypes("number").notna().all().all()


def test_labels_follow_the_features(tmp_path: Path) -> None:
    frame = _read(generate(rows=6_000, batches=1, seed=2, data_dir=tmp_path).files)
    churn_by_contract = frame.groupby("contract")["churned"].mean()
    assert churn_by_contract["month-to-month"] > churn_by_contract["two-year"] + 0.15
    assert 0.15 < frame["churned"].mean() < 0.45
    assert frame["customer_value"].corr(frame["monthly_charges"]) > 0.3
    mean_charges = frame.groupby("plan_tier")["monthly_charges"].mean()
    assert mean_charges["platinum"] > mean_charges["bronze"]


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    for name in ("a", "b"):
        generate(rows=900, batches=2, seed=5, bad_fraction=0.05, drift=0.3, data_dir=tmp_path / name)
    generate(rows=900, batches=2, seed=6, bad_fraction=0.05, drift=0.3, data_dir=tmp_path / "c")
    assert _snapshot(tmp_path / "a") == _snapshot(tmp_path / "b")
    assert _snapshot(tmp_path / "a") != _snapshot(tmp_path / "c")


def test_chunking_writes_several_files_and_rewrite_removes_stale_parts(tmp_path: Path) -> None:
    result = generate(rows=1_000, batches=2, seed=3, data_dir=tmp_path, chunk_rows=200)
    assert [path.name for path in result.files[:3]] == ["part-00000.csv", "part-00001.csv", "part-00002.csv"]
    assert len(result.files) == 6
    assert [len(pd.read_csv(path)) for path in result.files] == [167, 167, 166] * 2
    assert len(_read(result.files)) == 1_000 and _read(result.files)["customer_id"].is_unique

    again = generate(rows=1_000, batches=2, seed=3, data_dir=tmp_path, chunk_rows=500)
    on_disk = sorted(result.landing_dir.rglob("*.csv"))
    assert on_disk == sorted(again.files) and len(on_disk) == 2
    assert not list(result.landing_dir.rglob(".*"))


def test_rewrite_is_idempotent_and_overwrite_false_refuses(tmp_path: Path) -> None:
    first = generate(rows=500, batches=1, seed=4, data_dir=tmp_path)
    before = _snapshot(tmp_path)
    mtime = first.files[0].stat().st_mtime_ns
    generate(rows=500, batches=1, seed=4, data_dir=tmp_path)
    assert _snapshot(tmp_path) == before
    assert first.files[0].stat().st_mtime_ns == mtime
    with pytest.raises(FileExistsError, match="date=2026-11-01"):
        generate(rows=500, batches=1, seed=4, data_dir=tmp_path, overwrite=False)


def _bad_kinds(path: Path) -> Counter[str]:
    """Classify each malformed line of a CSV the way a validator would see it."""
    kinds: Counter[str] = Counter()
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    seen_ids = Counter(row["customer_id"] for row in rows)
    kinds["duplicate_id"] = sum(count - 1 for count in seen_ids.values())
    for row in rows:
        if row["plan_tier"] is None:
            kinds["missing_field"] += 1
            continue
        numbers = {c: row[c] for c in ("tenure_months", "monthly_charges", "total_charges", "support_calls")}
        numbers["Avg Session (min)"] = row["Avg Session (min)"]
        try:
            values = {column: float(text) for column, text in numbers.items()}
        except ValueError:
            kinds["non_numeric_text"] += 1
            continue
        if not all(math.isfinite(value) for value in values.values()):
            kinds["non_finite"] += 1
        elif row["churned"] not in {"0", "1"}:
            kinds["label_out_of_range"] += 1
        elif row["contract"] not in CONTRACTS:
            kinds["unknown_contract"] += 1
        elif values["tenure_months"] < 0:
            kinds["negative_tenure"] += 1
    return kinds


def test_bad_fraction_injects_every_kind(tmp_path: Path) -> None:
    result = generate(rows=4_000, batches=2, seed=7, bad_fraction=0.05, data_dir=tmp_path)
    assert result.bad_rows == 200
    kinds = sum((_bad_kinds(path) for path in result.files), Counter())
    assert set(kinds) == {
        "non_numeric_text",
        "non_finite",
        "missing_field",
        "duplicate_id",
        "label_out_of_range",
        "unknown_contract",
        "negative_tenure",
    }
    assert all(count >= 20 for count in kinds.values())
    assert 180 <= sum(kinds.values()) <= 200

    clean = generate(rows=4_000, batches=2, seed=7, data_dir=tmp_path / "clean")
    assert sum((_bad_kinds(path) for path in clean.files), Counter()).total() == 0


def test_drift_shifts_distributions_and_labels(tmp_path: Path) -> None:
    base = _read(generate(rows=4_000, batches=1, seed=8, data_dir=tmp_path / "base").files)
    drifted = _read(generate(rows=4_000, batches=1, seed=8, drift=1.0, data_dir=tmp_path / "drift").files)
    assert drifted["monthly_charges"].mean() > base["monthly_charges"].mean() + 10
    assert drifted["support_calls"].mean() > base["support_calls"].mean() + 1
    share = "month-to-month"
    assert (drifted["contract"] == share).mean() > (base["contract"] == share).mean() + 0.1
    assert drifted["churned"].mean() > base["churned"].mean() + 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": 2, "batches": 3}, "rows >= batches"),
        ({"bad_fraction": 0.9}, "bad_fraction"),
        ({"drift": -0.1}, "drift"),
        ({"chunk_rows": 0}, "chunk_rows"),
        ({"dataset_name": "../x"}, "dataset name"),
    ],
)
def test_invalid_arguments_are_rejected(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate(data_dir=tmp_path, **{"rows": 10, **kwargs})


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--rows", "300", "--batches", "2", "--start-date", "2026-12-30", "--seed", "9"]
    argv += ["--bad-fraction", "0.1", "--drift", "0.5", "--data-dir", str(tmp_path), "--dataset-name", "demo"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "300 rows (30 bad)" in out and str(tmp_path / "landing" / "demo") in out
    assert sorted(p.name for p in (tmp_path / "landing" / "demo").iterdir()) == [
        "date=2026-12-30",
        "date=2026-12-31",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(["--rows", "1", "--batches", "2", "--data-dir", str(tmp_path)])
    assert exit_info.value.code == 2


def test_scoring_batches_lack_the_labels_which_arrive_apart(tmp_path: Path) -> None:
    from continuous_training.demo import LABELS, generate_scoring

    first = generate_scoring(days=2, rows_per_day=50, start_date="2026-11-05", seed=3, data_dir=tmp_path)
    snapshot = _snapshot(tmp_path)
    again = generate_scoring(days=2, rows_per_day=50, start_date="2026-11-05", seed=3, data_dir=tmp_path)

    assert again == first and _snapshot(tmp_path) == snapshot
    assert [path.parent.name for path in first.batches] == ["date=2026-11-05", "date=2026-11-06"]
    assert all(path.is_relative_to(tmp_path / "incoming" / "churn") for path in first.batches)
    batch, labels = _read(first.batches), _read(first.labels)
    assert tuple(batch.columns) == tuple(c for c in COLUMNS if c not in LABELS)
    assert tuple(labels.columns) == ("customer_id", *LABELS, "date")
    assert len(batch) == len(labels) == 100
    assert batch["customer_id"].str.fullmatch(r"S\d{16}").all() and batch["customer_id"].is_unique
    assert list(labels["customer_id"]) == list(batch["customer_id"])
    assert set(labels["date"]) == {"2026-11-05", "2026-11-06"}
    drifted = generate_scoring(days=1, rows_per_day=2000, drift=1.0, data_dir=tmp_path / "drifted")
    plain = generate_scoring(days=1, rows_per_day=2000, drift=0.0, data_dir=tmp_path / "plain")
    assert _read(drifted.batches)["monthly_charges"].mean() > _read(plain.batches)["monthly_charges"].mean() + 10


def test_cli_writes_the_next_days_scoring_batches(tmp_path: Path, capsys) -> None:
    main(["--rows", "40", "--batches", "2", "--data-dir", str(tmp_path), "--scoring-days", "1",
          "--scoring-rows", "7"])

    assert "1 scoring batch(es) of 7 rows" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "incoming" / "churn" / "date=2026-11-03" / "part-00000.csv")) == 7
    assert (tmp_path / "labels" / "churn" / "date=2026-11-03" / "labels.csv").is_file()
