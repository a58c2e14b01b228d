"""Exact money: integer micro-dollars, GPU time in integer milliseconds.

The one rounding rule (CONTRACTS.md): the cost of a usage group is

    round_half_up(gpu_ms * gpu_count * usd_micros_per_hour / 3_600_000)

computed once per group ``(period, job, gpu_type, gpu_count, usd_micros_per_hour)`` from the
group's *summed* milliseconds, never per heartbeat. A job's cost is the sum of its groups, a
period's total the sum of its jobs.

Credits (``Job.UsageCredited``: platform faults, hard caps) are kept per group too, in
milliseconds: a group's *net* cost is ``cost(charged_ms - credited_ms)``, its *credited*
amount ``cost(charged_ms) - net`` (``group_costs``), so charged = credited + net exactly, per
group and summed, and each is reproducible by replay. A group is never credited more
milliseconds than it was charged. What a user pays (``cost_usd_micros`` of a job, a period's
``total_cost_usd_micros``) is the net; ``max_ms_within`` finds the most milliseconds a group may
keep under a cap. Only integer arithmetic is used; ``Decimal`` appears only
where text is parsed or printed (``parse_usd``; ``dollars`` for views, ``format_usd`` for people).
Never ``float``. These are the only dollar parser and formatter: the API, views, reports and the
CLI all use them.

Serving (chat completions) is priced per million tokens, prompt and completion apart
(``serving_cost_usd_micros``): the cost of a serving group is

    round_half_up((prompt_tokens * prompt_price + completion_tokens * completion_price) / 1_000_000)

with both prices in micro-dollars per million tokens, computed once per group ``(period, model,
base_model, prompt_price, completion_price)`` from the group's *summed* tokens, never per request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import NamedTuple

import msgspec

from domain.errors import ValidationFailed

__all__ = [
    "MICROS_PER_USD",
    "MS_PER_HOUR",
    "JobCostSummary",
    "UsageGroupKey",
    "UsageLine",
    "add_usage",
    "check_period",
    "cost_usd_micros",
    "dollars",
    "dollars_or_none",
    "format_usd",
    "group_costs",
    "max_ms_within",
    "parse_usd",
    "period_of",
    "round_half_up_div",
    "serving_cost_usd_micros",
    "summarize_job_cost",
]

MICROS_PER_USD = 1_000_000
MS_PER_HOUR = 3_600_000
TOKENS_PER_PRICE_UNIT = 1_000_000
"""Serving prices are per million tokens."""
_MICRO = Decimal("0.000001")
_CENTS = Decimal("0.01")


def round_half_up_div(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half up (both non-negative, denominator > 0)."""
    if numerator < 0 or denominator <= 0:
        raise ValueError(f"need numerator >= 0 and denominator > 0, got {numerator}/{denominator}")
    quotient, remainder = divmod(numerator, denominator)
    return quotient + (1 if 2 * remainder >= denominator else 0)


def cost_usd_micros(gpu_ms: int, gpu_count: int, usd_micros_per_hour: int) -> int:
    """The cost of one usage group in micro-dollars: ``gpu_ms`` summed over the group.

    Args:
        gpu_ms: wall-clock milliseconds the job held its GPUs (not multiplied by the count).
        gpu_count: GPUs the job held.
        usd_micros_per_hour: price of one GPU for one hour, in micro-dollars.
    """
    args = {"gpu_ms": gpu_ms, "gpu_count": gpu_count, "usd_micros_per_hour": usd_micros_per_hour}
    for name, value in args.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValidationFailed(f"{name} must be a non-negative integer (got {value!r})", where=name)
    return round_half_up_div(gpu_ms * gpu_count * usd_micros_per_hour, MS_PER_HOUR)


def serving_cost_usd_micros(
    prompt_tokens: int,
    completion_tokens: int,
    prompt_usd_micros_per_mtok: int,
    completion_usd_micros_per_mtok: int,
) -> int:
    """The cost of one serving group in micro-dollars, from its summed tokens (module docstring)."""
    args = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "prompt_usd_micros_per_mtok": prompt_usd_micros_per_mtok,
        "completion_usd_micros_per_mtok": completion_usd_micros_per_mtok,
    }
    for name, value in args.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValidationFailed(f"{name} must be a non-negative integer (got {value!r})", where=name)
    numerator = (
        prompt_tokens * prompt_usd_micros_per_mtok + completion_tokens * completion_usd_micros_per_mtok
    )
    return round_half_up_div(numerator, TOKENS_PER_PRICE_UNIT)


def group_costs(
    charged_ms: int, credited_ms: int, gpu_count: int, usd_micros_per_hour: int
) -> tuple[int, int, int]:
    """A usage group's ``(charged, credited, net)`` micro-dollars: net = cost(charged_ms - credited_ms),
    credited = cost(charged_ms) - net (so charged = credited + net exactly)."""
    if not 0 <= credited_ms <= charged_ms:
        raise ValidationFailed(
            f"a group cannot be credited {credited_ms} ms of {charged_ms} ms charged", where="gpu_ms"
        )
    charged = cost_usd_micros(charged_ms, gpu_count, usd_micros_per_hour)
    net = cost_usd_micros(charged_ms - credited_ms, gpu_count, usd_micros_per_hour)
    return charged, charged - net, net


def max_ms_within(usd_micros: int, gpu_count: int, usd_micros_per_hour: int) -> int | None:
    """The most milliseconds a group may sum to and cost at most ``usd_micros`` (None: any, it is free).

    ``cost(ms) <= X`` with ``cost(ms) = round_half_up(ms * r / 3_600_000)`` (``r = gpu_count *
    usd_micros_per_hour``) holds exactly when ``2 * ms * r < (2X + 1) * 3_600_000``: integers only.
    """
    if usd_micros < 0:
        raise ValueError(f"usd_micros must not be negative (got {usd_micros})")
    rate = gpu_count * usd_micros_per_hour
    if rate == 0:
        return None
    return ((2 * usd_micros + 1) * MS_PER_HOUR - 1) // (2 * rate)


def period_of(at: datetime) -> str:
    """The billing period (calendar month, UTC) containing ``at``: ``"2026-03"``."""
    if at.tzinfo is None:
        raise ValidationFailed("a time must carry a timezone (UTC)", where="at")
    at = at.astimezone(UTC)
    return f"{at.year:04d}-{at.month:02d}"


def check_period(period: str) -> str:
    """Refuse anything but a billing period like ``"2026-03"``."""
    year, dash, month = str(period).partition("-")
    if not (dash and len(year) == 4 and year.isdigit() and len(month) == 2 and month.isdigit()):
        raise ValidationFailed(f"period must look like 2026-03 (got {period!r:.20})", where="period")
    if not 1 <= int(month) <= 12:
        raise ValidationFailed(f"period must look like 2026-03 (got {period!r:.20})", where="period")
    return period


def parse_usd(text: str | int | Decimal, *, where: str = "amount", allow_negative: bool = False) -> int:
    """Dollars (``"$12.34"``, ``"12.34"``, ``"-$0.50"``, ``"1,000"``, int, Decimal) to exact micro-dollars.

    More than six decimal places is refused (not a whole number of micro-dollars), as are floats
    (pass text), NaN, infinities and, unless ``allow_negative``, negative amounts.
    """
    if isinstance(text, bool | float):
        raise ValidationFailed("give dollars as text like '12.34', not a float", where=where)
    if isinstance(text, int | Decimal):
        amount = Decimal(text)
    else:
        match = _AMOUNT.fullmatch(str(text).strip())
        if match is None:
            raise ValidationFailed(f"not a dollar amount like '12.34': {text!r:.40}", where=where)
        amount = Decimal(match["sign"] + match["digits"].replace(",", ""))
    if not amount.is_finite():
        raise ValidationFailed(f"not a dollar amount: {text!r:.40}", where=where)
    if amount < 0 and not allow_negative:
        raise ValidationFailed(f"amount must not be negative (got {text!r:.40})", where=where)
    micros = amount * MICROS_PER_USD
    if micros != micros.to_integral_value():
        raise ValidationFailed(f"amount has more than 6 decimal places: {text!r:.40}", where=where)
    return int(micros)


_AMOUNT = re.compile(r"(?P<sign>-?)\$?(?P<digits>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")


def dollars(usd_micros: int) -> Decimal:
    """Exact dollars from micro-dollars, at least two decimals: 10.00, 156.78, 0.000123."""
    value = Decimal(usd_micros).scaleb(-6).normalize()
    return value.quantize(_CENTS) if value.as_tuple().exponent > -2 else value  # type: ignore[operator]


def dollars_or_none(usd_micros: int | None) -> Decimal | None:
    """``dollars``, keeping an absent amount absent (an optional limit or estimate)."""
    return None if usd_micros is None else dollars(usd_micros)


def format_usd(micros: int, *, places: int | None = None, grouping: bool = True) -> str:
    """Micro-dollars as ``"$1,234.56"`` (``"-$0.50"`` when negative; ``"$1234.56"`` without ``grouping``).

    By default exact (``dollars``): at least two decimals, more only where needed
    (``"$0.000123"``), so ``parse_usd(format_usd(m)) == m``. With ``places`` (0-6) rounded half
    up for display.
    """
    if not isinstance(micros, int) or isinstance(micros, bool):
        raise TypeError(f"micros must be an int, got {type(micros).__name__}")
    if places is None:
        amount = dollars(abs(micros))
    elif 0 <= places <= 6:
        amount = (Decimal(abs(micros)) * _MICRO).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    else:
        raise ValueError("places must be 0-6")
    return f"{'-' if micros < 0 else ''}${amount:{',' if grouping else ''}f}"


class UsageGroupKey(NamedTuple):
    """What a usage group is keyed by: cost is computed once per distinct key."""

    period: str
    job_id: str
    gpu_type: str
    gpu_count: int
    usd_micros_per_hour: int

    def encode(self) -> str:
        """A string form usable as a JSON object key: ``period|job_id|gpu_type|gpu_count|price``."""
        return "|".join(str(part) for part in self)

    @classmethod
    def decode(cls, text: str) -> UsageGroupKey:
        period, job_id, gpu_type, gpu_count, price = text.split("|")
        return cls(period, job_id, gpu_type, int(gpu_count), int(price))


def add_usage(groups: dict[str, int], key: UsageGroupKey, gpu_ms: int) -> None:
    """Add ``gpu_ms`` to the group ``key`` in ``groups`` (encoded key -> summed milliseconds)."""
    if gpu_ms < 0:
        raise ValidationFailed(f"gpu_ms must not be negative (got {gpu_ms})", where="gpu_ms")
    encoded = key.encode()
    groups[encoded] = groups.get(encoded, 0) + gpu_ms


class UsageLine(msgspec.Struct, frozen=True):
    """One priced usage group of a job: ``gpu_ms`` charged, ``cost_usd_micros`` net (what is paid)."""

    period: str
    gpu_type: str
    gpu_count: int
    usd_micros_per_hour: int
    gpu_ms: int
    cost_usd_micros: int
    credited_gpu_ms: int = 0
    credited_usd_micros: int = 0

    @property
    def charged_usd_micros(self) -> int:
        return self.cost_usd_micros + self.credited_usd_micros


class JobCostSummary(msgspec.Struct, frozen=True):
    """A job's cost: the sum of its groups, each priced once; ``gpu_ms`` is what was charged,
    ``cost_usd_micros`` the net (charged less credited)."""

    job_id: str
    gpu_ms: int
    cost_usd_micros: int
    lines: list[UsageLine]
    credited_gpu_ms: int = 0
    credited_usd_micros: int = 0

    @property
    def charged_usd_micros(self) -> int:
        return self.cost_usd_micros + self.credited_usd_micros


Groups = Mapping[str, int] | Iterable[tuple[UsageGroupKey, int]]


def summarize_job_cost(job_id: str, groups: Groups, credited: Groups = ()) -> JobCostSummary:
    """Fold a job's usage groups (encoded key -> ms, or (key, ms) pairs) and the milliseconds
    credited in them into its priced lines (``group_costs``)."""
    summed, credits = _summed(job_id, groups), _summed(job_id, credited)
    if not credits.keys() <= summed.keys():
        raise ValueError(f"job {job_id} has credits in groups it was never charged in")
    lines = []
    for k, ms in sorted(summed.items()):
        credited_ms = credits.get(k, 0)
        _, credited_usd, net = group_costs(ms, credited_ms, k.gpu_count, k.usd_micros_per_hour)
        price = k.usd_micros_per_hour
        lines.append(UsageLine(k.period, k.gpu_type, k.gpu_count, price, ms, net, credited_ms, credited_usd))
    return JobCostSummary(
        job_id=job_id,
        gpu_ms=sum(line.gpu_ms for line in lines),
        cost_usd_micros=sum(line.cost_usd_micros for line in lines),
        lines=lines,
        credited_gpu_ms=sum(line.credited_gpu_ms for line in lines),
        credited_usd_micros=sum(line.credited_usd_micros for line in lines),
    )


def _summed(job_id: str, groups: Groups) -> dict[UsageGroupKey, int]:
    pairs = (
        ((UsageGroupKey.decode(k), ms) for k, ms in groups.items()) if isinstance(groups, Mapping) else groups
    )
    summed: dict[UsageGroupKey, int] = {}
    for key, ms in pairs:
        if key.job_id != job_id:
            raise ValueError(f"usage group of job {key.job_id} given for job {job_id}")
        summed[key] = summed.get(key, 0) + ms
    return summed
