"""The CLIs against a real server: ``tune serve`` in a subprocess on a free port and a tmp TUNE_HOME.

Nothing is faked: the first-start admin made by ``tune serve`` (its password in the home) logs in,
uploads a real dataset, starts jobs, reads billing. The server runs its embedded
dispatcher, so a job started here may be taken by a real runner at once: a test that
stops one reads from the job's events whether it ran, and checks the cost against that.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.emulators import free_port

ROOT = Path(__file__).resolve().parents[2]
CHAT = '{"messages": [{"role": "user", "content": "q%d"}, {"role": "assistant", "content": "a%d"}]}\n'


@dataclass
class Server:
    url: str
    email: str
    password: str
    home: Path



@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("home")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # No --port: `tune serve` listens where TUNE_API_URL points, as the commands after it look.
    # TUNE_PREPARE_BASE_MODELS: the one model its jobs use, no smollm2-135m conversion beside them
    env = {**os.environ, "TUNE_HOME": str(home), "HF_HUB_OFFLINE": "1", "TUNE_API_URL": url,
           "TUNE_PREPARE_BASE_MODELS": "tiny-llama"}  # fmt: skip
    env.pop("TUNE_BUCKET", None)
    log = (home / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cli.tune import main; main()", "serve"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (home / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "tune serve did not come up in 60 s"
            time.sleep(0.2)
        text = (home / "serve.log").read_text()
        email = re.search(r"first user \(admin\): (\S+)", text).group(1)
        password = (home / "first_admin_password").read_text().strip()  # the log is no terminal
        assert password not in text
        yield Server(url, email, password, home)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def live(server: Server, run_cli, monkeypatch: pytest.MonkeyPatch) -> Server:
    """Logged in as the first admin (password from the environment, as a script would)."""
    monkeypatch.setenv("TUNE_API_URL", server.url)
    monkeypatch.setenv("TUNE_PASSWORD", server.password)
    result = run_cli("tune", "login", "--email", server.email)
    assert result.code == 0, result.err
    return server


def _upload(run_cli, folder: Path, rows: int = 12) -> str:
    path = folder / "train.jsonl"
    path.write_text("".join(CHAT % (i, i) for i in range(rows)))
    result = run_cli("dataset", "upload", "--file", str(path), "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)["dataset_id"]


@pytest.mark.parametrize("where", ["--port", "--api-url / TUNE_API_URL"])
def test_serve_refuses_a_busy_port(server: Server, where: str) -> None:
    """The port is --port's, else TUNE_API_URL's (here the running server's); the error names which."""
    port = server.url.rsplit(":", 1)[1]
    env = {**os.environ, "TUNE_HOME": str(server.home), "TUNE_API_URL": server.url}
    args = ["--port", port] if where == "--port" else []
    proc = subprocess.run(
        [sys.executable, "-c", "from cli.tune import main; main()", "serve", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert (
        proc.stderr.strip()
        == f"tune: error: cannot listen on 127.0.0.1:{port}: Address already in use (where: {where})"
    )


def test_wrong_password(server: Server, run_cli, monkeypatch) -> None:
    monkeypatch.setenv("TUNE_API_URL", server.url)
    result = run_cli("tune", "login", "--email", server.email, "--password", "wrong")
    assert result.code == 1
    assert (
        result.err.strip() == "tune: error: wrong email or password (where: email; unauthenticated HTTP 401)"
    )


def test_dataset_round_trip(live: Server, run_cli, cli_env: Path) -> None:
    dataset_id = _upload(run_cli, cli_env, rows=12)
    listed = json.loads(run_cli("dataset", "list", "--json").out)
    assert [d["rows"] for d in listed if d["dataset_id"] == dataset_id] == [12]
    shown = run_cli("dataset", "show", "--dataset-id", dataset_id)
    assert shown.code == 0 and "validated" in shown.out and "train.jsonl" in shown.out
    assert run_cli("dataset", "delete", "--dataset-id", dataset_id).code == 0
    gone = run_cli("dataset", "show", "--dataset-id", dataset_id)
    assert gone.code == 1 and "HTTP 404" in gone.err


def test_rejected_dataset_names_lines(live: Server, run_cli, cli_env: Path) -> None:
    (cli_env / "bad.jsonl").write_text(CHAT % (0, 0) + "not json at all\n")
    result = run_cli("dataset", "upload", "--file", "bad.jsonl")
    assert result.code == 1
    assert "rejected" in result.out and "line 2:" in result.out


def test_start_dry_run_then_start_list_status_stop(live: Server, run_cli, cli_env: Path) -> None:
    dataset_id = _upload(run_cli, cli_env)
    (cli_env / "config.yml").write_text("method: lora\nepochs: 1\n")
    args = ("tune", "start", "--model", "tiny-llama", "--dataset", dataset_id, "--config", "config.yml")
    dry = run_cli(*args, "--dry-run")
    assert dry.code == 0, dry.err
    assert "estimated cost $" in dry.out and "nothing started" in dry.out
    assert json.loads(run_cli("tune", "list", "--json").out) == []  # the dry run submitted nothing
    started = run_cli(*args, "--json")
    assert started.code == 0, started.err
    job_id = json.loads(started.out)["job_id"]
    jobs = json.loads(run_cli("tune", "list", "--json").out)
    assert [j["job_id"] for j in jobs] == [job_id]
    status = json.loads(run_cli("tune", "status", "--job-id", job_id, "--json").out)
    assert status["dataset_id"] == dataset_id and status["base_model"] == "tiny-llama"
    stopped = run_cli("tune", "stop", "--job-id", job_id)
    assert stopped.code == 0, stopped.err
    follow = run_cli("tune", "status", "--job-id", job_id, "--follow", "--interval", "0.2")
    assert follow.code == 1 and "stopped" in follow.out  # a stopped job is not a success
    # The embedded dispatcher may have handed the job to a real runner before the stop landed:
    # the job's own events say which, and the cost is checked against that, not against a bet.
    events = json.loads(run_cli("tune", "events", "--job-id", job_id, "--json").out)
    types = [e["type"] for e in events]
    assert types[0] == "Submitted" and "Stopped" in types, types
    cost = json.loads(run_cli("tune", "cost", "--job-id", job_id, "--json").out)
    assert cost["job_id"] == job_id and cost["status"] == "stopped"
    assert cost["cost_usd_micros"] == sum(p["cost_usd_micros"] for p in cost["periods"])
    if "Started" not in types:  # stopped while queued: once stopped it never starts, nothing to bill
        assert cost["cost_usd_micros"] == 0 and cost["gpu_metrics"]["gpu_ms"] == 0, cost


def test_bad_config_is_reported_with_its_key(live: Server, run_cli, cli_env: Path) -> None:
    dataset_id = _upload(run_cli, cli_env)
    (cli_env / "config.yml").write_text("epochs: -3\n")
    result = run_cli(
        "tune", "start", "--model", "tiny-llama", "--dataset", dataset_id, "--config", "config.yml"
    )
    assert result.code == 1
    assert "epochs" in result.err and "HTTP 400" in result.err and len(result.err.splitlines()) == 1


def test_billing_budget_pricing(live: Server, run_cli) -> None:
    assert run_cli("tune", "budget", "set", "--monthly", "100").code == 0
    shown = json.loads(run_cli("tune", "budget", "show", "--json").out)
    assert shown["monthly_limit_usd_micros"] == 100_000_000 and shown["thresholds_pct"] == [50, 80, 100]
    usage = json.loads(run_cli("tune", "billing", "--json").out)
    assert usage["budget"]["monthly_limit_usd_micros"] == 100_000_000
    prices = json.loads(run_cli("tune", "billing", "pricing", "--json").out)["prices"]
    assert prices and all(p["usd_micros_per_hour"] > 0 for p in prices.values())
    assert run_cli("tune", "billing", "--history").code == 0
    month = usage["current_period"]["period"]
    report = json.loads(run_cli("tune", "billing", "report", "--month", month, "--format", "json").out)
    assert report["month"] == month and report["total_cost_usd_micros"] == sum(
        r["cost_usd_micros"] for r in report["rows"]
    )
    csv_out = run_cli("tune", "billing", "report", "--month", month, "--format", "csv").out
    assert csv_out.splitlines()[0].startswith("job_id,gpu_type,gpu_count")
    assert run_cli("tune", "budget", "clear").code == 0
    assert "no budget set" in run_cli("tune", "budget", "show").out
    zero = run_cli("tune", "budget", "set", "--monthly", "0")
    assert zero.code == 1 and "monthly_limit_usd_micros" in zero.err and "HTTP 400" in zero.err


def test_models_empty_and_missing(live: Server, run_cli) -> None:
    assert json.loads(run_cli("model", "list", "--json").out) == []
    missing = run_cli("model", "download", "--model-id", "mdl_nope")
    assert missing.code == 1 and "HTTP 404" in missing.err
    assert len(missing.err.strip().splitlines()) == 1


def test_admin_user_on_a_running_server(server: Server, run_cli, monkeypatch, cli_env: Path) -> None:
    """An operator adds a user on the bucket; the running server lets them in at once."""
    monkeypatch.setenv("TUNE_HOME", str(server.home))
    monkeypatch.setenv("TUNE_API_URL", server.url)
    made = run_cli(
        "tune", "admin", "user", "create", "--email", "carol@example.com", "--password", "pw-c", "--json"
    )
    assert made.code == 0, made.err
    user_id = json.loads(made.out)["user_id"]
    login = run_cli("tune", "login", "--email", "carol@example.com", "--password", "pw-c")
    assert login.code == 0, login.err
    assert json.loads(run_cli("tune", "list", "--json").out) == []
    assert run_cli("tune", "admin", "user", "suspend", "--user-id", user_id, "--reason", "test").code == 0
    refused = run_cli("tune", "login", "--email", "carol@example.com", "--password", "pw-c")
    wrong = run_cli("tune", "login", "--email", "carol@example.com", "--password", "not-pw-c")
    assert refused.code == wrong.code == 1 and "HTTP 401" in refused.err
    assert refused.err == wrong.err  # a suspended account's right password is not confirmed


def _register_adapter(live: Server, run_cli, cli_env: Path, monkeypatch, model_id: str) -> str:
    """A random LoRA adapter on tiny-llama registered in the server's bucket (as a runner would)."""
    pytest.importorskip("peft")
    from cli.admin import Store, open_runtime
    from domain.model import Model
    from runners.base_models import resolve_base_model
    from storage.layout import user_partition
    from tests.serving import adapter

    dataset_id = _upload(run_cli, cli_env)
    job_id = json.loads(
        run_cli("tune", "start", "--model", "tiny-llama", "--dataset", dataset_id, "--json").out
    )["job_id"]
    base = resolve_base_model("tiny-llama", cli_env / "cache" / "base-models")
    folder = adapter(base, cli_env / f"adapter-{model_id}", seed=5)
    user_id = _user_id(live)
    monkeypatch.setenv("TUNE_HOME", str(live.home))  # open_runtime sets it; restored after the test
    rt = open_runtime(Store(home=live.home))
    prefix = f"users/{user_id}/models/{model_id}/weights/"
    files = {path.name: path.read_bytes() for path in sorted(folder.iterdir())}
    for name, data in files.items():
        rt.bucket.write(prefix + name, data)
    model = Model.register(
        model_id=model_id, user_id=user_id, job_id=job_id, base_model="tiny-llama", kind="lora",
        weights_prefix=prefix, sha256=hashlib.sha256(files["adapter_model.safetensors"]).hexdigest(),
        size_bytes=sum(map(len, files.values())), metrics={}, at=rt.clock(),
    )  # fmt: skip
    rt.user_app(user_id).save(model)  # the job never ran: its model is written as a fixture
    rt.committed(user_partition(user_id))
    stopped = run_cli("tune", "stop", "--job-id", job_id)  # it only owns the fixture: free its slot
    assert stopped.code == 0, stopped.err
    return model_id


def test_model_download_and_chat(live: Server, run_cli, cli_env: Path, monkeypatch) -> None:
    """The CLI downloads a model through the API (checked against `model show`'s digest) and chats
    with it through the server's endpoint (nothing downloaded for that)."""
    model_id = _register_adapter(live, run_cli, cli_env, monkeypatch, "mdl_cli_live")
    shown = json.loads(run_cli("model", "show", "--model-id", model_id, "--json").out)
    assert (shown["base_model"], shown["kind"]) == ("tiny-llama", "lora")
    saved = run_cli("model", "download", "--model-id", model_id, "--archive", "--output", "m.tar")
    assert saved.code == 0, saved.err
    assert hashlib.sha256((cli_env / "m.tar").read_bytes()).hexdigest() == shown["sha256"]
    assert (cli_env / "m.tar").stat().st_size == shown["size_bytes"]
    unpacked = run_cli("model", "download", "--model-id", model_id, "--output", "dl")
    assert unpacked.code == 0, unpacked.err
    card = (cli_env / "dl" / "weights" / "README.md").read_text()
    assert model_id in card and str(live.home) not in card and "users/" not in card
    args = ("model", "chat", "--model-id", model_id, "--prompt", "hello", "--temperature", "0")
    first = run_cli(*args, "--max-new-tokens", "5")
    assert first.code == 0, first.err
    assert first.out.endswith("\n")
    assert run_cli(*args, "--max-new-tokens", "5").out == first.out  # greedy: same answer
    assert not (cli_env / "cache" / "models").exists()  # chat downloads nothing


LOAD = """
import json, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
kind, folder = sys.argv[1], sys.argv[2]
if kind == "adapter":
    from peft import AutoPeftModelForCausalLM
    model = AutoPeftModelForCausalLM.from_pretrained(folder)  # its base by adapter_config.json alone
else:
    model = AutoModelForCausalLM.from_pretrained(folder)
tok = AutoTokenizer.from_pretrained(folder)
ids = tok.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True,
                              return_tensors="pt", return_dict=True)["input_ids"]
out = model.generate(input_ids=ids, do_sample=False, max_new_tokens=6)
print(json.dumps(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)))
"""


@pytest.mark.slow
def test_a_downloaded_adapter_loads_anywhere(live: Server, run_cli, cli_env: Path, monkeypatch) -> None:
    """From the archive alone, in a fresh process with the hub off and no platform cache: the adapter
    (with its base, --with-base) and the merged model (--merged) give the endpoint's greedy tokens."""
    import httpx

    model_id = _register_adapter(live, run_cli, cli_env, monkeypatch, "mdl_anywhere")
    from cli.config import load_credentials

    token = load_credentials(live.url).token
    body = {"model": model_id, "messages": [{"role": "user", "content": "hello"}], "temperature": 0}
    reply = httpx.post(
        f"{live.url}/v1/chat/completions",
        json={**body, "max_tokens": 6},
        headers={"Authorization": f"Bearer {token}"},
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    served = reply.json()["choices"][0]["message"]["content"]
    for flag, folder in (("--with-base", "wb"), ("--merged", "merged")):
        got = run_cli("model", "download", "--model-id", model_id, flag, "--output", folder)
        assert got.code == 0, got.err
    elsewhere = cli_env / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1", "HOME": str(elsewhere)}
    env["HF_HOME"] = str(elsewhere / "hf")  # no cache of the platform's or the user's
    for kind, cwd, folder in (("adapter", cli_env / "wb", "weights"), ("merged", cli_env, "merged")):
        proc = subprocess.run(
            [sys.executable, "-c", LOAD, kind, folder],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert json.loads(proc.stdout.strip().splitlines()[-1]) == served, kind
    assert (
        json.loads((cli_env / "wb" / "weights" / "adapter_config.json").read_text())[
            "base_model_name_or_path"
        ]
        == "base"
    )


def test_api_keys_through_the_cli(live: Server, run_cli) -> None:
    import httpx

    created = run_cli("tune", "key", "create", "--name", "ci")
    assert created.code == 0, created.err
    key = created.out.strip()
    assert key.startswith("tsk.") and "not shown again" in created.err
    listed = json.loads(run_cli("tune", "key", "list", "--json").out)
    key_id = next(k["key_id"] for k in listed if k["name"] == "ci")
    assert key not in json.dumps(listed)
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{live.url}/v1/models", headers=headers).status_code == 200
    assert run_cli("tune", "key", "revoke", "--key-id", key_id).code == 0
    assert httpx.get(f"{live.url}/v1/models", headers=headers).status_code == 401


def _user_id(server: Server) -> str:
    from cli.config import load_credentials

    return load_credentials(server.url).user_id


@pytest.mark.slow
def test_train_follow_logs_cost_and_chat(live: Server, run_cli, cli_env: Path) -> None:
    """The user's whole path on the embedded workers: start, follow to success, logs, cost, chat."""
    dataset_id = _upload(run_cli, cli_env, rows=16)
    (cli_env / "config.yml").write_text("method: lora\nmax_steps: 2\nseed: 1\n")
    started = run_cli(
        "tune", "start", "--model", "tiny-llama", "--dataset", dataset_id, "--config", "config.yml"
    )
    assert started.code == 0, started.err
    job_id = re.search(r"started (\S+)", started.out).group(1)
    follow = run_cli("tune", "status", "--job-id", job_id, "--follow", "--interval", "0.5")
    assert follow.code == 0, follow.out + follow.err
    assert "succeeded" in follow.out.splitlines()[-1]
    log = run_cli("tune", "logs", "--job-id", job_id, "--tail", "200")
    assert log.code == 0 and log.out.strip()
    cost = json.loads(run_cli("tune", "cost", "--job-id", job_id, "--json").out)
    assert cost["status"] == "succeeded" and cost["gpu_metrics"]["gpu_ms"] > 0
    model_id = json.loads(run_cli("tune", "status", "--job-id", job_id, "--json").out)["model_id"]
    assert model_id in {m["model_id"] for m in json.loads(run_cli("model", "list", "--json").out)}
    chat = run_cli("model", "chat", "--model-id", model_id, "--prompt", "q1", "--max-new-tokens", "4")
    assert chat.code == 0, chat.err
