"""The landing watcher: complete batches only, each announced once, across restarts, and nothing already there.

The trigger's state store is Airflow's (tests/e2e/test_services.py runs it in the real triggerer); here it is a
dict with the same async get/set, so the polling logic is tested in isolation and fast."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from continuous_training.orchestration.landing import ANNOUNCED_KEY, NewBatchTrigger, complete_batches, landing_asset
from continuous_training.paths import SUCCESS_MARKER
from continuous_training.spec import load_spec

POLL_S = 0.05


class StateStore:
    """The async get/set of an Asset's state store, in memory."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    async def aget(self, key: str, default: object = None) -> object:
        return self.values.get(key, default)

    async def aset(self, key: str, value: object) -> None:
        self.values[key] = value


def batch(landing: Path, name: str, complete: bool = True) -> Path:
    folder = landing / name
    folder.mkdir(parents=True)
    (folder / "part-00000.csv").write_text("customer_id\nC1\n")
    if complete:
        (folder / SUCCESS_MARKER).touch()
    return folder


def events(trigger: NewBatchTrigger, store: StateStore, polls: int, between=None, keep: bool = True) -> list[dict]:
    """The payloads the trigger yields within `polls` poll intervals, then it is killed; `between()` runs after the
    first poll. With `keep=False` the triggerer dies between the trigger saving its state and emitting its first
    event: the event is lost."""
    trigger.asset_state_store = store

    async def collect() -> list[dict]:
        found: list[dict] = []

        async def consume() -> None:
            async for event in trigger.run():
                if not keep:
                    raise asyncio.CancelledError
                found.append(event.payload)

        task = asyncio.create_task(consume())
        await asyncio.sleep(POLL_S / 2)
        if between:
            between()
        await asyncio.sleep(POLL_S * polls)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return found

    return asyncio.run(collect())


def test_complete_batches_need_their_marker(tmp_path: Path) -> None:
    batch(tmp_path, "date=2026-11-01")
    batch(tmp_path, "date=2026-11-02", complete=False)
    assert complete_batches(tmp_path) == {"date=2026-11-01"}
    assert complete_batches(tmp_path / "absent") == set()


def test_batches_there_before_the_first_watch_are_not_new(tmp_path: Path) -> None:
    batch(tmp_path, "date=2026-11-01")
    store = StateStore()
    assert events(NewBatchTrigger(str(tmp_path), POLL_S), store, polls=3) == []
    assert store.values[ANNOUNCED_KEY] == ["date=2026-11-01"]


def test_one_event_per_new_complete_batch_and_none_while_it_is_written(tmp_path: Path) -> None:
    store = StateStore()
    writing = {}
    found = events(NewBatchTrigger(str(tmp_path), POLL_S), store, polls=4,
                   between=lambda: writing.update(folder=batch(tmp_path, "date=2026-11-05", complete=False)))
    assert found == []

    found = events(NewBatchTrigger(str(tmp_path), POLL_S), store, polls=4,
                   between=lambda: (writing["folder"] / SUCCESS_MARKER).touch())
    assert found == [{"landing": str(tmp_path), "batches": ["date=2026-11-05"]}]

    assert events(NewBatchTrigger(str(tmp_path), POLL_S), store, polls=4) == [], "a restart announces nothing twice"
    assert store.values[ANNOUNCED_KEY] == ["date=2026-11-05"]


def test_the_landing_asset_watches_the_specs_landing_folder(settings) -> None:
    spec = load_spec("churn")
    asset = landing_asset(spec, settings)
    landing = settings.data_dir / "landing" / "churn"
    assert (asset.name, asset.uri) == ("churn_landing", landing.as_uri())
    [watcher] = asset.watchers
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath == "continuous_training.orchestration.landing.NewBatchTrigger"
    assert kwargs == {"landing": str(landing), "poll_interval": settings.landing_poll_seconds,
                      "ingest": str(settings.data_dir / "churn" / "ingest")}
