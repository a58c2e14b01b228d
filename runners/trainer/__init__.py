"""The trainer: chat-format SFT (LoRA or full) on transformers' Trainer, run as ``python -m runners.trainer``.

Torch-free names are re-exported here (the runner and API import them cheaply):
``RunSpec``/``read_run_spec``/``write_run_spec`` (run.yaml), ``load_training_config``
(config.yml text), ``decode_event`` and the event types (the trainer's stdout). The training
itself is ``runners.trainer.recipe.run_training(spec, sink)`` with a
``runners.trainer.callbacks.ProgressSink``; those modules import torch.
"""

from runners.trainer.config_io import dump_training_config, load_training_config
from runners.trainer.events import Checkpoint, Done, Error, Eval, Started, Step, TrainerEvent, decode_event
from runners.trainer.run_spec import RunSpec, dump_run_spec, parse_run_spec, read_run_spec, write_run_spec

__all__ = [
    "Checkpoint",
    "Done",
    "Error",
    "Eval",
    "RunSpec",
    "Started",
    "Step",
    "TrainerEvent",
    "decode_event",
    "dump_run_spec",
    "dump_training_config",
    "load_training_config",
    "parse_run_spec",
    "read_run_spec",
    "write_run_spec",
]
