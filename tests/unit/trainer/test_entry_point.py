"""``python -m runners.trainer --run run.yaml``: JSON lines on stdout, graceful stops, exit statuses."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import yaml

from runners.trainer.__main__ import EXIT_INVALID, EXIT_STOPPED, EXIT_SUCCEEDED, run
from runners.trainer.events import Checkpoint, Done, Error, Started, Step, decode_event
from runners.trainer.run_spec import RunSpec, dump_run_spec
from runners.trainer.sinks import StopSignal

REPO = Path(__file__).resolve().parents[3]


def _trainer(run_yaml: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "runners.trainer", "--run", str(run_yaml), "--threads", "2"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _write(tmp_path: Path, spec: RunSpec) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(dump_run_spec(spec))
    return path


def test_the_entry_point_trains_and_prints_only_events(make_spec, tmp_path: Path) -> None:
    spec = msgspec.structs.replace(make_spec(max_steps=20), base_model_ref="tiny-llama")  # as runners do
    proc = _trainer(_write(tmp_path, spec))
    out, err = proc.communicate(timeout=120)

    assert proc.returncode == EXIT_SUCCEEDED, err.decode()[-2000:]
    assert b"is_gradient_checkpointing" not in err and b"Could not find a config file" not in err  # job.log
    events = [decode_event(line) for line in out.splitlines()]
    assert None not in events, out.decode()  # nothing but events on stdout
    assert isinstance(events[0], Started) and events[0].total_steps == 20
    steps = [e for e in events if isinstance(e, Step)]
    assert [s.step for s in steps] == list(range(1, 21))
    assert steps[-1].loss < steps[0].loss / 2
    done = events[-1]
    assert isinstance(done, Done) and done.status == "succeeded" and done.step == 20
    assert (Path(done.model_dir) / "adapter_model.safetensors").is_file()
    assert done.metrics["tokens"] == steps[-1].tokens


def test_sigterm_checkpoints_and_exits_stopped(make_spec, tmp_path: Path) -> None:
    proc = _trainer(_write(tmp_path, make_spec(max_steps=100_000, checkpoint_every_steps=100_000)))
    assert proc.stdout is not None
    for line in proc.stdout:
        if isinstance(decode_event(line), Step):
            proc.send_signal(signal.SIGTERM)
            break
    rest, err = proc.communicate(timeout=120)

    assert proc.returncode == EXIT_STOPPED, err.decode()[-2000:]
    events = [decode_event(line) for line in rest.splitlines()]
    checkpoints = [e for e in events if isinstance(e, Checkpoint)]
    done = events[-1]
    assert isinstance(done, Done) and done.status == "stopped" and done.step < 100_000
    assert checkpoints and checkpoints[-1].path == done.checkpoint and checkpoints[-1].step == done.step
    assert (Path(done.checkpoint) / "trainer_state.json").is_file()


class _TouchOnFirstStep(io.BytesIO):
    """An event stream that creates the stop file once it sees the first step (as a runner would)."""

    def __init__(self, stop_file: Path) -> None:
        super().__init__()
        self.stop_file = stop_file

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if isinstance(decode_event(data), Step):
            self.stop_file.touch()
        return super().write(data)


def test_the_stop_file_checkpoints_and_exits_stopped(make_spec, tmp_path: Path) -> None:
    spec = make_spec(max_steps=1000, checkpoint_every_steps=1000)
    stream = _TouchOnFirstStep(spec.stop_path)

    status = run(_write(tmp_path, spec), stream, StopSignal())

    events = [decode_event(line) for line in stream.getvalue().splitlines()]
    assert status == EXIT_STOPPED
    assert isinstance(events[-1], Done) and events[-1].status == "stopped" and events[-1].step == 2
    assert Path(events[-1].checkpoint).is_dir()


def test_a_bad_config_exits_invalid_naming_every_key(make_spec, tmp_path: Path) -> None:
    raw = yaml.safe_load(dump_run_spec(make_spec()))
    raw["config"] = {"lora": {"r": 0}, "bogus": 1, "learning_rate": 5}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    stream = io.BytesIO()

    status = run(path, stream, StopSignal())

    (event,) = [decode_event(line) for line in stream.getvalue().splitlines()]
    assert status == EXIT_INVALID
    assert isinstance(event, Error) and not event.retryable
    assert set(event.where.split(", ")) == {"lora.r", "bogus", "learning_rate"}
    assert "lora.r" in event.message and "unknown key" in event.message
