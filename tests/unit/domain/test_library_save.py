"""``PartitionApplication.save`` copies eventsourcing's ``Application.save`` step by step (to collect our
aggregates without the library's runtime-Protocol checks, a tenth of a ledger commit): these
tests fail when the pinned library changes underneath it."""

from __future__ import annotations

import hashlib
import inspect
from importlib.metadata import version

from eventsourcing.application import Application, ProcessingEvent

RECHECK = (
    "eventsourcing changed under domain.partition_app.PartitionApplication.save: compare the library's "
    "Application.save and ProcessingEvent.collect_events with PartitionApplication.save and "
    "_AggregateEvents.collect_events (same steps, same order, same private methods), adapt them, "
    "then update the pinned version and hashes here"
)
# sha256 of inspect.getsource(...) in eventsourcing 9.5.6
SOURCES = {
    Application.save: "4e9747d14b8fd046df1b9b8ce688be89030978de0c04a632e6a7ec783dc7c5cc",
    ProcessingEvent.collect_events: "7e3a7e6b1abd2bef334f1ebe7015d887cf935916f87f3c7fbd75127907ab3488",
}


def test_the_pinned_library_version() -> None:
    assert version("eventsourcing") == "9.5.6", RECHECK


def test_the_library_save_and_collect_events_are_unchanged() -> None:
    for function, digest in SOURCES.items():
        source = inspect.getsource(function)
        assert hashlib.sha256(source.encode()).hexdigest() == digest, f"{function.__qualname__}: {RECHECK}"


def test_the_private_steps_it_calls_are_there() -> None:
    steps = {
        "_record": ["self", "processing_event"],
        "_take_snapshots": ["self", "processing_event"],
        "_notify": ["self", "recordings"],
        "notify": ["self", "new_events"],
    }
    for name, parameters in steps.items():
        assert list(inspect.signature(getattr(Application, name)).parameters) == parameters, (
            f"{name}: {RECHECK}"
        )
