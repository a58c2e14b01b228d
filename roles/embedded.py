"""The embedded default, ``tune serve``: the API, its projector, the dispatcher and the ledger in one process.

``serve(settings, host=, port=)`` bootstraps a new home, builds one ``Runtime`` (bucket,
applications, projector) and hands it to the API app and to these workers, which share
its applications and projector:

- the ``Dispatcher`` with the local-subprocess backend: jobs the API submits are queued
  and handed to ``python -m runners.job_runner`` children; their heartbeats come back
  over the children's stdout and are published into an in-process transport;
- the chat engine behind ``/v1/chat/completions`` (``Runtime.serving``, ``open_chat_engine``): by
  default ``runners.serving.AdapterEngine``, base models from the bucket or the runners' base-model
  store (``<home>/base-models``), adapters copied to ``<home>/serving`` and swapped per request;
  with ``TUNE_SERVING_ENGINE=vllm``, ``runners.serving.VllmEngine``, which forwards to the vLLM
  servers of ``TUNE_VLLM_URLS`` and registers the adapters it copies to ``<home>/serving`` with them;
- the ``BaseModelPreparer`` (``runners.base_model_prep``): on a thread, at start-up and when the
  catalogue grows, it converts each base model (``Settings.prepare_base_models``) into
  ``<home>/base-models`` and the bucket's ``base-models/<name>/`` once for the platform, so a
  user's first job or chat converts nothing; the API answers meanwhile;
- the ``LedgerWorker`` subscribed to that transport: it meters usage (only heartbeats signed
  with the secret the dispatcher handed their runner: both derive it from the platform's
  heartbeat key, ``runtime.settings.heartbeat_key_of``), raises alerts,
  requests stops at budget limits and detects lost runners (a lost job retried by
  policy goes back to the dispatcher).

On start, jobs left queued by a previous server are queued again and running ones are
watched, so a restart loses no work: an attempt that still heartbeats to the ledger is adopted
(over Pub/Sub, or any transport the runner publishes to where the new ledger reads); one that
stays quiet for the lost threshold is lost and retried. With the local stdout transport a new
process cannot receive a surviving runner's stdout: that runner finds its heartbeat pipe broken,
checkpoints, stops and records a retry ("control plane unreachable", ``runners.job_runner``), and
writes the heartbeats it could not deliver to its spool, which the ledger meters (on start, or
when its sweep finds it); the ledger then hands the retried job to this dispatcher.
The home is made private (0700) and the process's umask
077, so what the workers and their runner children write there (work folders, run logs,
converted base models) is this account's only, like the bucket's own objects. In production
the same roles run as separate processes (``python -m roles.ledger``, a dispatcher per
cluster) over Pub/Sub.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

from api.app import create_app
from domain.base_models import BaseModelSource
from domain.errors import NotFound
from roles.bootstrap import bootstrap, hand_over
from roles.http import run_granian
from runners.attempt_spec import JobRunSpec
from runners.base_model_prep import BaseModelPreparer
from runners.dispatcher import Dispatcher, local_dispatcher
from runners.ledger.usage_runs import CLOCK_BOUND
from runners.ledger.worker import LedgerWorker
from runners.recovery import resubmit_waiting
from runners.serving import AdapterEngine, ModelFiles, ServingMeter, VllmEngine
from runtime.context import Runtime
from runtime.serving import ChatEngine
from runtime.settings import Settings, heartbeat_key_of, ledger_of
from storage.heartbeats import open_heartbeat_transport
from storage.open import ensure_home

__all__ = ["EmbeddedWorkers", "open_chat_engine", "serve"]

log = logging.getLogger(__name__)


class EmbeddedWorkers:
    """Dispatcher + ledger for one ``Runtime``; ``start()`` wires them, ``close()`` stops them.

    Args:
        runtime: the process's context (its bucket, applications and projector are shared).
        max_concurrent: training runs at once (2 cores here: one).
        heartbeat_url: the in-process transport the dispatcher publishes into and the ledger reads.
        log_dir: where runner logs are kept locally (default: ``<TUNE_HOME>/runs``).
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        max_concurrent: int = 1,
        heartbeat_url: str = "direct://embedded",
        log_dir: Path | None = None,
    ) -> None:
        self.runtime = runtime
        heartbeat_key = heartbeat_key_of(runtime.settings)  # each attempt's secret derives from it
        transport = open_heartbeat_transport(heartbeat_url)
        self._publisher = transport.publisher()
        self.dispatcher: Dispatcher = local_dispatcher(
            runtime.bucket,
            heartbeats=self._publisher,
            notify=runtime.projector.notify,
            log_dir=log_dir or Path(runtime.settings.home) / "runs",
            runner_env={"TUNE_HOME": str(runtime.settings.home)},
            open_app=runtime.user_app,
            clock=runtime.clock,
            max_concurrent=max_concurrent,
            on_launch=self._expect_heartbeats,
            base_model_source=self._base_model_source,
            heartbeat_key=heartbeat_key,
            platform=runtime.platform,  # the dispatcher records what its backend offers
        )
        self.ledger = LedgerWorker(
            runtime.bucket,
            runtime.platform,
            runtime.user_app,
            transport.subscriber(),
            runtime.projector,
            heartbeat_key=heartbeat_key,
            clock=runtime.clock,
            on_retry=self.dispatcher.submit,
            clock_bound=CLOCK_BOUND,
        )
        home = Path(runtime.settings.home)
        self.engine = open_chat_engine(
            runtime.settings,
            ModelFiles(
                runtime.bucket,
                home / "serving",
                base_store=home / "base-models",
                source_of=self._base_model_source,
            ),
        )
        self.meter = ServingMeter(runtime, interval_s=runtime.settings.serving_flush_s)
        self.preparer = BaseModelPreparer(
            runtime.bucket,
            home / "base-models",
            runtime.base_model_sources,
            selection=runtime.settings.prepare_base_models,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Hook job submission to the dispatcher and the engine to the API, resume left-over jobs,
        start both loops, and the base models' conversion in the background."""
        self.preparer.start()
        self.runtime.job_submitted.append(self.dispatcher.submit)
        self.runtime.serving = self.engine
        self.runtime.completion_served.append(self.meter.record)
        self.meter.start()
        watched = self.ledger.recover()
        requeued = resubmit_waiting(self.dispatcher, self.runtime.bucket)
        self.ledger.start()
        self._thread = threading.Thread(target=self.dispatcher.run, args=(self._stop,), name="dispatcher")
        self._thread.daemon = True
        self._thread.start()
        log.info("workers started: %d job(s) requeued, %d running job(s) watched", requeued, watched)

    def close(self, timeout: float = 60.0) -> None:
        """Stop taking jobs, stop the runs still going (gracefully), then the ledger."""
        self._stop.set()
        self.preparer.close()
        if self._thread is not None:
            self._thread.join(timeout)
        self.dispatcher.close(timeout)
        self._publisher.close()
        self.ledger.close(timeout)
        self.runtime.serving = None
        self.meter.close()
        self.engine.close()

    def _base_model_source(self, name: str) -> BaseModelSource | None:
        """Where a base model comes from, by the platform's catalogue (operators add local folders)."""
        try:
            view = self.runtime.platform.get_base_model(name)
        except NotFound:
            return None
        return BaseModelSource(view.name, view.source_kind, view.source)  # type: ignore[arg-type]

    def _expect_heartbeats(self, spec: JobRunSpec) -> None:
        self.ledger.watch(spec.user_id, spec.job_id, spec.attempt, interval_s=spec.heartbeat_interval_s)


def open_chat_engine(settings: Settings, files: ModelFiles) -> ChatEngine:
    """The chat engine ``settings.serving_engine`` names: ``local`` (in this process) or ``vllm``."""
    if settings.serving_engine == "vllm":
        return VllmEngine(files, settings.vllm_urls, max_adapters=settings.serving_adapters)
    return AdapterEngine(files, max_adapters=settings.serving_adapters)


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8600,
    runtime: Runtime | None = None,
    log_level: str = "info",
) -> None:
    """Bootstrap a new home (telling how to log in: ``bootstrap.hand_over``), then serve until interrupted."""
    os.umask(0o077)
    ensure_home(settings.home)
    runtime = runtime or Runtime(settings)
    ledger_of(settings, runtime.bucket, role="embedded")  # signs its commits; witnessed if TUNE_WITNESS
    first = bootstrap(runtime)
    if first is not None:
        hand_over(first, f"http://{host}:{port}", settings.home, sys.stderr)
    logging.getLogger("api").setLevel(log_level.upper())
    workers = EmbeddedWorkers(runtime)
    workers.start()
    try:
        run_granian(
            create_app(settings, runtime=runtime),
            host=host,
            port=port,
            log_level=log_level,
            access_log=log_level == "debug",
        )
    finally:
        workers.close()
