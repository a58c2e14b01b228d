"""Audit a partition's log: ``verify_chain(bucket, partition) -> ChainReport``.

Each commit stores the SHA-256 of the previous commit's bytes, its own
sequence number and its first notification id, so a change to any commit
that has a successor, a removed commit and an inserted one all show. The whole
log is read, whatever it holds: every problem is named (``ChainReport.problems``),
each with the commit it is about, and the check goes on past it:

``invalid``      an object named as a commit is not JSON, or not a commit object
``out of place`` an object holds another commit than its name says (copied or
                 moved there), or a commit does not start at the notification id
                 that follows the one before it
``missing``      a sequence number is absent (a gap in the names), or objects hold
                 later commits than their names say (later ones renamed down)
``inserted``     objects hold earlier commits than their names say (later ones
                 renamed up to make room), a commit's hash names the commit two
                 before it, or a commit does not link to a predecessor known to be
                 intact (``anchor``): it was appended with a wrong link
``edited``       a commit's successor's hash does not match its bytes
``stray``        an object under the partition's ``events/`` that is no object of
                 the event store (a top-level name that is not a commit's, or a
                 nested one ``stray`` says is not a segment, snapshot or tracking record)
``bad signature`` a commit's signature does not verify with the key it names: it was
                 changed after it was signed
``unknown key``  a commit is signed with a key no root-signed keyring entry holds
                 (or no root public key is known here to trust a keyring with)
``unsigned``     a commit without a signature after a signed one: written by no
                 writer's key (a forged append, or a downgrade); unsigned commits
                 before the first signed one are a history older than signatures
``rolled back``, ``forged``: the log against its witnessed heads
                 (``projections.audit.check_witness``)

An empty last commit object is no problem: the event store reads it as absent
(``storage.eventstore.log``: what a power loss leaves of a commit written without
fsync), so ``commits`` ends before it; if the views were made from it, the anchor
check names it ``missing``. An empty commit with commits after it is ``invalid``.

What a hash chain cannot show: a change to the last commit, or the last
commits removed (nothing after them records their hashes). The audit checks
those against the commit and hash that the views' position.json recorded
(``projections.audit.check_anchor``), and passes that commit as ``anchor``: a
commit known intact, so a wrong link after it names its successor, not it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Literal, NamedTuple

import msgspec

from storage.bucket import Bucket
from storage.eventstore.commits import (
    Commit,
    check_signature,
    commit_name,
    decode_commit,
    seq_of,
    sha256_hex,
)
from storage.eventstore.log import _read_many_or_none, io_workers_for
from storage.eventstore.signing import Keyring

__all__ = ["ChainProblem", "ChainReport", "verify_chain"]

Problem = Literal["invalid", "out of place", "missing", "inserted", "edited", "stray", "bad signature",
                  "unknown key", "unsigned", "rolled back", "forged"]


class ChainProblem(msgspec.Struct, frozen=True):
    """One thing wrong with a partition's log."""

    seq: int | None
    """The commit it is about (None for a stray object)."""
    problem: Problem
    name: str
    """The object it was found at."""
    message: str


class ChainReport(msgspec.Struct, frozen=True):
    """The verdict on one partition's log: ``problem``, ``first_bad_seq`` and ``message`` are its
    first problem's (by commit), ``problems`` all of them."""

    ok: bool
    commits: int
    """The sequence number of the last commit object in the log."""
    first_bad_seq: int | None = None
    problem: Problem | None = None
    message: str = ""
    problems: list[ChainProblem] = []

    @classmethod
    def of(cls, prefix: str, commits: int, problems: Iterable[ChainProblem]) -> ChainReport:
        found = sorted(problems, key=lambda p: (p.seq is None, p.seq or 0))
        if not found:
            return cls(True, commits, None, None, f"{prefix}: {commits} commits, chain intact")
        first = found[0]
        return cls(False, commits, first.seq, first.problem, f"{prefix}: {first.message}", found)


class _Entry(NamedTuple):
    name: str
    seq: int
    data: bytes | None
    """None: the object went away while the log was read."""
    commit: Commit | str
    """The decoded commit, or why it is not one."""


def _entries(bucket: Bucket, prefix: str, names: list[str]) -> Iterator[_Entry]:
    for name, data in zip(
        names, _read_many_or_none(bucket, names, workers=io_workers_for(bucket)), strict=True
    ):
        seq = seq_of(prefix, name) or 0
        if data is None:
            yield _Entry(name, seq, None, "gone (removed while the log was read)")
            continue
        try:
            yield _Entry(name, seq, data, decode_commit(data))
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            yield _Entry(name, seq, data, _not_a_commit(data, exc))


def _not_a_commit(data: bytes, exc: Exception) -> str:
    """Why ``data`` is no commit: not JSON at all (a typed decode may stop before it sees that), or
    JSON of another shape."""
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError as error:
        return f"not valid JSON ({error})"
    return f"not a commit object ({exc})"


def verify_chain(
    bucket: Bucket,
    partition_prefix: str,
    *,
    anchor: tuple[int, str] | None = None,
    stray: Callable[[str], bool] = lambda name: False,
    signatures: bool = False,
    keyring: Keyring | None = None,
    shas: dict[int, str] | None = None,
) -> ChainReport:
    """Read every commit under ``partition_prefix`` in order, check each link, name every problem.

    ``anchor``: a commit (seq, SHA-256) known intact, e.g. the one the views were made from.
    ``stray``: whether a nested name under the prefix (``segments/``, ``snapshots/``, ``tracking/``
    are the event store's) is no object of the event store; by default none is.
    ``signatures``: also check each commit's signature with ``keyring`` (the keys the root vouches
    for; None: no root public key is known here, so a signed commit is ``unknown key``) and name an
    unsigned commit after a signed one; by default only the hash chain is checked.
    ``shas``: filled with the SHA-256 of each commit read, by seq (for the witness check).
    """
    prefix = partition_prefix
    names: list[str] = []
    problems: list[ChainProblem] = []
    for name in bucket.list(prefix):
        if "/" in name[len(prefix) :]:
            if stray(name):
                problems.append(ChainProblem(None, "stray", name, f"{name} is no object of the event store"))
        elif seq_of(prefix, name) is None:
            problems.append(ChainProblem(None, "stray", name, f"{name} is not a commit object name"))
        else:
            names.append(name)
    named: set[int] = set()

    def bad(seq: int, problem: Problem, name: str, message: str) -> None:
        if seq not in named:  # one problem per commit: what follows from it is not another
            named.add(seq)
            problems.append(ChainProblem(seq, problem, name, message))

    expected, shift = 1, 0
    prev_sha: str | None = ""  # None: unknown (the object before is absent or not a commit)
    before_prev_sha: str | None = None
    next_id: int | None = 1
    signed_from: int | None = None
    no_keyring_named = False
    end = seq_of(prefix, names[-1]) or 0 if names else 0
    entries = _entries(bucket, prefix, names)
    for entry, following in itertools.pairwise(itertools.chain(entries, [None])):
        assert entry is not None
        name, seq, data, commit = entry
        if data == b"" and following is None:  # a commit lost to a power loss, read as absent (log.py)
            end = seq - 1
            break
        if seq > expected:
            gone = f"commit {expected}" if seq == expected + 1 else f"commits {expected}..{seq - 1}"
            bad(expected, "missing", commit_name(prefix, expected),
                f"{gone} missing: no {commit_name(prefix, expected)} (the next object is {name})")
            prev_sha = before_prev_sha = next_id = None
        expected = seq + 1
        if not isinstance(commit, Commit) or data is None:
            bad(seq, "invalid", name, f"{name} is {commit}")
            prev_sha = before_prev_sha = next_id = None
            continue
        sha = sha256_hex(data)
        if shas is not None:
            shas[seq] = sha
        if not signatures:
            pass
        elif commit.sig and keyring is None:
            if not no_keyring_named:
                no_keyring_named = True
                bad(seq, "unknown key", name, f"commit {seq} is signed, and no root public key is known here "
                                              "to trust the keyring with (TUNE_ROOT_PUBLIC_KEY)")
        elif commit.sig and keyring is not None:
            verdict = check_signature(prefix, commit, keyring)
            if verdict == "unknown key":
                bad(seq, verdict, name, f"commit {seq} is signed with key {commit.key_id}, which no "
                                        "root-signed keyring entry holds: it was forged")
            elif verdict == "bad signature":
                bad(seq, verdict, name, f"commit {seq}'s signature does not verify with key {commit.key_id}: "
                                        "it was changed after it was signed")
        elif signed_from is not None:
            bad(seq, "unsigned", name, f"commit {seq} is not signed, but commit {signed_from} before it is: "
                                       "it was written without a writer's key (forged)")
        if commit.sig and signed_from is None:
            signed_from = seq
        offset = seq - commit.seq
        if offset != shift:
            nxt = following.commit if following is not None else None
            renamed = isinstance(nxt, Commit) and following is not None and following.seq - nxt.seq == offset
            if renamed and offset > 0:
                bad(commit.seq, "inserted", name, f"{name} holds commit {commit.seq}: an object was inserted "
                                                  f"at {commit.seq} and later ones renamed up")
            elif renamed:
                bad(seq, "missing", name, f"{name} holds commit {commit.seq}: commits "
                                          f"{seq}..{commit.seq - 1} were removed and later ones renamed")
            else:
                bad(seq, "out of place", name, f"{name} holds commit {commit.seq}: it was copied or "
                                               "moved there")
                prev_sha = before_prev_sha = next_id = None  # what follows it is checked afresh
                continue
            shift = offset
        elif prev_sha is not None and commit.prev_sha256 != prev_sha:
            if anchor == (seq - 1, prev_sha):
                bad(seq, "inserted", name, f"commit {seq} does not link to commit {seq - 1}, which holds the "
                                           f"bytes the views were made from: commit {seq} was forged "
                                           "(written with a wrong link)")
            elif seq > 1 and commit.prev_sha256 == before_prev_sha:
                bad(seq - 1, "inserted", name, f"commit {seq - 1} was inserted: commit {seq} follows "
                                               f"commit {seq - 2} directly (by its hash)")
            else:
                either = f", or commit {seq} was written with a wrong link" if following is None else ""
                bad(seq - 1, "edited", name, f"commit {seq - 1} was changed after commit {seq} was written "
                                             f"(its bytes no longer match the hash commit {seq} "
                                             f"recorded){either}")
        elif next_id is not None and commit.first_id != next_id:
            bad(seq, "out of place", name, f"commit {seq} starts at notification {commit.first_id}, "
                                           f"expected {next_id}")
        before_prev_sha, prev_sha = prev_sha, sha
        next_id = commit.first_id + len(commit.events)

    return ChainReport.of(prefix, end, problems)
