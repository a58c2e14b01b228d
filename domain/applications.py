"""The service layer: two eventsourcing Applications, one per kind of partition.

``PlatformApp`` (partition ``platform``) holds users, the email index, the price list and the
base-model catalogue. ``UserApp`` (partition ``users/<user_id>``) holds one user's datasets,
jobs, models and budget.

Every command is ``verb_noun(..., at)`` with the time passed in; it loads, acts, saves and
returns an id or a Struct from ``domain.read_models`` (never an aggregate). Refusals raise the
``domain.errors`` hierarchy and write nothing:

- unknown ids: ``NotFound`` (the library's ``AggregateNotFoundError`` re-raised as ours);
- impossible transitions, in-use objects, duplicates: ``Conflict``;
- ``expected_version`` (optional on updates) not matching the stored version, or another
  writer saving first: ``Conflict`` with code ``version_conflict``.

Persistence comes from the environment (eventsourcing's ``PERSISTENCE_MODULE``, and
``TUNE_PARTITION``, which defaults to ``platform/events/`` and ``users/<user_id>/events/``
(``domain.partitions``), the prefixes ``storage.eventstore`` expects); without it, in-memory POPO.
"""

from domain.platform_app import PlatformApp
from domain.user_app import UserApp

__all__ = ["PlatformApp", "UserApp"]
