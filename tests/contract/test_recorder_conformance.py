"""The library's own recorder conformance suite, run on our recorders on every bucket backend.

``eventsourcing.tests.persistence`` holds one abstract TestCase per recorder
kind; each is subclassed here once per backend (memory, local folder,
fake-gcs-server), every recorder on a fresh partition of that bucket.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import pytest
from eventsourcing.tests import persistence as suite
from eventsourcing.utils import Environment

from storage import Bucket
from storage.eventstore import (
    PERSISTENCE_MODULE,
    BucketAggregateRecorder,
    BucketApplicationRecorder,
    BucketProcessRecorder,
    BucketTrackingRecorder,
    Factory,
    register_bucket,
)
from storage.eventstore.recorders import BucketRecorder
from storage.memory import MemoryBucket


class _OnBucket:
    """Gives each test ``self.bucket`` of the class's ``backend`` and fresh partitions in it."""

    backend: ClassVar[str]
    bucket: Bucket

    @pytest.fixture(autouse=True)
    def _bucket(self, request: pytest.FixtureRequest) -> None:
        self.bucket = (
            MemoryBucket() if self.backend == "memory" else request.getfixturevalue(f"{self.backend}_bucket")
        )

    def new_partition(self) -> str:
        return f"tests/{uuid.uuid4().hex[:12]}/events/"


class _Memory(_OnBucket):
    backend = "memory"


class _Local(_OnBucket):
    backend = "local"


@pytest.mark.gcs
class _Gcs(_OnBucket):
    backend = "gcs"


# -- the recorder kinds -------------------------------------------------------------


class _Kind(_OnBucket):
    """One recorder kind: ``create_recorder`` makes a ``recorder_class`` on a fresh partition."""

    recorder_class: ClassVar[type[BucketRecorder]]

    def create_recorder(self) -> BucketRecorder:
        return self.recorder_class(self.bucket, self.new_partition())


class _Aggregate(_Kind):
    recorder_class = BucketAggregateRecorder


class _Application(_Kind):
    recorder_class = BucketApplicationRecorder

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()  # type: ignore[attr-defined]


class _Tracking(_Kind):
    recorder_class = BucketTrackingRecorder


class _Process(_Kind):
    recorder_class = BucketProcessRecorder


class _NonInterleaving(_Kind):
    recorder_class = BucketApplicationRecorder


class _ViewRecorder(BucketTrackingRecorder):
    """A tracking recorder subclass, as a projection's view would be."""


class _Factory(_OnBucket):
    env: Environment

    def setUp(self) -> None:
        self.env = Environment(
            "TestCase",
            {
                Factory.PERSISTENCE_MODULE: PERSISTENCE_MODULE,
                Factory.TUNE_BUCKET: register_bucket(self.bucket),
                Factory.TUNE_PARTITION: self.new_partition(),
            },
        )
        super().setUp()  # type: ignore[misc]

    def expected_factory_class(self) -> type[Factory]:
        return Factory

    def expected_aggregate_recorder_class(self) -> type[Any]:
        return BucketAggregateRecorder

    def expected_application_recorder_class(self) -> type[Any]:
        return BucketApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[Any]:
        return BucketTrackingRecorder

    def tracking_recorder_subclass(self) -> type[Any]:
        return _ViewRecorder

    def expected_process_recorder_class(self) -> type[Any]:
        return BucketProcessRecorder


# -- one concrete class per (kind, backend) ---------------------------------------------


class TestAggregateRecorderMemory(_Memory, _Aggregate, suite.AggregateRecorderTestCase): ...


class TestAggregateRecorderLocal(_Local, _Aggregate, suite.AggregateRecorderTestCase): ...


class TestAggregateRecorderGcs(_Gcs, _Aggregate, suite.AggregateRecorderTestCase): ...


class TestApplicationRecorderMemory(_Memory, _Application, suite.ApplicationRecorderTestCase): ...


class TestApplicationRecorderLocal(_Local, _Application, suite.ApplicationRecorderTestCase): ...


class TestApplicationRecorderGcs(_Gcs, _Application, suite.ApplicationRecorderTestCase): ...


class TestTrackingRecorderMemory(_Memory, _Tracking, suite.TrackingRecorderTestCase): ...


class TestTrackingRecorderLocal(_Local, _Tracking, suite.TrackingRecorderTestCase): ...


class TestTrackingRecorderGcs(_Gcs, _Tracking, suite.TrackingRecorderTestCase): ...


class TestProcessRecorderMemory(_Memory, _Process, suite.ProcessRecorderTestCase): ...


class TestProcessRecorderLocal(_Local, _Process, suite.ProcessRecorderTestCase): ...


class TestProcessRecorderGcs(_Gcs, _Process, suite.ProcessRecorderTestCase): ...


class TestNonInterleavingMemory(_Memory, _NonInterleaving, suite.NonInterleavingNotificationIDsBaseCase): ...


class TestNonInterleavingLocal(_Local, _NonInterleaving, suite.NonInterleavingNotificationIDsBaseCase): ...


class TestNonInterleavingGcs(_Gcs, _NonInterleaving, suite.NonInterleavingNotificationIDsBaseCase): ...


class TestInfrastructureFactoryMemory(_Memory, _Factory, suite.InfrastructureFactoryTestCase[Factory]): ...


class TestInfrastructureFactoryLocal(_Local, _Factory, suite.InfrastructureFactoryTestCase[Factory]): ...


class TestInfrastructureFactoryGcs(_Gcs, _Factory, suite.InfrastructureFactoryTestCase[Factory]): ...
