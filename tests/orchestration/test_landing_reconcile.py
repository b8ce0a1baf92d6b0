"""Landing events at least once: a batch whose event a killed triggerer never emitted starts a run after the
restart, as soon as no training run has pinned it; a batch a run pinned is never announced again.

The trigger is the one the landing Asset serializes, constructed fresh from its serialized kwargs as the triggerer
does after a restart; the pins are written by ingest's own `pin_inputs` on real Spark."""

from __future__ import annotations

from pathlib import Path

import pytest
from continuous_training.data.ingest import pin_inputs
from continuous_training.orchestration.landing import ANNOUNCED_KEY, landing_asset
from continuous_training.paths import INGEST, stage_dir
from continuous_training.spec import load_spec
from test_landing import StateStore, batch, events

pytestmark = pytest.mark.integration


def restarted_trigger(spec, settings):
    """The landing watcher's trigger as a (re)started triggerer builds it: from its serialized kwargs only."""
    [watcher] = landing_asset(spec, settings).watchers
    classpath, kwargs = watcher.trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    return getattr(__import__(module, fromlist=[name]), name)(**kwargs)


def test_a_batch_whose_event_a_killed_triggerer_lost_starts_a_run_within_two_polls_after_the_restart(
        spark, settings) -> None:
    spec = load_spec("churn", settings)
    landing = spec.landing_dir(settings)
    batch(landing, "date=2026-11-01")
    store = StateStore()
    assert events(restarted_trigger(spec, settings), store, polls=2) == [], "already there: not new"
    pin_inputs(spark, spec, stage_dir(spec.name, INGEST, "trained-on-the-first", settings), spec.source_path(settings))

    batch(landing, "date=2026-11-02")
    lost = events(restarted_trigger(spec, settings), store, polls=2, keep=False)
    assert lost == [] and "date=2026-11-02" in store.values[ANNOUNCED_KEY], "saved as announced, event lost"

    after_restart = events(restarted_trigger(spec, settings), store, polls=2)

    assert after_restart == [{"landing": str(landing), "batches": ["date=2026-11-02"]}]
    pin_inputs(spark, spec, stage_dir(spec.name, INGEST, "trained-on-both", settings), spec.source_path(settings))
    assert events(restarted_trigger(spec, settings), store, polls=3) == [], \
        "a batch a run pinned is not announced again"


def test_a_pinned_batch_is_not_announced_again_after_a_restart(spark, settings) -> None:
    spec = load_spec("churn", settings)
    landing = spec.landing_dir(settings)
    store = StateStore()
    assert events(restarted_trigger(spec, settings), store, polls=1) == []
    batch(landing, "date=2026-11-03")
    announced = events(restarted_trigger(spec, settings), store, polls=2)
    pin_inputs(spark, spec, stage_dir(spec.name, INGEST, "the-announced-run", settings), spec.source_path(settings))

    assert announced == [{"landing": str(landing), "batches": ["date=2026-11-03"]}]
    assert events(restarted_trigger(spec, settings), store, polls=3) == []
    assert Path(landing / "date=2026-11-03").is_dir()
