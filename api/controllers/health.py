"""``GET /health``: the server is up (no token needed)."""

from __future__ import annotations

from importlib import metadata

from litestar import Controller, get
from litestar.di import NamedDependency

from api.openapi import PublicOperation
from api.schemas import Health
from projections.render import iso
from runtime.context import Runtime


def _version() -> str:
    try:
        return metadata.version("tune-platform")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get(operation_id="health", exclude_from_auth=True, operation_class=PublicOperation, sync_to_thread=False)
    def health(self, runtime: NamedDependency[Runtime]) -> Health:
        """Liveness: version, the bucket's kind, and the server's clock."""
        scheme = runtime.bucket.url.split("://", 1)[0] if "://" in runtime.bucket.url else "file"
        return Health(status="ok", version=_version(), bucket=scheme, time=iso(runtime.clock()) or "")
