"""One Controller per resource; handlers translate HTTP <-> service calls and nothing else."""

from api.controllers.auth import AuthController
from api.controllers.billing import BillingController
from api.controllers.datasets import DatasetController
from api.controllers.fine_tune import FineTuneController
from api.controllers.hardware import HardwareController
from api.controllers.health import HealthController
from api.controllers.keys import KeyController
from api.controllers.models import ModelController
from api.controllers.openai import OpenAIController
from api.controllers.openai_fine_tuning import OpenAIFilesController, OpenAIFineTuningController

__all__ = [
    "AuthController",
    "BillingController",
    "DatasetController",
    "FineTuneController",
    "HardwareController",
    "HealthController",
    "KeyController",
    "ModelController",
    "OpenAIController",
    "OpenAIFilesController",
    "OpenAIFineTuningController",
]

CONTROLLERS = [
    AuthController,
    HealthController,
    FineTuneController,
    ModelController,
    DatasetController,
    BillingController,
    HardwareController,
    OpenAIController,
    OpenAIFilesController,
    OpenAIFineTuningController,
    KeyController,
]
