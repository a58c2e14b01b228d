"""Projections: pure folds from events to the seed's JSON views, kept current by a projector.

Views (the seed's layout and schemas, extended, never contradicted; every name from ``storage.layout``)::

    users/<id>/metadata/user_info.json       platform partition: User events
    users/<id>/metadata/gpu_pricing.json     platform partition: PriceList (one copy per user)
    users/<id>/metadata/{jobs,datasets,models}.json, billing.json, billing_history.json
    users/<id>/jobs/<job_id>/status.json     users/<id>/data/<dataset_id>/metadata.json
    users/<id>/models/<model_id>/metadata.json
    users/<id>/metadata/position.json        the head every view of the partition reflects
    platform/metadata/{users,gpu_pricing,base_models,position}.json

Rules every view follows:

* ``position`` (top level) is the notification id of the last event that changed
  the view, so rebuilding from 0 gives the same bytes as incremental upkeep.
* Money is integer micro-dollars in ``*_usd_micros`` and, beside it, exact dollars
  as a JSON number rendered from those integers (``156.78``, ``0.000123``).
* Times are UTC ``...Z`` strings; lists are ordered (creation time, then id).
* Closed billing months live in ``billing_history.json`` (newest first); the
  current one (the latest month any usage or budget alert names) in ``billing.json``.
* A deleted dataset or model keeps its metadata.json as a tombstone
  (``status: deleted``) and leaves its listing.

Modules: one projection per module (``jobs``, ``datasets``, ``models``,
``billing``, ``users``, ``pricing``, ``catalogue``), routed by event type in
``partition``; ``projector`` writes views, ``store`` serves them to the API,
``audit`` checks and rebuilds them, ``report`` makes monthly billing reports;
``python -m projections`` is the operator's entry point.
"""

from projections.audit import (
    AuditReport,
    RebuildReport,
    ViewDifference,
    audit_bucket,
    audit_partition,
    rebuild_bucket,
    rebuild_partition,
)
from projections.partition import open_partition
from projections.projector import OpenApp, Projector
from projections.replay import apps_on, read_events, replay
from projections.report import ReportRow, monthly_report, report_csv, report_document, report_json
from projections.store import ViewStore

__all__ = [
    "AuditReport",
    "OpenApp",
    "Projector",
    "RebuildReport",
    "ReportRow",
    "ViewDifference",
    "ViewStore",
    "apps_on",
    "audit_bucket",
    "audit_partition",
    "monthly_report",
    "open_partition",
    "read_events",
    "rebuild_bucket",
    "rebuild_partition",
    "replay",
    "report_csv",
    "report_document",
    "report_json",
]
