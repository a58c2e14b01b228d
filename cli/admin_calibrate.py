"""``tune admin calibrate``: the calibration row of a base model on a GPU type, measured from real jobs.

Run one or more jobs of the base model on the GPU type (the quick start's job will do), then
give their ids: each succeeded first attempt says what it took (``EstimateService.measured``:
its estimated tokens, its training time, the rest of its billed time); they are pooled as
the estimate pools evidence (``domain.estimate.pooled``) and printed as the line that goes in
``domain.estimate.CALIBRATION``, the estimate of a user who has no jobs of their own yet. Every
job must be on the same base model, GPU type and count 1 (a calibration is per device).
"""

from __future__ import annotations

from typing import Annotated

from cyclopts import Parameter

from cli.admin import Store, open_runtime
from cli.context import JsonFlag
from cli.errors import CliError

__all__ = ["calibrate"]


def calibrate(
    *,
    user_id: Annotated[str, Parameter(help="The user who ran the jobs.")],
    job_id: Annotated[list[str], Parameter(help="A succeeded job to measure (repeat for several).")],
    store: Store = Store(),  # noqa: B008
    json: JsonFlag = False,
) -> None:
    """Print the calibration row measured from succeeded jobs of one base model on one GPU type."""
    from api.services.estimates import EstimateService
    from cli.output import print_json
    from domain.estimate import pooled
    from storage import layout

    rt = open_runtime(store)
    rt.committed(layout.user_partition(user_id))
    service = EstimateService(rt, user_id)
    samples, kinds = [], set()
    for job in job_id:
        measured = service.measured(job)
        status = rt.view_json(layout.job_status(user_id, job)) or {}
        if measured is None:
            raise CliError(f"job {job} is no measurement: not succeeded in its first attempt, or untimed")
        config, sample = measured
        if config.gpu_count != 1:
            raise CliError(f"job {job} ran on {config.gpu_count} devices: calibrate on one")
        kinds.add((str(status.get("base_model") or ""), config.gpu_type))
        samples.append(sample)
    if len(kinds) != 1:
        raise CliError(f"the jobs differ in base model or GPU type: {sorted(kinds)}")
    (base_model, gpu_type), row = kinds.pop(), pooled(samples)
    if json:
        print_json({"base_model": base_model, "gpu_type": gpu_type, "jobs": len(samples), **_fields(row)})
        return
    print(
        f'    ("{base_model}", "{gpu_type}"): Measurement('
        f"tokens={row.tokens:_}, train_ms={row.train_ms:_}, overhead_ms={row.overhead_ms:_}),"
        f"  # {len(samples)} job{'s' if len(samples) != 1 else ''}"
    )


def _fields(row: object) -> dict[str, int]:
    return {name: getattr(row, name) for name in ("tokens", "train_ms", "overhead_ms")}
