"""Whether a new job may start: the user's concurrent-job quota and the month's budget (pure).

``check_admission`` is asked before a job is submitted (the API's ``start``; a dispatcher may ask
again before it launches). It refuses with ``Forbidden`` and returns the warnings the submitter is
shown:

- ``quota_exceeded``: as many jobs as the quota allows are already queued or running;
- ``over_budget``: the estimate exceeds what remains of this month's budget (unless ``force``:
  then it starts with a warning, and the ledger stops it when the budget runs out);
- a warning when the estimate exceeds the job's own ``max_cost`` (it is stopped there).

The estimate asked with is the high end of its range (``domain.estimate.Estimate.high_usd_micros``):
a job is admitted only when even its costly outcome fits.
"""

from __future__ import annotations

from domain.errors import Forbidden
from domain.money import format_usd

__all__ = ["check_admission"]


def check_admission(
    *,
    active_jobs: int,
    max_concurrent_jobs: int | None,
    estimate_usd_micros: int,
    max_cost_usd_micros: int | None,
    remaining_usd_micros: int | None,
    force: bool,
) -> list[str]:
    """Refuse (``Forbidden``) a job the quota or the budget does not admit; else its warnings."""
    if max_concurrent_jobs is not None and active_jobs >= max_concurrent_jobs:
        raise Forbidden(
            f"quota reached: {active_jobs} of {max_concurrent_jobs} concurrent jobs are active; "
            "wait for one to finish or stop one",
            code="quota_exceeded",
        )
    warnings = []
    if max_cost_usd_micros is not None and estimate_usd_micros > max_cost_usd_micros:
        warnings.append(
            f"the estimate {format_usd(estimate_usd_micros)} exceeds "
            f"max_cost {format_usd(max_cost_usd_micros)}; will be stopped when it reaches max_cost"
        )
    if remaining_usd_micros is not None and estimate_usd_micros > remaining_usd_micros:
        message = (
            f"the estimate {format_usd(estimate_usd_micros)} exceeds what remains of this month's budget "
            f"({format_usd(remaining_usd_micros)})"
        )
        if not force:
            raise Forbidden(
                f"{message}; raise the budget (tune budget set) or pass force (tune start --force) "
                "to start it anyway",
                code="over_budget",
                where="force",
            )
        warnings.append(f"{message}; started anyway (force); it stops when the budget runs out")
    return warnings
