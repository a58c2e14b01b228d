"""Services: what each route does, between HTTP (controllers) and the domain (applications, views).

One module per resource. A service is bound to the runtime and one caller's
partition; it reads views, calls application commands, and waits for the
projector after a write (``Runtime.committed``), so its answers show the write.
"""

from api.services.accounts import AccountService
from api.services.billing import BillingService
from api.services.datasets import DatasetService
from api.services.hardware import HardwareService
from api.services.jobs import JobService
from api.services.models import ModelService

__all__ = [
    "AccountService",
    "BillingService",
    "DatasetService",
    "HardwareService",
    "JobService",
    "ModelService",
]
