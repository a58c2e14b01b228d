"""``tune serve``: the API, projector, dispatcher and ledger in one process (provisional)."""

from __future__ import annotations


def serve() -> None:
    """Run the API with the projector and workers on the local bucket."""
    raise NotImplementedError
