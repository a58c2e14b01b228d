"""The training configuration (``config.yml``): its schema, defaults and validation.

A job's config is checked whole before the job exists: unknown keys and
out-of-range values are all collected and reported together (torchtune style),
each named by its dotted key (``lora.r``, ``learning_rate``).

Keys and defaults (the README copies this table):

==============================  ==============  ==================================================
key                             default         meaning
==============================  ==============  ==================================================
method                          ``lora``        ``lora`` (adapters only) or ``full`` (all weights)
lora.r                          ``8``           LoRA rank, 1-1024
lora.alpha                      ``16``          LoRA scaling numerator (> 0); scale = alpha / r
lora.dropout                    ``0.05``        dropout on the LoRA input, 0 <= p < 1
lora.target_modules             ``[q_proj, v_proj]``  module names to adapt, or ``[all-linear]``
objective                       ``sft``         ``sft`` (supervised, on a chat/prompt_completion/text
                                                dataset) or ``dpo`` (preference tuning, on a preference
                                                dataset); with either ``method``
dpo_beta                        ``0.1``         DPO's beta (used when objective is ``dpo``): how far the
                                                policy may drift from the reference, 0 < beta <= 2
epochs                          ``3``           passes over the training split, 1-1000
batch_size                      ``4``           examples per device per micro-batch, 1-1024
gradient_accumulation_steps     ``1``           micro-batches per optimizer step, 1-1024
learning_rate                   ``0.0002``      peak learning rate, 0 < lr <= 1
lr_scheduler                    ``cosine``      ``linear``, ``cosine``, ``constant``, ``constant_with_warmup``
warmup_ratio                    ``0.0``         warmup as a fraction of all steps, 0 <= r < 1
warmup_steps                    ``0``           warmup in steps (set this or warmup_ratio, not both)
weight_decay                    ``0.0``         AdamW weight decay, 0-1
max_grad_norm                   ``1.0``         gradient clipping norm (0 turns clipping off)
max_seq_length                  ``1024``        tokens per example; longer ones are truncated, 16-131072
seed                            ``42``          seed for data order, LoRA init and dropout
validation_split                ``0.0``         fraction held out for a validation loss (computed at each
                                                checkpoint and at the end), 0 <= f <= 0.5
validation_dataset_id           ``null``        a validated dataset of the same user and format to compute the
                                                validation loss on instead (not with validation_split > 0)
early_stopping_patience         ``null``        stop after N evaluations in a row without an improvement of
                                                the validation loss; the model is then the best checkpoint's
                                                (needs a validation set), 1-1000
early_stopping_threshold        ``0.0``         how much the validation loss must fall to count as an
                                                improvement, >= 0 (needs early_stopping_patience)
checkpoint_every_steps          ``100``         save a resumable checkpoint every N optimizer steps
max_steps                       ``null``        optional cap on optimizer steps (overrides epochs)
precision                       ``auto``        ``auto`` (bf16 on a GPU with bf16, else fp32), ``fp32``,
                                                ``bf16`` or ``fp16``
gradient_checkpointing          ``false``       trade compute for memory on large models
gpu_type                        ``cpu``         GPU type to run on (priced by the price list)
gpu_count                       ``1``           GPUs per job, 1-16 (one trainer process uses all it sees)
max_cost                        ``null``        optional job budget in dollars, e.g. ``"12.50"``
heartbeat_interval_seconds      ``10.0``        how often the runner reports GPU time, 0.1-3600
max_retries                     ``2``           attempts after the first one on failure, 0-10
==============================  ==============  ==================================================

Pure: imports only the standard library, msgspec, ``domain.errors``, ``domain.ids`` and ``domain.money``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec

from domain.errors import Problem, Problems
from domain.ids import ID_PATTERN
from domain.money import parse_usd

__all__ = [
    "ConfigInvalid",
    "LoraConfig",
    "Objective",
    "Problem",
    "TrainingConfig",
    "parse_training_config",
    "training_config_to_dict",
]

Method = Literal["lora", "full"]
Objective = Literal["sft", "dpo"]
Scheduler = Literal["linear", "cosine", "constant", "constant_with_warmup"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
ModuleName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.\-]{1,100}$")]


class LoraConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Low-rank adapter settings (used when ``method`` is ``lora``).

    Attributes:
        r: rank of the update matrices (default 8).
        alpha: scaling numerator; the update is scaled by ``alpha / r`` (default 16).
        dropout: dropout applied to the adapter input (default 0.05).
        target_modules: names of the linear modules to adapt (default ``[q_proj, v_proj]``);
            ``[all-linear]`` adapts every linear layer but the output head.
    """

    r: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 8
    alpha: Annotated[float, msgspec.Meta(gt=0, le=65536)] = 16.0
    dropout: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.05
    target_modules: Annotated[list[ModuleName], msgspec.Meta(min_length=1, max_length=64)] = msgspec.field(
        default_factory=lambda: ["q_proj", "v_proj"]
    )


class TrainingConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A fine-tuning job's hyperparameters and limits; see the module docstring for the table."""

    method: Method = "lora"
    lora: LoraConfig = msgspec.field(default_factory=LoraConfig)
    objective: Objective = "sft"
    dpo_beta: Annotated[float, msgspec.Meta(gt=0, le=2)] = 0.1
    epochs: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 3
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 4
    gradient_accumulation_steps: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 1
    learning_rate: Annotated[float, msgspec.Meta(gt=0, le=1)] = 2e-4
    lr_scheduler: Scheduler = "cosine"
    warmup_ratio: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.0
    warmup_steps: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 0
    weight_decay: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0
    max_grad_norm: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 1.0
    max_seq_length: Annotated[int, msgspec.Meta(ge=16, le=131072)] = 1024
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] = 42
    validation_split: Annotated[float, msgspec.Meta(ge=0, le=0.5)] = 0.0
    validation_dataset_id: Annotated[str, msgspec.Meta(pattern=ID_PATTERN)] | None = None
    early_stopping_patience: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    early_stopping_threshold: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 0.0
    checkpoint_every_steps: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 100
    max_steps: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] | None = None
    precision: Precision = "auto"
    gradient_checkpointing: bool = False
    gpu_type: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")] = "cpu"
    gpu_count: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    max_cost: str | None = None
    heartbeat_interval_seconds: Annotated[float, msgspec.Meta(ge=0.1, le=3600)] = 10.0
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2

    @property
    def max_cost_usd_micros(self) -> int | None:
        """``max_cost`` in integer micro-dollars (None when there is no job budget)."""
        return None if self.max_cost is None else parse_usd(self.max_cost, where="max_cost")

    @property
    def validates(self) -> bool:
        """True when a validation loss is computed (a held-out split or a validation dataset)."""
        return self.validation_split > 0 or self.validation_dataset_id is not None

    @property
    def peft_target_modules(self) -> list[str] | str:
        """``lora.target_modules`` as peft expects it (the string ``all-linear`` or a list)."""
        mods = self.lora.target_modules
        return "all-linear" if mods == ["all-linear"] else list(mods)


class ConfigInvalid(Problems):
    """A training config with one or more problems; ``problems`` lists them all.

    ``where`` names every offending key (comma-separated, in the order found);
    ``message`` spells each one out.
    """

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems, subject="training config")


def parse_training_config(data: Mapping[str, Any] | TrainingConfig | None) -> TrainingConfig:
    """Check a config mapping (e.g. from ``yaml.safe_load``) whole and return it as a ``TrainingConfig``.

    ``None`` or ``{}`` gives every default. Raises ``ConfigInvalid`` (a ``ValidationFailed``)
    naming every unknown key, wrong type and out-of-range value at once.
    """
    if isinstance(data, TrainingConfig):
        return data
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigInvalid([Problem("config", f"must be a mapping of keys to values (got {_kind(data)})")])
    problems: list[Problem] = []
    raw = dict(data)
    max_cost = raw.pop("max_cost", None)
    values = _check_struct(TrainingConfig, raw, "", problems)
    if max_cost is not None:
        values["max_cost"] = _check_max_cost(max_cost, problems)
    if values.get("warmup_ratio", 0) and values.get("warmup_steps", 0):
        problems.append(Problem("warmup_steps", "set warmup_steps or warmup_ratio, not both"))
    _check_validation(values, problems)
    mods = data.get("lora", {}).get("target_modules") if isinstance(data.get("lora"), Mapping) else None
    if isinstance(mods, list) and "all-linear" in mods and len(mods) > 1:
        problems.append(Problem("lora.target_modules", "'all-linear' must be the only entry"))
    if problems:
        raise ConfigInvalid(problems)
    return msgspec.convert(values, TrainingConfig)


def training_config_to_dict(config: TrainingConfig) -> dict[str, Any]:
    """Every key with its value (defaults included), ready for YAML/JSON; parses back to an equal config."""
    return msgspec.to_builtins(config)


def _check_struct(
    cls: type[msgspec.Struct], data: Mapping[str, Any], prefix: str, problems: list[Problem]
) -> dict[str, Any]:
    """Check each key of ``data`` against ``cls``'s fields; collect problems, return the good values."""
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    good: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        field = fields.get(key) if isinstance(key, str) else None
        if field is None:
            problems.append(Problem(where, _unknown_key_message(key, sorted(fields))))
            continue
        sub = _struct_type(field.type)
        if sub is not None:
            if not isinstance(value, Mapping):
                problems.append(Problem(where, f"must be a mapping (got {_kind(value)})"))
                continue
            good[key] = _check_struct(sub, value, f"{where}.", problems)
            continue
        try:
            good[key] = msgspec.convert(value, field.type)
        except msgspec.ValidationError as exc:
            choices = _choices(field.type)
            if choices:
                problems.append(Problem(where, _choice_message(value, choices)))
                continue
            reason, index = _reason(exc)
            bad = value[index] if index is not None else value
            at = f"{where}[{index}]" if index is not None else where
            problems.append(Problem(at, f"{reason} (got {bad!r:.60}{_number_hint(reason, bad)})"))
    return good


def _check_validation(values: Mapping[str, Any], problems: list[Problem]) -> None:
    """One validation set at most; early stopping needs one, and its threshold needs early stopping."""
    split = values.get("validation_split", 0)
    dataset = values.get("validation_dataset_id")
    if split and dataset is not None:
        problems.append(
            Problem(
                "validation_dataset_id",
                "set validation_dataset_id or validation_split, not both (a validation dataset replaces the"
                " held-out split)",
            )
        )
    if values.get("early_stopping_patience") is not None and not split and dataset is None:
        problems.append(
            Problem(
                "early_stopping_patience",
                "early stopping needs a validation loss: set validation_dataset_id or validation_split > 0",
            )
        )
    if values.get("early_stopping_threshold", 0) and values.get("early_stopping_patience") is None:
        problems.append(
            Problem("early_stopping_threshold", "only used with early_stopping_patience: set that too")
        )


def _struct_type(tp: Any) -> type[msgspec.Struct] | None:
    return tp if isinstance(tp, type) and issubclass(tp, msgspec.Struct) else None


def _choices(tp: Any) -> tuple[str, ...]:
    """The allowed values of an enum-valued (``Literal``) field, in their documented order; else ()."""
    return tuple(get_args(tp)) if get_origin(tp) is Literal else ()


def _choice_message(value: Any, choices: tuple[str, ...]) -> str:
    """``must be one of a, b, c (got 'x'; did you mean 'a'?)``: every allowed value, and the closest one."""
    close = difflib.get_close_matches(value, choices, n=1) if isinstance(value, str) else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"must be one of {', '.join(choices)} (got {value!r:.60}{hint})"


def _reason(exc: msgspec.ValidationError) -> tuple[str, int | None]:
    """msgspec's message in plain words, and the list index it points at (if any)."""
    text, _, path = str(exc).partition(" - at `$")
    match = re.match(r"\[(\d+)\]", path)
    return text.replace("Expected `", "expected ").replace("`", ""), int(match.group(1)) if match else None


def _number_hint(reason: str, value: Any) -> str:
    """Why a number arrived as text: YAML 1.1 reads ``1e-4`` (no dot) as a string, and quotes make one."""
    if not (reason.startswith(("expected float", "expected int")) and isinstance(value, str)):
        return ""
    text = value.strip()
    exponent = re.fullmatch(r"([+-]?\d+)(\.\d*)?[eE]([+-]?\d+)", text)
    if exponent:  # YAML 1.1 floats need a dot and a signed exponent
        return f"; YAML reads {text} as text: write {exponent[1]}{exponent[2] or '.0'}e{int(exponent[3]):+d}"
    try:
        float(text)
    except ValueError:
        return ""
    return "; write the number without quotes"


def _unknown_key_message(key: Any, known: list[str]) -> str:
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return f"unknown key ({hint})"


def _check_max_cost(value: Any, problems: list[Problem]) -> str | None:
    """Normalise a dollar amount given as a string or number; at most 6 decimal places, > 0."""
    text = str(value).strip().removeprefix("$") if isinstance(value, (str, int, float)) else None
    if isinstance(value, bool) or text is None:
        problems.append(Problem("max_cost", f'must be a dollar amount like "12.50" (got {_kind(value)})'))
        return None
    try:
        amount = Decimal(text)
    except InvalidOperation:
        problems.append(Problem("max_cost", f'must be a dollar amount like "12.50" (got {value!r:.40})'))
        return None
    if not amount.is_finite() or amount <= 0 or amount > 10_000_000:
        problems.append(Problem("max_cost", f"must be > 0 and at most 10000000 dollars (got {value!r:.40})"))
        return None
    if amount != amount.quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP):
        problems.append(Problem("max_cost", f"has more than 6 decimal places (got {value!r:.40})"))
        return None
    return format(amount.normalize(), "f")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
