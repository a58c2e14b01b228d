"""The pure domain: events, aggregates, rules, money, and the two applications.

Imports only the standard library, eventsourcing and msgspec (and PyYAML in ``config_yaml``); no
I/O, no clock (every command takes ``at``). Modules, one job each:

- ``errors``, ``ids``: the error hierarchy; safe ids and aggregate ids;
- ``money``: exact micro-dollar arithmetic, the one rounding rule, ``$`` parsing/formatting;
- ``user``, ``user_email``, ``pricing``, ``catalogue``: platform-partition aggregates;
- ``dataset``, ``job``, ``model``, ``budget``: user-partition aggregates (``job`` holds the
  state machine, ``budget`` the alert and limit rules); ``job_states``: the job states, their
  transitions and named sets (standard library only, for the CLI too);
- ``read_models``: the Structs commands and queries return; ``applications``: ``PlatformApp``, ``UserApp``;
- ``training_config``, ``dataset_format``: config schema and dataset format rules; ``config_yaml``:
  a config's YAML text to a mapping (the API's and the CLI's one reader).

Public names are re-exported here lazily (``from domain import Job``), so importing
``domain.errors`` alone stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PlatformApp": "applications",
    "UserApp": "applications",
    "Budget": "budget",
    "DEFAULT_THRESHOLDS_PCT": "budget",
    "crossed_thresholds": "budget",
    "newly_crossed": "budget",
    "would_exceed": "budget",
    "BaseModelCatalogue": "catalogue",
    "Dataset": "dataset",
    "Job": "job",
    "JobState": "job_states",
    "TRANSITIONS": "job_states",
    "Model": "model",
    "ModelWeights": "model",
    "JobCostSummary": "money",
    "UsageGroupKey": "money",
    "cost_usd_micros": "money",
    "format_usd": "money",
    "parse_usd": "money",
    "period_of": "money",
    "DEFAULT_PRICES_USD_MICROS_PER_HOUR": "pricing",
    "PriceList": "pricing",
    "User": "user",
    "UserEmail": "user_email",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'domain' has no attribute {name!r}")
    return getattr(importlib.import_module(f"domain.{module}"), name)
