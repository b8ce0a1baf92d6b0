"""Seeded generator of a customer-churn demo dataset, written as dated CSV batches into the landing area.

`generate` writes ``<DATA_DIR>/landing/<dataset>/date=YYYY-MM-DD/part-NNNNN.csv`` (one file per chunk of rows);
`generate_scoring` writes later days to score, ``<DATA_DIR>/incoming/<dataset>/date=YYYY-MM-DD/part-00000.csv``
(every column but the labels), and their labels apart, ``<DATA_DIR>/labels/<dataset>/date=YYYY-MM-DD/labels.csv``
(``customer_id``, the three labels and ``date``); each folder gets its ``_SUCCESS`` marker after its file. The
labels (``churned``, ``customer_value``, ``plan_tier``) are nonlinear functions of the features plus noise;
``drift`` shifts the feature distributions and the churn relation; ``bad_fraction`` injects malformed rows of
assorted kinds for validation to catch.
"""

from __future__ import annotations

import argparse
import io
import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from continuous_training.config import PROJECT_ROOT, get_settings
from continuous_training.paths import SUCCESS_MARKER, write_text_atomic

COLUMNS = (
    "customer_id", "signup_date", "tenure_months", "monthly_charges", "total_charges", "support_calls",
    "Avg Session (min)", "contract", "payment_method", "internet_service", "region", "churned", "customer_value",
    "plan_tier",
)
LABELS = ("churned", "customer_value", "plan_tier")
CONTRACTS = ("month-to-month", "one-year", "two-year")
PAYMENT_METHODS = ("electronic-check", "mailed-check", "bank-transfer", "credit-card")
INTERNET_SERVICES = ("DSL", "fiber", "none")
REGIONS = ("north", "south", "east", "west", "central", "mountain")
PLAN_TIERS = ("bronze", "silver", "gold", "platinum")
MAX_TENURE = 72
BAD_ROW_KINDS = ("non_numeric_text", "non_finite", "missing_field", "duplicate_id", "label_out_of_range",
                 "unknown_contract", "negative_tenure")
DEFAULT_CHUNK_ROWS = 250_000

_REGION_CHURN_EFFECT = np.array([0.0, 0.25, -0.1, 0.1, -0.2, 0.3])
# Cut points of the plan score at its 40/70/90 % quantiles without drift: about 40/30/20/10 % per tier.
_TIER_THRESHOLDS = np.array([3.358, 4.297, 5.192])
_VALUE_NOISE_SD = 120.0


@dataclass(frozen=True)
class DemoData:
    """What one generation wrote."""

    landing_dir: Path
    files: tuple[Path, ...]
    rows_written: int
    bad_rows: int


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _clean_chunk(rng: np.random.Generator, n: int, batch_date: date, drift: float) -> pd.DataFrame:
    """``n`` valid rows observed on ``batch_date`` (ids are filled in by the caller)."""
    tenure = np.clip(np.rint(MAX_TENURE * rng.beta(0.75, 0.95, n)), 0, MAX_TENURE).astype(np.int64)
    t = tenure / MAX_TENURE

    long_contract = _sigmoid(-1.6 + 3.5 * t - 1.5 * drift)
    two_year_share = _sigmoid(-0.5 + 1.5 * t)
    u = rng.random(n)
    contract = np.where(u >= long_contract, 0, np.where(rng.random(n) < two_year_share, 2, 1))
    internet = rng.choice(3, size=n, p=[0.35, 0.45, 0.20])
    payment = rng.choice(4, size=n, p=[0.34, 0.22, 0.22, 0.22])
    region = rng.choice(len(REGIONS), size=n, p=[0.2, 0.2, 0.18, 0.17, 0.15, 0.1])
    mtm, two = contract == 0, contract == 2
    fiber, no_internet = internet == 1, internet == 2

    base = np.array([52.0, 82.0, 22.0])[internet]
    monthly = np.clip(base + rng.normal(0.0, 9.0, n) + 4.0 * two + 15.0 * drift, 18.0, 160.0).round(2)
    total = (monthly * (tenure + rng.random(n)) * rng.uniform(0.93, 1.05, n)).round(2)
    support_calls = rng.poisson(0.5 + 0.9 * fiber + 0.6 * (1.0 - t) + 1.5 * drift)
    session = np.exp(rng.normal(2.9 + 0.3 * fiber - 1.2 * no_internet + 0.2 * t - 0.2 * drift, 0.45, n)).round(2)
    signup = np.datetime64(batch_date, "D") - (30 * tenure + rng.integers(0, 30, n)).astype("timedelta64[D]")

    m = (monthly - 65.0) / 30.0
    logit = (
        -1.3
        + 1.3 * mtm
        - 1.1 * two
        - 3.4 * t
        + 2.0 * t**2
        + 0.5 * m
        + 0.8 * m * mtm
        + 0.32 * support_calls * (1.0 + 0.6 * fiber)
        - 0.03 * support_calls**2
        + 0.5 * (payment == 0)
        - 0.5 * np.log(session / 20.0)
        + _REGION_CHURN_EFFECT[region]
        + drift * (0.9 * m * ~mtm + 1.2 * t - 0.5)
    )
    churned = (rng.random(n) < _sigmoid(logit)).astype(np.int64)

    value = (
        12.0 * monthly * (0.45 + 0.55 * np.sqrt(t)) * (1.0 - 0.35 * _sigmoid(logit))
        + 45.0 * np.log1p(session) * (1.0 + 0.5 * fiber)
        + 60.0 * two
        + rng.normal(0.0, _VALUE_NOISE_SD, n)
    ).round(2)

    score = (
        0.025 * monthly
        + 1.5 * np.sqrt(t)
        + 0.4 * np.log(session)
        + 0.6 * two
        - 0.3 * mtm
        + 0.4 * (monthly > 90.0) * fiber
        + rng.normal(0.0, 0.3, n)
    )
    tier = np.searchsorted(_TIER_THRESHOLDS, score)

    return pd.DataFrame(
        {
            "customer_id": "",
            "signup_date": np.datetime_as_string(signup, unit="D"),
            "tenure_months": tenure,
            "monthly_charges": monthly,
            "total_charges": total,
            "support_calls": support_calls.astype(np.int64),
            "Avg Session (min)": session,
            "contract": np.array(CONTRACTS, dtype=object)[contract],
            "payment_method": np.array(PAYMENT_METHODS, dtype=object)[payment],
            "internet_service": np.array(INTERNET_SERVICES, dtype=object)[internet],
            "region": np.array(REGIONS, dtype=object)[region],
            "churned": churned,
            "customer_value": value,
            "plan_tier": np.array(PLAN_TIERS, dtype=object)[tier],
        },
        columns=list(COLUMNS),
    )


def _set(frame: pd.DataFrame, row: int, column: str, value: object) -> None:
    if frame[column].dtype != object:
        frame[column] = frame[column].astype(object)
    frame.iat[row, frame.columns.get_loc(column)] = value


def _inject_bad_rows(rng: np.random.Generator, frame: pd.DataFrame, count: int) -> set[int]:
    """Corrupt ``count`` distinct rows in place; returns the rows whose CSV line loses its last field."""
    n = len(frame)
    rows = rng.choice(n, size=count, replace=False)
    kinds = rng.permutation(np.arange(count) % len(BAD_ROW_KINDS))
    truncated: set[int] = set()
    for row, kind in zip(rows.tolist(), kinds.tolist(), strict=True):
        name = BAD_ROW_KINDS[kind]
        if name == "non_numeric_text":
            column = ("monthly_charges", "tenure_months", "support_calls")[row % 3]
            _set(frame, row, column, ("n/a", "unknown", "twelve")[row % 3])
        elif name == "non_finite":
            column = ("monthly_charges", "total_charges", "Avg Session (min)")[row % 3]
            _set(frame, row, column, ("NaN", "Inf", "-Inf")[row % 3])
        elif name == "missing_field":
            truncated.add(row)
        elif name == "duplicate_id":
            _set(frame, row, "customer_id", frame.iat[(row + 1 + int(rng.integers(n - 1))) % n, 0])
        elif name == "label_out_of_range":
            _set(frame, row, "churned", (2, -1)[row % 2])
        elif name == "unknown_contract":
            _set(frame, row, "contract", ("weekly", "lifetime")[row % 2])
        else:
            _set(frame, row, "tenure_months", -int(rng.integers(1, 13)))
    return truncated


def _to_csv_bytes(frame: pd.DataFrame, truncated: set[int]) -> bytes:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    text = buffer.getvalue()
    if truncated:
        lines = text.split("\n")
        for row in truncated:
            lines[row + 1] = lines[row + 1].rsplit(",", 1)[0]
        text = "\n".join(lines)
    return text.encode("utf-8")


def _write_if_changed(path: Path, content: bytes) -> None:
    """Atomically write ``content``; an identical existing file is left untouched."""
    if path.is_file() and path.stat().st_size == len(content) and path.read_bytes() == content:
        return
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def generate(rows: int = 100_000, batches: int = 4, start_date: date | str = "2026-11-01", seed: int = 0,
             bad_fraction: float = 0.0, drift: float = 0.0, data_dir: Path | str | None = None,
             dataset_name: str = "churn", overwrite: bool = True, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> DemoData:
    """Write ``rows`` rows as ``batches`` daily batches from ``start_date``; deterministic for a seed.

    Each batch folder gets one ``part-NNNNN.csv`` per chunk of at most ``chunk_rows`` rows; part files from an
    earlier, larger generation are removed. With ``overwrite=False`` a batch folder that already holds part
    files is an error. Customer ids embed the batch date, so batches generated separately never collide.
    """
    if rows < 1 or batches < 1 or rows < batches:
        raise ValueError(f"need rows >= batches >= 1, got rows={rows}, batches={batches}")
    if not 0.0 <= bad_fraction <= 0.5:
        raise ValueError(f"bad_fraction must be in [0, 0.5], got {bad_fraction}")
    if not 0.0 <= drift <= 1.0:
        raise ValueError(f"drift must be in [0, 1], got {drift}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    if not dataset_name or "/" in dataset_name or dataset_name.startswith("."):
        raise ValueError(f"invalid dataset name {dataset_name!r}")
    first_day = date.fromisoformat(start_date) if isinstance(start_date, str) else start_date
    landing = Path(data_dir).expanduser().resolve() if data_dir else get_settings().data_dir
    landing = landing / "landing" / dataset_name

    files: list[Path] = []
    bad_rows = 0
    for batch, batch_rows in enumerate(_split(rows, batches)):
        if batch_rows > 10**8:
            raise ValueError(f"at most 100,000,000 rows per batch, got {batch_rows}")
        batch_date = first_day + timedelta(days=batch)
        folder = landing / f"date={batch_date.isoformat()}"
        existing = set(folder.glob("part-*.csv"))
        if existing and not overwrite:
            raise FileExistsError(f"{folder} already holds part files (pass overwrite=True to rewrite it)")
        folder.mkdir(parents=True, exist_ok=True)
        id_prefix = f"C{batch_date:%Y%m%d}"
        offset = 0
        for chunk, chunk_size in enumerate(_split(batch_rows, -(-batch_rows // chunk_rows))):
            rng = np.random.default_rng([seed, batch_date.toordinal(), chunk])
            frame = _clean_chunk(rng, chunk_size, batch_date, drift)
            frame["customer_id"] = [f"{id_prefix}{i:08d}" for i in range(offset, offset + chunk_size)]
            count = int(round(bad_fraction * chunk_size))
            truncated = _inject_bad_rows(rng, frame, count) if count else set()
            path = folder / f"part-{chunk:05d}.csv"
            _write_if_changed(path, _to_csv_bytes(frame, truncated))
            files.append(path)
            bad_rows += count
            offset += chunk_size
        for stale in existing - set(files):
            stale.unlink()
        (folder / SUCCESS_MARKER).touch()
    return DemoData(landing_dir=landing, files=tuple(files), rows_written=rows, bad_rows=bad_rows)


@dataclass(frozen=True)
class ScoringDemo:
    """What one scoring generation wrote: per day, the batch to score and its labels."""

    batches: tuple[Path, ...]
    labels: tuple[Path, ...]
    rows_per_day: int


def generate_scoring(days: int = 1, rows_per_day: int = 5_000, start_date: date | str = "2026-11-05", seed: int = 0,
                     drift: float = 0.0, data_dir: Path | str | None = None,
                     dataset_name: str = "churn") -> ScoringDemo:
    """Write ``days`` unlabelled daily batches to score from ``start_date``, and their labels separately.

    Rows come from the same generator as the training batches (``drift`` shifts them the same way); ids start
    with ``S`` so they never collide with training ids. Deterministic for a seed; rewriting is idempotent.
    """
    if days < 1 or rows_per_day < 1:
        raise ValueError(f"need days >= 1 and rows_per_day >= 1, got days={days}, rows_per_day={rows_per_day}")
    if not 0.0 <= drift <= 1.0:
        raise ValueError(f"drift must be in [0, 1], got {drift}")
    first_day = date.fromisoformat(start_date) if isinstance(start_date, str) else start_date
    root = Path(data_dir).expanduser().resolve() if data_dir else get_settings().data_dir
    batches, labels = [], []
    for day in range(days):
        batch_date = first_day + timedelta(days=day)
        rng = np.random.default_rng([seed, batch_date.toordinal(), 1_000_003])
        frame = _clean_chunk(rng, rows_per_day, batch_date, drift)
        frame["customer_id"] = [f"S{batch_date:%Y%m%d}{i:08d}" for i in range(rows_per_day)]
        partition = f"date={batch_date.isoformat()}"
        batch = root / "incoming" / dataset_name / partition / "part-00000.csv"
        label_file = root / "labels" / dataset_name / partition / "labels.csv"
        for path, columns in ((batch, [c for c in COLUMNS if c not in LABELS]), (label_file, None)):
            path.parent.mkdir(parents=True, exist_ok=True)
            content = frame[columns] if columns else frame[["customer_id", *LABELS]].assign(date=batch_date)
            _write_if_changed(path, _to_csv_bytes(content, set()))
            (path.parent / SUCCESS_MARKER).touch()
        batches.append(batch)
        labels.append(label_file)
    return ScoringDemo(batches=tuple(batches), labels=tuple(labels), rows_per_day=rows_per_day)


def churn_spec(name: str, model_name: str | None = None, without: tuple[str, ...] = (),
               **sections: Any) -> dict[str, Any]:
    """The churn spec (include/datasets/churn.yaml) for a demo dataset written under another `name`, each of its
    paths naming it: its model `model_name` (default `<name>_model`), the `without` sections left out, `sections`
    replacing whole sections."""
    spec = yaml.safe_load((PROJECT_ROOT / "include" / "datasets" / "churn.yaml").read_text())
    spec = {key: value for key, value in spec.items() if key not in without}
    spec |= {"name": name, "model_name": model_name or f"{name}_model"}
    spec["source"]["path"] = f"landing/{name}/*/*.csv"
    if "scoring" in spec:
        spec["scoring"]["path"] = f"incoming/{name}/date={{{{ ds }}}}/*.csv"
    if "monitoring" in spec:
        spec["monitoring"]["labels"]["path"] = f"labels/{name}/date={{{{ ds }}}}/*.csv"
        spec["monitoring"]["labelled_batches"] = f"landing/{name}/labelled_for={{{{ ds }}}}"
    return spec | sections


def write_churn_spec(folder: Path, name: str, **changes: Any) -> Path:
    """`churn_spec(name, **changes)` written to `folder/<name>.yaml`; its path."""
    path = folder / f"{name}.yaml"
    write_text_atomic(path, yaml.safe_dump(churn_spec(name, **changes), sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    """Command line: ``ct-demo-data --rows 1000000 --batches 4 --seed 7 --drift 0.5``."""
    parser = argparse.ArgumentParser(prog="ct-demo-data", description=generate.__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="Total rows over all batches.")
    parser.add_argument("--batches", type=int, default=4, help="Number of daily batches.")
    parser.add_argument("--start-date", default="2026-11-01", help="Date of the first batch (YYYY-MM-DD).")
    parser.add_argument("--seed", type=int, default=0, help="Random seed; same seed, same files.")
    parser.add_argument("--bad-fraction", type=float, default=0.0, help="Fraction of malformed rows (0..0.5).")
    parser.add_argument("--drift", type=float, default=0.0, help="Distribution and label drift (0..1).")
    parser.add_argument("--data-dir", type=Path, default=None, help="Override DATA_DIR.")
    parser.add_argument("--dataset-name", default="churn", help="Folder under <DATA_DIR>/landing/.")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="Rows per part file.")
    parser.add_argument("--scoring-days", type=int, default=0,
                        help="Also write this many unlabelled daily batches to score, from the day after the last "
                             "training batch, and their labels apart.")
    parser.add_argument("--scoring-rows", type=int, default=5_000, help="Rows per scoring batch.")
    parser.add_argument("--drifted-scoring-days", type=int, default=0,
                        help="The last N scoring days drift by --scoring-drift instead of --drift.")
    parser.add_argument("--scoring-drift", type=float, default=1.0, help="Drift of the drifted scoring days (0..1).")
    parser.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=True,
                        help="Rewrite batch folders that already exist.")
    args = parser.parse_args(argv)
    try:
        result = generate(rows=args.rows, batches=args.batches, start_date=args.start_date, seed=args.seed,
                          bad_fraction=args.bad_fraction, drift=args.drift, data_dir=args.data_dir,
                          dataset_name=args.dataset_name, overwrite=args.overwrite, chunk_rows=args.chunk_rows)
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    folders = sorted({path.parent.name for path in result.files})
    print(
        f"wrote {result.rows_written:,} rows ({result.bad_rows:,} bad) in {len(result.files)} files "
        f"to {result.landing_dir} ({folders[0]} .. {folders[-1]})"
    )
    if args.scoring_days:
        if not 0 <= args.drifted_scoring_days <= args.scoring_days:
            parser.error("--drifted-scoring-days must be between 0 and --scoring-days")
        first_scoring_day = date.fromisoformat(args.start_date) + timedelta(days=args.batches)
        steady_days = args.scoring_days - args.drifted_scoring_days
        for days, offset, drift in ((steady_days, 0, args.drift),
                                    (args.drifted_scoring_days, steady_days, args.scoring_drift)):
            if days:
                scoring = generate_scoring(days=days, rows_per_day=args.scoring_rows,
                                           start_date=first_scoring_day + timedelta(days=offset), seed=args.seed,
                                           drift=drift, data_dir=args.data_dir, dataset_name=args.dataset_name)
                print(f"wrote {days} scoring batch(es) of {scoring.rows_per_day:,} rows (drift {drift:g}) to "
                      f"{scoring.batches[0].parent.parent} and their labels to {scoring.labels[0].parent.parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
