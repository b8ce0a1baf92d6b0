"""The landing area as an Airflow Asset: a new complete batch there starts one training run; and the deferrable wait
of a scoring run for its batch.

A batch is one subfolder of the dataset's landing folder (`DatasetSpec.landing_dir`); it is complete, and announced
on the next poll, once its `_SUCCESS` marker exists (written after the last data file).

`NewBatchTrigger` runs in the Airflow triggerer as the Asset's watcher and remembers the batches it announced in
the Asset's state store, so each batch is announced once; on its first start it records what is already there
without announcing it. Each poll that finds new batches emits one Asset event (payload: the batch folders), which
the scheduler turns into one run of the dataset's training DAG (events queued while a run is active merge into the
next run). Announcements are at least once: a batch stays pending in the store until a training run of the
dataset pins it (a file of the batch in a run's `inputs.json`), and a (re)started trigger announces again, on its
first poll, every pending batch no run has pinned, so an event lost between saving the state and emitting it (a
killed triggerer) still starts a run. A batch whose run was queued but had not pinned it yet may start a second.

`BatchMarkerTrigger` waits, in the triggerer, for the `_SUCCESS` marker of a scoring run's batch until a deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from airflow.sdk import Asset, AssetWatcher
from airflow.triggers.base import BaseEventTrigger, BaseTrigger, TriggerEvent

from continuous_training.config import Settings, get_settings
from continuous_training.paths import INGEST, INPUTS_FILE, SUCCESS_MARKER
from continuous_training.spec import DatasetSpec

log = logging.getLogger(__name__)

ANNOUNCED_KEY = "announced_batches"
PENDING_KEY = "pending_batches"


def complete_batches(landing: Path) -> set[str]:
    """Names of the landing folder's subfolders that hold a `_SUCCESS` marker."""
    if not landing.is_dir():
        return set()
    return {entry.name for entry in landing.iterdir() if (entry / SUCCESS_MARKER).is_file()}


def pinned_batches(landing: Path, ingest: Path) -> set[str]:
    """Names of the landing folder's batches that a run's `inputs.json` under the dataset's ingest folder pins a
    file of; an unreadable `inputs.json` is skipped and named (its batches count as not pinned)."""
    names = set()
    for inputs in ingest.glob(f"run_id=*/{INPUTS_FILE}"):
        try:
            files = [file["path"] for file in json.loads(inputs.read_text())["files"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("skipping the unreadable %s: %s", inputs, error)
            continue
        for file in files:
            local = file.removeprefix("file:").replace("///", "/", 1) if file.startswith("file:") else file
            for path in {Path(local), Path(unquote(local))}:
                if path.is_relative_to(landing) and path != landing:
                    names.add(path.relative_to(landing).parts[0])
    return names


class NewBatchTrigger(BaseEventTrigger):
    """Polls a landing folder and yields one event per poll that finds complete batches not announced before; with
    `ingest` (the dataset's ingest stage folder), also the batches it announced that no run has pinned, once after
    each start."""

    def __init__(self, landing: str, poll_interval: float = 30.0, ingest: str | None = None) -> None:
        super().__init__()
        self.landing = landing
        self.poll_interval = poll_interval
        self.ingest = ingest

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "landing": self.landing, "poll_interval": self.poll_interval, "ingest": self.ingest}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        store = self.asset_state_store
        landing = Path(self.landing)
        announced = await store.aget(ANNOUNCED_KEY)
        if announced is None:
            announced = sorted(await asyncio.to_thread(complete_batches, landing))
            await store.aset(ANNOUNCED_KEY, announced)
            self.log.info("watching %s; %d batches already there are not new", landing, len(announced))
        known = set(announced)
        pending = set(await store.aget(PENDING_KEY) or []) if self.ingest else set()
        again = set(pending)
        while True:
            complete = await asyncio.to_thread(complete_batches, landing)
            new = complete - known
            unpinned = pending & complete
            if unpinned:
                unpinned -= await asyncio.to_thread(pinned_batches, landing, Path(self.ingest))
            announce = sorted(new | (again & unpinned))
            again = set()
            if new or unpinned != pending:
                known |= new
                pending = unpinned | (new if self.ingest else set())
                await store.aset(ANNOUNCED_KEY, sorted(known))
                if self.ingest:
                    await store.aset(PENDING_KEY, sorted(pending))
            if announce:
                self.log.info("batches to train on in %s: %s", landing, announce)
                yield TriggerEvent({"landing": self.landing, "batches": announce})
            await asyncio.sleep(self.poll_interval)


class BatchMarkerTrigger(BaseTrigger):
    """Polls for a batch folder's `_SUCCESS` marker; one event when it is there or the deadline (ISO) passed."""

    def __init__(self, marker: str, deadline: str, poll_interval: float = 30.0) -> None:
        super().__init__()
        self.marker = marker
        self.deadline = deadline
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "marker": self.marker, "deadline": self.deadline, "poll_interval": self.poll_interval}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = datetime.fromisoformat(self.deadline)
        while True:
            found = await asyncio.to_thread(Path(self.marker).is_file)
            left = (deadline - datetime.now(UTC)).total_seconds()
            if found or left <= 0:
                yield TriggerEvent({"marker": self.marker, "found": found})
                return
            await asyncio.sleep(min(self.poll_interval, left))


def landing_asset(spec: DatasetSpec, settings: Settings | None = None) -> Asset:
    """The dataset's landing area as an Asset, watched by a `NewBatchTrigger` that reconciles with the pins of the
    dataset's training runs."""
    settings = settings or get_settings()
    landing = spec.landing_dir(settings)
    trigger = NewBatchTrigger(str(landing), settings.landing_poll_seconds, str(settings.data_dir / spec.name / INGEST))
    return Asset(name=f"{spec.name}_landing", uri=landing.as_uri(), group="landing",
                 watchers=[AssetWatcher(name=f"{spec.name}_new_batches", trigger=trigger)])
