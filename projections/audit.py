"""Audit and rebuild: the stored views against a replay of the log from position 0.

``audit_partition`` checks the partition's log (``check_log``: its hash chain and
signatures with ``verify_chain``, every problem named with its commit, stray objects
under events/ by ``storage.layout.check_key``, the commit that the stored position.json
was made from with ``check_anchor``: an edited last commit, a removed tail, and every
head the witness saw with ``check_witness``: a rolled back log, a forged tail), replays the
log into memory and reports every stored view that differs from the replay: missing,
unexpected (a view no event explains), differing (with the first differing
JSON path), or not JSON at all. ``rebuild_partition`` writes the replayed views
over the stored ones and removes unexpected ones. ``audit_bucket`` audits every
partition whatever another holds: users are found in the bucket as well as in the
platform log, and a log that cannot be replayed is reported, not raised.

``rebuild_bucket`` likewise rebuilds every partition it can: a partition whose log does not
hold together (``check_log`` names a problem, or the replay raises ``ChainBroken`` / DataError)
is reported in its ``RebuildReport`` and its views are left untouched, never rebuilt from a
tampered log. ``problem_lines`` is the one-line-per-problem text both CLIs print.

The audit also lists, per user partition, the heartbeats the ledger refused to bill because
they contradicted their attempt's placement or carried another lease (``Job.HeartbeatsRejected``,
``AuditReport.rejected_heartbeats``): findings, not problems (``ok`` does not change).
A user partition's audit also recomputes its metered usage from the raw heartbeat archive
(``projections.metering_audit``; signatures verified when the audit is given the heartbeat key):
``AuditReport.metering`` names every difference; usage from before the archive is "not archived".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

import msgspec
from eventsourcing.persistence import DataError

from domain.errors import ValidationFailed
from projections.metering_audit import METERING_EVENTS, MeteringReport, audit_metering
from projections.partition import Partition, TrackingView
from projections.pool import map_partitions, released
from projections.projector import OpenApp
from projections.render import event_name, iso
from projections.replay import apps_on, replay
from projections.store import stored_position
from storage import layout
from storage.bucket import Bucket, ObjectNotFound, PreconditionFailed
from storage.eventstore.chain import ChainProblem, ChainReport, verify_chain
from storage.eventstore.commits import commit_name, sha256_hex
from storage.eventstore.ledger import ledger_for
from storage.eventstore.log import read_many, serving_broken_chains
from storage.eventstore.signing import Keyring, head_message
from storage.eventstore.witness import Witness, WitnessedHead
from storage.layout import PLATFORM, USERS, events_prefix, user_partition

__all__ = [
    "AuditReport",
    "RebuildReport",
    "RejectedHeartbeats",
    "ViewDifference",
    "audit_bucket",
    "audit_partition",
    "check_anchor",
    "check_log",
    "check_witness",
    "first_difference",
    "problem_lines",
    "rebuild_bucket",
    "rebuild_partition",
]

Problem = Literal["missing", "unexpected", "differs", "invalid"]
Scope = Callable[[str], bool]


class ViewDifference(msgspec.Struct, frozen=True):
    """One stored view that is not what the log says it should be."""

    name: str
    problem: Problem
    path: str | None = None
    """The first differing JSON path (``$.jobs[2].status``) when ``problem`` is ``differs``."""
    stored_position: int | None = None
    replayed_position: int | None = None


class RejectedHeartbeats(msgspec.Struct, frozen=True):
    """Heartbeats of one attempt the ledger refused to bill for ``reason`` (a ``Job.HeartbeatsRejected``)."""

    job_id: str
    attempt: int
    first_seq: int
    last_seq: int
    count: int
    reason: str
    at: str


class AuditReport(msgspec.Struct, frozen=True):
    partition: str
    head: int
    """The last notification id replayed."""
    chain: ChainReport
    replay_error: str | None
    differences: list[ViewDifference]
    witness: str = ""
    """The log against the witness: the head it last saw, or that the log is unwitnessed."""
    rejected_heartbeats: list[RejectedHeartbeats] = msgspec.field(default_factory=list)
    """What the ledger rejected (a finding the audit shows, not a problem)."""
    metering: MeteringReport | None = None
    """A user partition's usage recomputed from its heartbeat archive (None: the platform's)."""

    @property
    def ok(self) -> bool:
        metering_ok = self.metering is None or self.metering.ok
        return self.chain.ok and self.replay_error is None and not self.differences and metering_ok


class RebuildReport(msgspec.Struct, frozen=True):
    partition: str
    head: int
    written: list[str]
    deleted: list[str]
    unchanged: int
    chain: ChainReport | None = None
    """The log's check, when it found a problem: then nothing was written or removed."""
    replay_error: str | None = None
    """Why the log could not be replayed (``ChainBroken`` or another DataError): nothing was written."""

    @property
    def ok(self) -> bool:
        return (self.chain is None or self.chain.ok) and self.replay_error is None


def problem_lines(report: AuditReport | RebuildReport, *, replay: bool = True) -> list[str]:
    """One line per problem of the partition's log, each naming its partition and its commit (or stray
    object), then (``replay``) one for a replay that failed: what ``tune admin`` and
    ``python -m projections`` print."""
    problems = report.chain.problems if report.chain is not None else []
    lines = [
        f"{report.partition}: CHAIN BROKEN: "
        + (f"{p.problem} at commit {p.seq}" if p.seq is not None else f"{p.problem} object {p.name}")
        + f": {p.message}"
        for p in problems
    ]
    if replay and report.replay_error:
        lines.append(f"{report.partition}: REPLAY FAILED: {report.replay_error}")
    return lines


def first_difference(stored: Any, replayed: Any, path: str = "$") -> str | None:
    """The first JSON path where two decoded documents differ, or None if they are equal."""
    if type(stored) is not type(replayed):
        return path
    if isinstance(stored, dict):
        for key in sorted(stored.keys() | replayed.keys()):
            if key not in stored or key not in replayed:
                return f"{path}.{key}"
            found = first_difference(stored[key], replayed[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(stored, list):
        for i, (a, b) in enumerate(zip(stored, replayed, strict=False)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None if len(stored) == len(replayed) else f"{path}[{min(len(stored), len(replayed))}]"
    return None if stored == replayed else path


def _stored_names(bucket: Bucket, part: Partition, scope: Scope, deep: bool) -> set[str]:
    return {
        name
        for prefix in part.view_prefixes(deep=deep)
        for name in bucket.list(prefix)
        if part.owns(name) and scope(name)
    }


def _compare(name: str, stored: bytes, expected: bytes, replayed_position: int) -> ViewDifference | None:
    if stored == expected:
        return None
    try:
        doc = msgspec.json.decode(stored)
    except msgspec.DecodeError:
        return ViewDifference(name, "invalid", "$", None, replayed_position)
    path = first_difference(doc, msgspec.json.decode(expected)) or "$"  # equal JSON, other bytes: "$"
    return ViewDifference(name, "differs", path, stored_position(stored), replayed_position)


def _anchor(bucket: Bucket, partition: str) -> tuple[int, str] | None:
    """The commit and SHA-256 that the stored position.json says the views were made from."""
    try:
        anchor = msgspec.json.decode(bucket.read(layout.position(partition)), type=TrackingView)
    except (ObjectNotFound, msgspec.ValidationError, msgspec.DecodeError):
        return None  # no views yet, or a broken position.json: the view comparison names it
    if anchor.commit is None or anchor.commit_sha256 is None:
        return None
    return anchor.commit, anchor.commit_sha256


def check_anchor(bucket: Bucket, partition: str, chain: ChainReport) -> ChainReport:
    """``chain``, with a problem more if the log no longer holds the commit that the stored
    position.json names (``TrackingView.commit``) with the bytes it was made from.

    What a hash chain cannot see: an edited last commit (nothing after it records its hash) or
    a removed tail. The views were made from the log as it was, and position.json recorded that
    commit's SHA-256.
    """
    anchor = _anchor(bucket, partition)
    if anchor is None:
        return chain
    seq, sha = anchor
    prefix = events_prefix(partition)
    name = commit_name(prefix, seq)
    if seq > chain.commits:
        first = chain.commits + 1
        problem = ChainProblem(
            first, "missing", name,
            f"the views were made from commit {seq}, the log ends at commit "
            f"{chain.commits}: commits {first}-{seq} are gone",
        )  # fmt: skip
    elif any(p.seq == seq for p in chain.problems):
        return chain  # already named
    else:
        try:
            intact = sha256_hex(bucket.read(name)) == sha
        except ObjectNotFound:
            return chain  # a gap in the log: verify_chain named it
        if intact:
            return chain
        problem = ChainProblem(
            seq, "edited", name,
            f"commit {seq} is not the one the views were made from (its SHA-256 "
            f"differs from the one {layout.position(partition)} recorded): one of the two was changed",
        )  # fmt: skip
    return ChainReport.of(prefix, chain.commits, [*chain.problems, problem])


_STORE_KINDS = frozenset({"commit", "segment", "log index", "snapshot", "tracking"})


def _stray(name: str) -> bool:
    """Whether ``name``, under a partition's events/, is no object the event store writes."""
    try:
        return layout.check_key(name) not in _STORE_KINDS
    except ValueError:
        return True


def check_log(bucket: Bucket, partition: str) -> ChainReport:
    """Every problem of the partition's log: its hash chain and signatures (``verify_chain``, trusting the
    commit the views were made from and the keys the root vouches for), stray objects under its events/,
    its anchor (``check_anchor``) and its witnessed heads (``check_witness``)."""
    return _check_log(bucket, partition)[0]


def _check_log(bucket: Bucket, partition: str) -> tuple[ChainReport, str]:
    """``check_log``, and what the witness says (``check_witness``)."""
    ledger = ledger_for(bucket)
    shas: dict[int, str] = {}
    chain = verify_chain(
        bucket,
        events_prefix(partition),
        anchor=_anchor(bucket, partition),
        stray=_stray,
        signatures=True,
        keyring=ledger.keyring(),
        shas=shas,
    )
    chain = check_anchor(bucket, partition, chain)
    return check_witness(partition, chain, shas, ledger.witness(), ledger.keyring())


def check_witness(
    partition: str, chain: ChainReport, shas: dict[int, str], witness: Witness | None, keyring: Keyring | None
) -> tuple[ChainReport, str]:
    """``chain`` with a problem more for each head the witness saw that the log no longer holds: a
    head past the log's end (``rolled back``: its last commits were removed, even if others were
    written since), a commit whose SHA-256 is not the witnessed one (``forged``), a head that is no
    head or whose signature does not verify (``bad signature``); and a line saying what the witness
    saw (or that the log is unwitnessed: no ``TUNE_WITNESS``, not an error).

    ``shas``: each commit's SHA-256 by seq, as ``verify_chain`` read it.
    """
    if witness is None:
        return chain, "unwitnessed (no TUNE_WITNESS)"
    prefix = events_prefix(partition)
    seqs = list(witness.seqs(partition))
    if not seqs:
        return chain, f"no head witnessed yet ({witness.bucket.url})"
    names = [layout.witness_head(partition, seq) for seq in seqs]
    problems: list[ChainProblem] = []
    rolled_back = False
    for seq, name, data in zip(seqs, names, read_many(witness.bucket, names, workers=8), strict=True):
        try:
            head = msgspec.json.decode(data, type=WitnessedHead)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            problems.append(ChainProblem(seq, "bad signature", name, f"{name} is no witnessed head ({exc})"))
            continue
        message = head_message(partition, seq, head.sha256)
        if (
            head.seq != seq
            or head.partition != partition
            or (keyring is not None and keyring.verify(head.key_id, message, head.signature) != "ok")
        ):
            problems.append(
                ChainProblem(
                    seq,
                    "bad signature",
                    name,
                    f"{name} is not a head the writers "
                    "signed (its signature does not verify): it was not written by us",
                )
            )
            continue
        if seq > chain.commits:
            if not rolled_back:
                rolled_back = True
                first = chain.commits + 1
                problems.append(
                    ChainProblem(
                        first,
                        "rolled back",
                        commit_name(prefix, first),
                        f"the witness saw commit {seqs[-1]}, the log ends at commit {chain.commits}: commits "
                        f"{first}-{seqs[-1]} were removed (the log was rolled back)",
                    )
                )
        elif shas.get(seq, head.sha256) != head.sha256:
            problems.append(
                ChainProblem(
                    seq,
                    "forged",
                    commit_name(prefix, seq),
                    f"commit {seq} is not the commit the witness saw (its SHA-256 differs from "
                    f"{name}'s): the log was rewritten from there",
                )
            )
    state = f"witnessed up to commit {seqs[-1]} ({witness.bucket.url})"
    if not problems:
        return chain, state
    return ChainReport.of(prefix, chain.commits, [*chain.problems, *problems]), state


def audit_partition(
    bucket: Bucket,
    partition: str,
    open_app: OpenApp,
    *,
    scope: Scope = lambda name: True,
    deep: bool = False,
    heartbeat_key: bytes | None = None,
) -> AuditReport:
    """Chain check, replay, and every difference between the stored and the replayed views; for a
    user partition, its metered usage recomputed from the heartbeat archive.

    ``scope`` limits which view names are compared (e.g. one user's copies of platform views);
    ``deep`` also looks for stray per-user platform views of users the log never registered;
    ``heartbeat_key`` (the platform's) verifies the archived heartbeats' signatures too.
    """
    return _audit(bucket, partition, open_app, scope, deep, heartbeat_key)[0]


def _audit(
    bucket: Bucket,
    partition: str,
    open_app: OpenApp,
    scope: Scope,
    deep: bool,
    heartbeat_key: bytes | None = None,
) -> tuple[AuditReport, Partition | None]:
    """``audit_partition``, and the replayed partition (None when the log could not be replayed)."""
    chain, witnessed = _check_log(bucket, partition)
    findings = _Rejections()
    metered: list[Any] = []  # what the metering audit reads, kept from the one replay

    def see(event: Any) -> None:
        findings.see(event)
        if isinstance(event, METERING_EVENTS):
            metered.append(event)

    try:
        with serving_broken_chains():  # show what an edit did to the views; the chain check names it
            part = replay(open_app(partition), partition, on_event=see)
    except Exception as exc:  # a tampered log may not even decode: report it, do not crash the audit
        return AuditReport(partition, 0, chain, f"{type(exc).__name__}: {exc}", [], witnessed), None
    expected = {name for name in part.views.names() if scope(name)}
    differences = []
    for name in sorted(expected | _stored_names(bucket, part, scope, deep)):
        if name not in expected:
            found = stored_position(bucket.read(name))
            differences.append(ViewDifference(name, "unexpected", stored_position=found))
            continue
        position = part.views.position_of(name)
        try:
            stored = bucket.read(name)
        except ObjectNotFound:
            differences.append(ViewDifference(name, "missing", replayed_position=position))
            continue
        difference = _compare(name, stored, part.views.render(name), position)
        if difference is not None:
            differences.append(difference)
    metering = audit_metering(bucket, metered, heartbeat_key) if partition.startswith(USERS) else None
    report = AuditReport(
        partition,
        part.position,
        chain,
        None,
        differences,
        witnessed,
        rejected_heartbeats=findings.rejected,
        metering=metering,
    )
    return report, part


class _Rejections:
    """Collects ``Job.HeartbeatsRejected`` events during a replay, named by their job."""

    def __init__(self) -> None:
        self.job_ids: dict[Any, str] = {}
        self.rejected: list[RejectedHeartbeats] = []

    def see(self, event: Any) -> None:
        name = event_name(event)
        if name == "Job.Submitted":
            self.job_ids[event.originator_id] = event.job_id
        elif name == "Job.HeartbeatsRejected":
            job_id = self.job_ids.get(event.originator_id, str(event.originator_id))
            fields = (event.attempt, event.first_seq, event.last_seq, event.count, event.reason)
            self.rejected.append(RejectedHeartbeats(job_id, *fields, iso(event.at) or ""))


def rebuild_partition(
    bucket: Bucket,
    partition: str,
    open_app: OpenApp,
    *,
    scope: Scope = lambda name: True,
    deep: bool = False,
) -> RebuildReport:
    """Replay from 0 and make the stored views equal the replay; remove views no event explains.

    A stored view that reflects events appended after the replay (a live projector's) is left
    alone; one whose position is beyond the log itself is forged and overwritten. Writes use generation
    preconditions, so a projector writing at the same time is never overwritten blindly.

    A log that does not hold together (``check_log`` names a problem, or the replay raises
    ``ChainBroken`` or another DataError) is not rebuilt from: the report names why (``ok`` is
    False) and the stored views are left as they are, for the audit to compare.
    """
    return _rebuild(bucket, partition, open_app, scope, deep)[0]


def _rebuild(
    bucket: Bucket, partition: str, open_app: OpenApp, scope: Scope, deep: bool
) -> tuple[RebuildReport, Partition | None]:
    """``rebuild_partition``, and the replayed partition (None when the log was not replayed)."""
    chain = check_log(bucket, partition)
    if not chain.ok:
        return RebuildReport(partition, 0, [], [], 0, chain=chain), None
    app = open_app(partition)
    try:
        part = replay(app, partition)  # raises ChainBroken on a link broken since check_log read it
    except DataError as exc:
        return RebuildReport(partition, 0, [], [], 0, replay_error=f"{type(exc).__name__}: {exc}"), None
    expected = {name for name in part.views.names() if scope(name)}
    written, deleted, unchanged = [], [], 0
    tracking = layout.position(partition)
    for name in part.views.write_order(expected - {tracking}) + ([tracking] if tracking in expected else []):
        if _put(bucket, name, part.views.render(name), part.position, app):
            written.append(name)
        else:
            unchanged += 1
    for name in sorted(_stored_names(bucket, part, scope, deep) - expected):
        try:
            bucket.delete(name)
        except ObjectNotFound:
            continue
        deleted.append(name)
    return RebuildReport(partition, part.position, written, deleted, unchanged), part


def _put(bucket: Bucket, name: str, data: bytes, replayed: int, app: Any) -> bool:
    """Write ``data`` unless the stored view equals it, or reflects events after ``replayed`` (a live
    projector got there first: the log has grown past our replay and the view's position is in it)."""
    while True:
        try:
            stored, stat = bucket.read_with_stat(name)
            generation = stat.generation
        except ObjectNotFound:
            stored, generation = None, 0
        if stored == data:
            return False
        head = app.recorder.max_notification_id() or 0
        if stored is not None and replayed < stored_position(stored) <= head:
            return False
        try:
            bucket.write(name, data, if_generation_match=generation)
        except PreconditionFailed:
            continue
        return True


def _stored_users(bucket: Bucket) -> list[str]:
    """Every user id with a folder under ``users/`` in the bucket, whatever the platform log says.

    One listing per user: each starts just past the folder of the one before (``0`` sorts right
    after ``/``), so checkpoints and weights are never walked. A folder name that is no user id
    is no partition and is left out.
    """
    found, start = [], USERS
    while (key := next(iter(bucket.list(USERS, start_offset=start)), None)) is not None:
        user_id, slash, _ = key[len(USERS) :].partition("/")
        start = f"{USERS}{user_id}0" if slash else f"{USERS}{user_id}/"
        if slash:
            try:
                user_partition(user_id)
            except ValidationFailed:
                continue
            found.append(user_id)
    return found


def _registered(platform: Partition) -> set[str]:
    return {u.user_id for u in platform.users.items.values()}  # type: ignore[attr-defined]


def _scoped(user: str) -> list[tuple[str, Scope]]:
    """The platform partition (its copies of platform views in ``user``'s folder only) and ``user``'s."""
    mine = f"{user_partition(user)}/"
    return [
        (PLATFORM, lambda name: not name.startswith(USERS) or name.startswith(mine)),
        (user_partition(user), lambda name: True),
    ]


def _every_partition(
    bucket: Bucket,
    user: str | None,
    deep: bool,
    open_app: OpenApp | None,
    each: Any,
    platform_first: Any,
    workers: int | None = None,
) -> list[Any]:
    """``each`` partition's report: only ``user``'s (and their platform copies), or the platform's
    (``platform_first`` also gives its replay, None if it failed) then every user's, whatever the
    platform log holds: those it registers and those with a folder in the bucket.

    One partition is held at a time: the platform's replay is dropped once its users are known, and
    each user's partition is opened, worked on and released before the next (``map_partitions``: in
    ``workers`` processes when no ``open_app`` is given and there are many; in order either way)."""
    opened = open_app or apps_on(bucket)
    if user is not None:
        return [each(bucket, p, opened, scope=scope, deep=deep) for p, scope in _scoped(user)]
    first = functools.partial(platform_first, scope=lambda name: True, deep=deep)
    platform, replayed = released(first, bucket, PLATFORM, opened)
    users = set(_stored_users(bucket)) | (_registered(replayed) if replayed is not None else set())
    del replayed  # released before the first user's replay
    partitions = [user_partition(u) for u in sorted(users)]
    work = functools.partial(each, deep=deep)
    if open_app is not None:
        return [platform] + [released(work, bucket, p, open_app) for p in partitions]
    return [platform, *map_partitions(work, bucket, partitions, workers=workers)]


def audit_bucket(
    bucket: Bucket,
    *,
    user: str | None = None,
    deep: bool = False,
    open_app: OpenApp | None = None,
    heartbeat_key: bytes | None = None,
    workers: int | None = None,
) -> list[AuditReport]:
    """Audit the platform partition and every user's (or only ``user``'s), each whatever the others hold.

    The users are those the platform log registers and those with a folder in the bucket: a platform
    log that cannot be replayed, or that lost a registration, still leaves every user partition audited.
    ``heartbeat_key``: verify the archived heartbeats' signatures too (``projections.metering_audit``).

    One partition is in memory at a time (each on a fresh Application unless ``open_app`` is given),
    and without ``open_app`` the user partitions are audited in up to ``workers`` processes
    (``projections.pool``); the reports are the same, in the same order, either way.
    """
    each = functools.partial(audit_partition, heartbeat_key=heartbeat_key)
    return _every_partition(bucket, user, deep, open_app, each, _audit, workers)


def rebuild_bucket(
    bucket: Bucket, *, user: str | None = None, deep: bool = False, open_app: OpenApp | None = None
) -> list[RebuildReport]:
    """Rebuild the platform partition's views and every user's (or only ``user``'s), each whatever
    the others hold: a partition whose log is broken is reported (``RebuildReport.ok`` False) and
    left untouched, and the others are still rebuilt. The users are those the platform log registers
    and those with a folder in the bucket, as in ``audit_bucket``; one partition at a time, here."""
    return _every_partition(bucket, user, deep, open_app or apps_on(bucket), rebuild_partition, _rebuild)
