"""The ledger: heartbeats -> exact metered usage, alerts and stop requests, lost-job detection.

- ``usage_runs``: pure dedupe and grouping of heartbeats into usage runs (``domain.metering`` holds
  the rules and the command's plan and result types);
- ``limits``: pure alert and stop decisions (``domain.budget`` rules);
- ``spend``: a user's spend per period, by billing.json's own fold;
- ``live``: the attempts heard from lately; ``lost``: ``LostJobDetector``;
- ``worker``: ``LedgerWorker``, the subscriber's handler; ``python -m roles.ledger`` runs it.
"""

from runners.ledger.limits import STOP_REASON
from runners.ledger.live import LiveJob, LiveJobs
from runners.ledger.lost import LOST_AFTER_INTERVALS, LostJob, LostJobDetector, watch_running_jobs
from runners.ledger.worker import LedgerStats, LedgerWorker

__all__ = [
    "LOST_AFTER_INTERVALS",
    "STOP_REASON",
    "LedgerStats",
    "LedgerWorker",
    "LiveJob",
    "LiveJobs",
    "LostJob",
    "LostJobDetector",
    "watch_running_jobs",
]
