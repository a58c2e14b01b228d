"""The metering audit: a user's metered usage recomputed from the raw heartbeat archive.

Each ``Job.UsageMetered`` v2 names the archive object its heartbeats were metered from and that
object's sha256 (``storage.heartbeats.archive``: one object per user per ledger batch, holding
every job attempt of the commit; one per job attempt per batch in format v1). The audit reads
each object once and checks its sha256; then for every job attempt whose events name it, in log
order, it takes the attempt's heartbeats from it, verifies each one's signature (with the
platform's heartbeat key, when the audit has it), applies the rules of ``domain.cumulative`` from
the header's receive time, clock bound and tolerance and the attempt's GPU count, starting from
what the log had metered of the attempt before, and compares what that gives with the events.
Every difference is named by job, attempt and seqs:

    missing archive     the object is not in the bucket, or holds nothing of the attempt
    sha256 mismatch     its bytes are not those the event recorded
    unreadable archive  it is no archive
    forged heartbeat    a heartbeat whose signature does not verify (the ledger archives only signed ones)
    foreign heartbeat   a heartbeat of no attempt the archive lists (v1: of another job or attempt)
    anchor differs      the attempt's clock anchor is not the archive's first metered heartbeat
    differs             an event's GPU ms, period, seqs or GPU type/count are not what the archive gives
    unmetered           heartbeats the archive gives usage for that no event metered

Usage metered before the archive existed (v1 events, or v2 ones without an archive) is counted
as ``not_archived``: information, not a problem. Prices are not recomputed here (the log's
price history is audited with the views); periods are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any, Literal

import msgspec

from domain.cumulative import AttemptMeter, clamp_time, fresh, meter_attempt
from domain.job import Job
from domain.money import period_of
from storage.bucket import Bucket, ObjectNotFound
from storage.heartbeats import Archive, Heartbeat, attempt_secret, decode_archive, verify_heartbeat

__all__ = ["METERING_EVENTS", "MeteringDifference", "MeteringReport", "audit_metering"]

METERING_EVENTS = (Job.Submitted, Job.UsageMetered)
"""The events ``audit_metering`` reads (a caller replaying the log anyway may keep only these)."""

MeteringProblem = Literal[
    "missing archive",
    "sha256 mismatch",
    "unreadable archive",
    "forged heartbeat",
    "foreign heartbeat",
    "anchor differs",
    "differs",
    "unmetered",
]


class MeteringDifference(msgspec.Struct, frozen=True):
    """One place where the metered usage is not what its archive gives."""

    job_id: str
    attempt: int
    first_seq: int
    last_seq: int
    problem: MeteringProblem
    detail: str
    archive: str | None = None


class MeteringReport(msgspec.Struct, frozen=True):
    archives: int
    """Archive objects checked (each read once, however many attempts' events name it)."""
    archived_events: int
    not_archived: int
    """``UsageMetered`` events from before the archive (informational)."""
    differences: list[MeteringDifference]

    @property
    def ok(self) -> bool:
        return not self.differences


def audit_metering(
    bucket: Bucket, events: Iterable[Any], heartbeat_key: bytes | None = None
) -> MeteringReport:
    """Recompute every archived ``UsageMetered`` of ``events`` (one user's log, in order) from its archive."""
    job_ids: dict[Any, str] = {}
    metered: dict[Any, list[Job.UsageMetered]] = {}
    for event in events:
        if isinstance(event, Job.Submitted):
            job_ids[event.originator_id] = event.job_id
        elif isinstance(event, Job.UsageMetered):
            metered.setdefault(event.originator_id, []).append(event)
    audit = _Audit(bucket, heartbeat_key)
    for usage in metered.values():
        for event in usage:
            if event.archive is not None:
                audit.uses[event.archive] = audit.uses.get(event.archive, 0) + 1
    for originator, usage in metered.items():
        audit.job(job_ids.get(originator, str(originator)), usage)
    return MeteringReport(audit.archives, audit.archived, audit.not_archived, audit.differences)


class _Audit:
    def __init__(self, bucket: Bucket, heartbeat_key: bytes | None) -> None:
        self.bucket, self.key = bucket, heartbeat_key
        self.archives = self.archived = self.not_archived = 0
        self.differences: list[MeteringDifference] = []
        self.opened: dict[str, _Opened | tuple[MeteringProblem, str]] = {}
        self.uses: dict[str, int] = {}
        """How many events still to check name each archive: one no longer named is released."""

    def job(self, job_id: str, usage: list[Job.UsageMetered]) -> None:
        meters: dict[int, AttemptMeter] = {}
        i = 0
        while i < len(usage):
            first = usage[i]
            group = [first]
            while (
                i + len(group) < len(usage)
                and usage[i + len(group)].archive == first.archive
                and usage[i + len(group)].attempt == first.attempt
            ):
                group.append(usage[i + len(group)])
            i += len(group)
            meter = meters.setdefault(first.attempt, AttemptMeter())
            if first.archive is None:
                self.not_archived += len(group)
            else:
                self.archived += len(group)
                self.check(job_id, group, dataclasses.replace(meter))
                self.release(first.archive, len(group))
            for event in group:  # what the log metered: the next archive is checked from there
                meter.seq, meter.ms = event.last_seq, meter.ms + event.gpu_ms
                if meter.anchor_at is None and event.anchor_at is not None:
                    meter.anchor_at, meter.anchor_ms = event.anchor_at, event.anchor_ms or 0

    def differ(self, job_id: str, group: Sequence[Job.UsageMetered], problem: MeteringProblem, detail: str,
               first: int | None = None, last: int | None = None) -> None:  # fmt: skip
        self.differences.append(
            MeteringDifference(
                job_id,
                group[0].attempt,
                group[0].first_seq if first is None else first,
                group[-1].last_seq if last is None else last,
                problem,
                detail,
                group[0].archive,
            )
        )

    def release(self, name: str, checked: int) -> None:
        """``checked`` more events naming archive ``name`` were checked: once none is left its
        heartbeats are dropped (no event will open it again; what is wrong with one is kept)."""
        self.uses[name] -= checked
        if self.uses[name] == 0 and isinstance(self.opened.get(name), _Opened):
            del self.opened[name]

    def open(self, name: str) -> _Opened | tuple[MeteringProblem, str]:
        """The archive ``name`` (read once), or what is wrong with it; its foreign heartbeats are
        named when it is first read."""
        opened = self.opened.get(name)
        if opened is not None:
            return opened
        self.archives += 1
        try:
            archive = decode_archive(self.bucket.read(name))
        except ObjectNotFound:
            opened = ("missing archive", f"{name} is not in the bucket")
        except (msgspec.DecodeError, ValueError) as exc:
            opened = ("unreadable archive", f"{name}: {exc}")
        else:
            opened = _Opened(archive)
            for h in opened.foreign:
                self.differences.append(
                    MeteringDifference(
                        h.job_id, h.attempt, h.seq, h.seq, "foreign heartbeat",
                        f"{h.key} is of no attempt the archive lists", name,
                    )
                )  # fmt: skip
        self.opened[name] = opened
        return opened

    def check(self, job_id: str, group: list[Job.UsageMetered], meter: AttemptMeter) -> None:
        name, attempt = group[0].archive, group[0].attempt
        assert name is not None
        opened = self.open(name)
        if isinstance(opened, tuple):
            self.differ(job_id, group, *opened)
            return
        archive = opened.archive
        if archive.sha256 != group[0].archive_sha256:
            self.differ(
                job_id, group, "sha256 mismatch",
                f"{name} has sha256 {archive.sha256}, the log recorded {group[0].archive_sha256}",
            )  # fmt: skip
            return
        header = archive.header
        entry = header.attempt(job_id, attempt)
        if entry is None:
            self.differ(job_id, group, "missing archive", f"{name} holds nothing of attempt {attempt}")
            return
        beats = self.authentic(job_id, group, opened.of(job_id, attempt))
        bound = timedelta(milliseconds=header.clock_bound_ms)
        clamped = [
            msgspec.structs.replace(h, at=clamp_time(h.at, header.received, bound))
            for h in beats
            if h.job_id == job_id and h.attempt == attempt
        ]
        kept, _ = fresh(clamped, {attempt: meter.seq})
        refused = set(entry.refused)
        kept = [h for h in kept if h.seq not in refused]
        had_anchor = meter.anchor_at is not None
        tolerance = timedelta(milliseconds=header.gpu_tolerance_ms)
        increases = meter_attempt(kept, meter, entry.bound_count, tolerance)
        if not had_anchor and (meter.anchor_at, meter.anchor_ms) != (group[0].anchor_at, group[0].anchor_ms):
            self.differ(
                job_id, group, "anchor differs",
                f"the log anchors attempt {attempt} at {group[0].anchor_at} ({group[0].anchor_ms} ms), "
                f"the archive at {meter.anchor_at} ({meter.anchor_ms} ms)",
            )  # fmt: skip
        self.compare(job_id, group, increases)

    def authentic(
        self, job_id: str, group: list[Job.UsageMetered], beats: list[Heartbeat]
    ) -> list[Heartbeat]:
        kept = []
        for h in beats:
            if h.job_id != job_id or h.attempt != group[0].attempt:
                self.differ(job_id, group, "foreign heartbeat", f"{h.key} in this archive", h.seq, h.seq)
            elif self.key is not None and not (
                h.signature is not None
                and verify_heartbeat(h, attempt_secret(self.key, h.user_id, h.job_id, h.attempt))
            ):
                self.differ(job_id, group, "forged heartbeat", "its signature does not verify", h.seq, h.seq)
            else:
                kept.append(h)
        return kept

    def compare(self, job_id: str, group: list[Job.UsageMetered], increases: list[Any]) -> None:
        covered: set[int] = set()
        for event in group:
            mine = [i for i in increases if event.first_seq <= i.heartbeat.seq <= event.last_seq]
            covered.update(i.heartbeat.seq for i in mine)
            gives = sum(i.gpu_ms for i in mine)
            periods = {period_of(i.heartbeat.at) for i in mine}
            gpus = {(i.heartbeat.gpu_type, i.heartbeat.gpu_count) for i in mine}
            seqs = (mine[0].heartbeat.seq, mine[-1].heartbeat.seq) if mine else None
            wrong = []
            if gives != event.gpu_ms:
                wrong.append(f"metered {event.gpu_ms} GPU ms, the archive gives {gives}")
            if periods - {event.period}:
                wrong.append(f"period {event.period}, the archive gives {', '.join(sorted(periods))}")
            if gpus - {(event.gpu_type, event.gpu_count)}:
                wrong.append(f"{event.gpu_count} x {event.gpu_type}, the archive gives {sorted(gpus)}")
            if seqs != (event.first_seq, event.last_seq):
                wrong.append(f"seqs {event.first_seq}-{event.last_seq}, the archive gives {seqs or 'none'}")
            if wrong:
                self.differ(job_id, [event], "differs", "; ".join(wrong))
        left = [i for i in increases if i.heartbeat.seq not in covered]
        if left:
            self.differ(
                job_id, group, "unmetered",
                f"{sum(i.gpu_ms for i in left)} GPU ms of {len(left)} heartbeat(s) no event metered",
                left[0].heartbeat.seq, left[-1].heartbeat.seq,
            )  # fmt: skip


class _Opened:
    """An archive read, its heartbeats by job attempt."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.by_attempt: dict[tuple[str, int], list[Heartbeat]] = {}
        for h in archive.heartbeats:
            self.by_attempt.setdefault((h.job_id, h.attempt), []).append(h)
        listed = {(e.job_id, e.attempt) for e in archive.header.attempts}
        self.whole = (None, None) in listed  # v1: one attempt, every heartbeat meant to be of it
        self.foreign = [
            h for h in archive.heartbeats if not self.whole and (h.job_id, h.attempt) not in listed
        ]

    def of(self, job_id: str, attempt: int) -> list[Heartbeat]:
        """The heartbeats to meter the attempt from (v1: all, for ``_Audit.authentic`` to sort out)."""
        return self.archive.heartbeats if self.whole else self.by_attempt.get((job_id, attempt), [])
