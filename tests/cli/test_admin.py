"""``tune admin``: users, prices, audit and rebuild, straight on a local bucket (no server)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture
def home(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = cli_env / "home"
    monkeypatch.setenv("TUNE_HOME", str(home))
    monkeypatch.delenv("TUNE_BUCKET", raising=False)
    return home


def _json(run_cli, *args: str):
    result = run_cli("tune", "admin", *args, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_users(home: Path, run_cli) -> None:
    made = _json(
        run_cli, "user", "create", "--email", "Ann@Example.com", "--password", "pw-1", "--role", "admin"
    )
    assert made["role"] == "admin" and "password" not in made
    generated = _json(run_cli, "user", "create", "--email", "bob@example.com")
    assert len(generated["password"]) >= 12  # no tty, no password: one is made and shown once
    users = _json(run_cli, "users", "list")
    assert [(u["email"], u["role"], u["status"]) for u in users] == [
        ("ann@example.com", "admin", "active"),
        ("bob@example.com", "user", "active"),
    ]
    bob = generated["user_id"]
    assert _json(run_cli, "user", "suspend", "--user-id", bob, "--reason", "unpaid")["status"] == "suspended"
    assert _json(run_cli, "user", "reactivate", "--user-id", bob)["status"] == "active"
    assert _json(run_cli, "user", "revoke-tokens", "--user-id", bob)["token_version"] == 2  # suspend: 1
    quota = _json(
        run_cli, "user", "quota", "--user-id", bob, "--max-jobs", "3", "--max-dataset-bytes", "1000"
    )
    assert (quota["max_concurrent_jobs"], quota["max_dataset_bytes"]) == (3, 1000)
    again = run_cli("tune", "admin", "user", "create", "--email", "ann@example.com", "--password", "x")
    assert again.code == 1
    assert (
        again.err.strip()
        == "tune: error: email ann@example.com is already registered (where: email; email_taken)"
    )
    missing = run_cli("tune", "admin", "user", "suspend", "--user-id", "usr_nope", "--reason", "x")
    assert missing.code == 1 and "no user usr_nope" in missing.err


def test_prices_now_and_scheduled(home: Path, run_cli) -> None:
    set_now = run_cli("tune", "admin", "price", "set", "--gpu-type", "a100", "--usd-per-hour", "2.50")
    assert set_now.code == 0 and "a100: $2.50 per GPU-hour" in set_now.out
    later = "2099-01-01T00:00:00Z"
    run_cli(
        "tune", "admin", "price", "set", "--gpu-type", "a100", "--usd-per-hour", "3", "--effective-at", later
    )
    listing = _json(run_cli, "prices", "list")
    assert [(p["gpu_type"], p["usd_micros_per_hour"]) for p in listing["prices"]] == [("a100", 2_500_000)]
    assert [(p["usd_micros_per_hour"], p["effective_at"][:4]) for p in listing["scheduled"]] == [
        (3_000_000, "2099")
    ]
    bad = run_cli(
        "tune", "admin", "price", "set", "--gpu-type", "a100", "--usd-per-hour", "1", "--effective-at", "soon"
    )
    assert bad.code == 1 and "--effective-at" in bad.err


def test_a_price_in_the_past_is_refused_in_one_line(home: Path, run_cli) -> None:
    run_cli("tune", "admin", "price", "set", "--gpu-type", "a100", "--usd-per-hour", "2.50")
    past = run_cli(
        "tune", "admin", "price", "set", "--gpu-type", "a100", "--usd-per-hour", "1",
        "--effective-at", "2020-01-01T00:00:00Z",
    )  # fmt: skip
    assert past.code == 1 and past.out == ""
    (line,) = past.err.strip().splitlines()
    assert line.startswith("tune: error: effective_at 2020-01-01T00:00:00+00:00 is in the past (now 20")
    assert line.endswith("a price takes effect now or later (where: effective_at; invalid)")
    listing = _json(run_cli, "prices", "list")
    assert [(p["gpu_type"], p["usd_micros_per_hour"]) for p in listing["prices"]] == [("a100", 2_500_000)]
    assert listing["scheduled"] == []


def test_audit_finds_a_tampered_view_and_rebuild_repairs_it(home: Path, run_cli) -> None:
    run_cli("tune", "admin", "user", "create", "--email", "ann@example.com", "--password", "pw")
    run_cli("tune", "admin", "price", "set", "--gpu-type", "t4", "--usd-per-hour", "0.35")
    clean = run_cli("tune", "admin", "audit")
    assert clean.code == 0, clean.out + clean.err
    assert "all consistent" in clean.out
    view = home / "bucket" / "platform" / "metadata" / "users.json"
    data = json.loads(view.read_text())
    data["users"][0]["role"] = "admin"  # a forged promotion
    view.write_text(json.dumps(data))
    found = run_cli("tune", "admin", "audit")
    assert found.code == 1
    assert "platform/metadata/users.json" in found.out and "$.users[0].role" in found.out
    reports = json.loads(run_cli("tune", "admin", "audit", "--json").out)
    assert [r["ok"] for r in reports] == [False, True]
    rebuilt = _json(run_cli, "rebuild")
    assert rebuilt[0]["written"] == ["platform/metadata/users.json"]
    assert json.loads(view.read_text())["users"][0]["role"] == "user"
    assert run_cli("tune", "admin", "audit").code == 0


def test_audit_reports_an_edited_commit(home: Path, run_cli) -> None:
    for email in ("a@example.com", "b@example.com"):
        run_cli("tune", "admin", "user", "create", "--email", email, "--password", "pw")
    commits = sorted((home / "bucket" / "platform" / "events").glob("*.json"))
    assert len(commits) >= 2
    first = commits[0]
    first.write_bytes(first.read_bytes().replace(b"a@example.com", b"z@example.com"))
    result = run_cli("tune", "admin", "audit")
    assert result.code == 1
    assert "CHAIN BROKEN: bad signature at commit 1" in result.out  # signed: the edit breaks its signature


def test_a_write_onto_an_edited_tail_is_refused_in_one_line_and_the_audit_still_names_it(
    home: Path, run_cli
) -> None:
    """Issue 12, D1: the next ordinary write must not hide an edited last commit."""
    for email in ("a@example.com", "b@example.com"):
        run_cli("tune", "admin", "user", "create", "--email", email, "--password", "pw")
    last = sorted((home / "bucket" / "platform" / "events").glob("*.json"))[-1]
    last.write_bytes(last.read_bytes().replace(b"b@example.com", b"m@example.com"))

    refused = run_cli("tune", "admin", "user", "create", "--email", "c@example.com", "--password", "pw")

    assert refused.code == 1 and "Traceback" not in refused.err
    assert "the chain is broken at commit" in refused.err and "(chain_broken)" in refused.err
    assert len(refused.err.strip().splitlines()) == 1
    audit = run_cli("tune", "admin", "audit")
    assert audit.code == 1 and "CHAIN BROKEN" in audit.out


def test_audit_of_a_corrupted_bucket_names_each_problem_and_still_audits_every_user(
    home: Path, run_cli
) -> None:
    users = [
        _json(run_cli, "user", "create", "--email", f"{e}@example.com", "--password", "pw")["user_id"]
        for e in ("a", "b")
    ]
    events = home / "bucket" / "platform" / "events"
    second = events / "000000000002.json"
    second.write_bytes(second.read_bytes().replace(b"{", b"[", 1))  # sed -i '0,/{/s//[/'
    (events / "notes.txt").write_text("stray")

    result = run_cli("tune", "admin", "audit")  # an exception would escape run_cli: no traceback

    assert result.code == 1, result.out + result.err
    lines = result.out.splitlines()
    problems = [line for line in lines if "CHAIN BROKEN: " in line]
    assert problems == [
        "platform: CHAIN BROKEN: invalid at commit 2: platform/events/000000000002.json is not valid JSON"
        + problems[0].split("is not valid JSON", 1)[1],
        "platform: CHAIN BROKEN: stray object platform/events/notes.txt: "
        "platform/events/notes.txt is not a commit object name",
    ]
    for user_id in users:
        assert f"users/{user_id}: head 0, chain ok, views ok" in lines
    assert lines[-1] == "audited 3 partition(s): 1 with problems"
    assert "Traceback" not in result.out + result.err


def test_report_of_a_quiet_month(home: Path, run_cli) -> None:
    user_id = _json(run_cli, "user", "create", "--email", "ann@example.com", "--password", "pw")["user_id"]
    args = ("tune", "admin", "report", "--user-id", user_id, "--month", "2026-03")
    table = run_cli(*args)
    assert table.code == 0, table.err
    assert "no usage that month" in table.out and "$0.00" in table.out
    assert json.loads(run_cli(*args, "--format", "json").out)["total_cost_usd_micros"] == 0
    assert json.loads(run_cli(*args, "--json").out)["total_cost_usd_micros"] == 0
    csv_out = run_cli(*args, "--format", "csv")
    assert csv_out.code == 0 and csv_out.out.startswith("job_id,")
    bad = run_cli("tune", "admin", "report", "--user-id", user_id, "--month", "2026-13")
    assert bad.code == 1 and len(bad.err.strip().splitlines()) == 1


def test_an_operator_adds_a_base_model_from_a_local_folder(
    home: Path, run_cli, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from runners.base_models import resolve_base_model

    folder = resolve_base_model("tiny-llama", tmp_path_factory.mktemp("models"))
    added = _json(run_cli, "base-model", "add", "--name", "my-tiny", "--folder", str(folder))
    assert (added["name"], added["source_kind"], added["source"]) == ("my-tiny", "local", str(folder))
    names = {m["name"]: m for m in _json(run_cli, "base-model", "list")}
    assert names["my-tiny"]["source_kind"] == "local"

    empty = run_cli(
        "tune",
        "admin",
        "base-model",
        "add",
        "--name",
        "nothing",
        "--folder",
        str(tmp_path_factory.mktemp("e")),
    )
    assert empty.code == 1 and "config.json" in empty.err and len(empty.err.strip().splitlines()) == 1
    unsafe = run_cli("tune", "admin", "base-model", "add", "--name", "../up", "--folder", str(folder))
    assert unsafe.code == 1 and "--name" in unsafe.err
    assert "nothing" not in {m["name"] for m in _json(run_cli, "base-model", "list")}


def test_rebuild_of_a_corrupted_platform_log_rebuilds_every_user_and_leaves_the_platform_untouched(
    home: Path, run_cli
) -> None:
    """Issue 12: a broken platform log is reported (one line per problem, exit 1, no traceback), never
    rebuilt from; every user partition is still rebuilt."""
    users = [
        _json(run_cli, "user", "create", "--email", f"{e}@example.com", "--password", "pw")["user_id"]
        for e in ("a", "b")
    ]
    events = home / "bucket" / "platform" / "events"
    second = events / "000000000002.json"
    second.write_bytes(second.read_bytes().replace(b"{", b"[", 1))
    (events / "notes.txt").write_text("stray")
    view = home / "bucket" / "platform" / "metadata" / "users.json"
    forged = view.read_bytes().replace(b'"role":"user"', b'"role":"admin"', 1)
    assert forged != view.read_bytes()
    view.write_bytes(forged)

    result = run_cli("tune", "admin", "rebuild")

    assert result.code == 1, result.out + result.err
    assert "Traceback" not in result.out + result.err
    errors = result.err.strip().splitlines()
    assert len(errors) == 2
    assert errors[0].startswith("platform: CHAIN BROKEN: invalid at commit 2: platform/events/0000000000")
    assert errors[1].startswith("platform: CHAIN BROKEN: stray object platform/events/notes.txt")
    assert view.read_bytes() == forged  # never rebuilt from a tampered log
    for user_id in users:
        assert f"users/{user_id}" in result.out
    assert "1 not rebuilt" in result.out and "platform" in result.out.splitlines()[-1]
    reports = json.loads(run_cli("tune", "admin", "rebuild", "--json").out)
    assert [(r["partition"], r["ok"]) for r in reports] == [("platform", False)] + [
        (f"users/{u}", True) for u in sorted(users)
    ]
    assert reports[0]["written"] == [] and len(reports[0]["chain"]["problems"]) == 2


def test_audit_holds_one_user_partition_at_a_time(home: Path, run_cli, monkeypatch) -> None:
    """Issue 18, part 5: each user's log and replay are released before the next user's is opened
    (the audit once kept every user's Application, 231 MB for 1,000 users)."""
    import gc
    import weakref

    import storage.eventstore
    import storage.eventstore.apps

    for e in ("a", "b", "c"):
        run_cli("tune", "admin", "user", "create", "--email", f"{e}@example.com", "--password", "pw")
    real = storage.eventstore.open_user
    opened: list[weakref.ref] = []
    alive_at_open: list[int] = []

    def open_user(bucket, user_id, **env):
        gc.collect()
        alive_at_open.append(sum(ref() is not None for ref in opened))
        app = real(bucket, user_id, **env)
        opened.extend((weakref.ref(app), weakref.ref(app.recorder.log)))  # and the commits it holds
        return app

    monkeypatch.setattr(storage.eventstore, "open_user", open_user)
    monkeypatch.setattr(storage.eventstore.apps, "open_user", open_user)
    result = run_cli("tune", "admin", "audit", "--month", "2026-03", "--workers", "1")
    assert result.code == 0, result.out + result.err
    assert len(alive_at_open) >= 6 and alive_at_open == [0] * len(alive_at_open)  # 3 audits, 3 months


def test_audit_in_worker_processes_prints_what_one_process_prints(home: Path, run_cli, monkeypatch) -> None:
    """Issue 18, part 5: the user partitions audited in a pool of processes give the same reports, in
    the same order, with the same exit status (a tampered view found by a worker included)."""
    import projections.pool

    users = [
        _json(run_cli, "user", "create", "--email", f"{e}@example.com", "--password", "pw")["user_id"]
        for e in ("a", "b", "c")
    ]
    monkeypatch.setattr(projections.pool, "PARALLEL_FROM", 2)
    pools: list[int] = []

    class Pool(projections.pool.ProcessPoolExecutor):
        def __init__(self, workers: int, **kwargs) -> None:
            pools.append(workers)
            super().__init__(workers, **kwargs)

    monkeypatch.setattr(projections.pool, "ProcessPoolExecutor", Pool)
    stray = home / "bucket" / "users" / users[1] / "metadata" / "jobs.json"
    stray.write_text('{"jobs": [], "position": 5}')  # a view no event of that user explains
    alone = run_cli("tune", "admin", "audit", "--workers", "1")
    pooled = run_cli("tune", "admin", "audit", "--workers", "2")
    assert (pooled.code, pooled.out) == (alone.code, alone.out) and alone.code == 1
    assert f"users/{users[1]}: head 0, chain ok, 1 view(s) differ" in alone.out
    assert "1 with problems" in alone.out
    as_json = [run_cli("tune", "admin", "audit", "--json", "--workers", n).out for n in ("1", "2")]
    assert as_json[0] == as_json[1] and pools == [2, 2]  # the pool ran (and only when asked to)


def test_a_serving_price_takes_effect_when_asked(home: Path, run_cli) -> None:
    """``price serving`` takes ``--effective-at`` as ``price set`` does: a later time, never a past one."""
    args = ("tune", "admin", "price", "serving", "--base-model", "*")
    args += ("--prompt-usd-per-mtok", "0.10", "--completion-usd-per-mtok", "0.20")
    later = _json(run_cli, *args[2:], "--effective-at", "2099-01-01T00:00:00Z")
    assert later["effective_at"].startswith("2099-01-01")
    past = run_cli(*args, "--effective-at", "2000-01-01T00:00:00Z")
    assert past.code == 1 and len(past.err.strip().splitlines()) == 1
    bad = run_cli(*args, "--effective-at", "soon")
    assert bad.code == 1 and "--effective-at" in bad.err


def test_calibrate_refuses_a_job_that_measured_nothing_in_one_line(home: Path, run_cli) -> None:
    user = _json(run_cli, "user", "create", "--email", "cal@example.com", "--password", "pw-1")["user_id"]
    result = run_cli("tune", "admin", "calibrate", "--user-id", user, "--job-id", "job_nope")
    assert result.code == 1
    assert result.err.strip().startswith("tune: error: job job_nope is no measurement")


def test_home_option_uses_that_homes_keys(home: Path, run_cli, tmp_path: Path, monkeypatch) -> None:
    """``--home X`` reads and writes X's log with X's keys, whatever home ``TUNE_HOME`` names (one
    with a root key of its own); a bucket whose keyring this home's root key did not sign is refused in
    one line (exit 1), never a traceback."""
    user = _json(run_cli, "user", "create", "--email", "keys@example.com", "--password", "pw-1")["user_id"]
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("TUNE_HOME", str(elsewhere))
    _json(run_cli, "user", "create", "--email", "own@example.com", "--password", "pw-1")  # its root key
    added = ("user", "create", "--email", "more@example.com", "--password", "pw-1", "--home", str(home))
    more = _json(run_cli, *added)["user_id"]
    monkeypatch.setenv("TUNE_HOME", str(home))
    listed = json.dumps(_json(run_cli, "user", "list"))
    assert user in listed and more in listed

    shutil.rmtree(elsewhere / "bucket")  # elsewhere's root key, with the bucket another root signed
    shutil.copytree(home / "bucket", elsewhere / "bucket")
    refused = run_cli("tune", "admin", "user", "create", "--email", "x@example.com", "--password", "pw-1",
                      "--home", str(elsewhere))
    assert refused.code == 1 and "Traceback" not in refused.err
    assert len(refused.err.strip().splitlines()) == 1 and "chain is broken" in refused.err
