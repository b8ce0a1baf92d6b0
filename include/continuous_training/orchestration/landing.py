"""The landing area as an Airflow Asset: a new complete batch there starts one training run.

A batch is one subfolder of the dataset's landing folder (`DatasetSpec.landing_dir`); it is complete, and announced
on the next poll, once its `_SUCCESS` marker exists (written after the last data file).

`NewBatchTrigger` runs in the Airflow triggerer as the Asset's watcher and remembers the batches it announced in
the Asset's state store, so each batch is announced once; on its first start it records what is already there
without announcing it. Each poll that finds new batches emits one Asset event (payload: the batch folders), which
the scheduler turns into one run of the dataset's training DAG (events queued while a run is active merge into the
next run). An event lost to a triggerer crash is harmless: ingest reads the whole landing glob.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetWatcher
from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from continuous_training.config import Settings, get_settings
from continuous_training.paths import SUCCESS_MARKER
from continuous_training.spec import DatasetSpec

ANNOUNCED_KEY = "announced_batches"


def complete_batches(landing: Path) -> set[str]:
    """Names of the landing folder's subfolders that hold a `_SUCCESS` marker."""
    if not landing.is_dir():
        return set()
    return {entry.name for entry in landing.iterdir() if (entry / SUCCESS_MARKER).is_file()}


class NewBatchTrigger(BaseEventTrigger):
    """Polls a landing folder and yields one event per poll that finds complete batches not announced before."""

    def __init__(self, landing: str, poll_interval: float = 30.0) -> None:
        super().__init__()
        self.landing = landing
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "landing": self.landing, "poll_interval": self.poll_interval}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        store = self.asset_state_store
        landing = Path(self.landing)
        announced = await store.aget(ANNOUNCED_KEY)
        if announced is None:
            announced = sorted(await asyncio.to_thread(complete_batches, landing))
            await store.aset(ANNOUNCED_KEY, announced)
            self.log.info("watching %s; %d batches already there are not new", landing, len(announced))
        known = set(announced)
        while True:
            new = sorted(await asyncio.to_thread(complete_batches, landing) - known)
            if new:
                known.update(new)
                await store.aset(ANNOUNCED_KEY, sorted(known))
                self.log.info("new batches in %s: %s", landing, new)
                yield TriggerEvent({"landing": self.landing, "batches": new})
            await asyncio.sleep(self.poll_interval)


def landing_asset(spec: DatasetSpec, settings: Settings | None = None) -> Asset:
    """The dataset's landing area as an Asset, watched by a `NewBatchTrigger`."""
    settings = settings or get_settings()
    landing = spec.landing_dir(settings)
    return Asset(
        name=f"{spec.name}_landing",
        uri=landing.as_uri(),
        group="landing",
        watchers=[AssetWatcher(name=f"{spec.name}_new_batches",
                               trigger=NewBatchTrigger(str(landing), settings.landing_poll_seconds))],
    )
