"""``tune admin base-model add | list``: the platform's base-model catalogue.

``add`` registers a model folder on this machine (config, tokenizer and weights are checked
first); the running ``tune serve`` copies it into the bucket's ``base-models/`` in the background
once it sees the catalogue grow (``runners.base_model_prep``), so users' first jobs and chats on it
copy it from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from cyclopts import App, Parameter

from cli.admin import Store, domain_errors, open_runtime
from cli.context import JsonFlag

__all__ = ["base_model_app"]

base_model_app = App(
    name="base-model",
    alias="base-models",
    help="The base models users may fine-tune.",
    default_parameter=Parameter(negative=()),
)


@base_model_app.command
def add(
    *,
    name: Annotated[str, Parameter(help="The name users pass as --model (letters, digits, '-', '_').")],
    folder: Annotated[Path, Parameter(help="A local folder with config.json, a tokenizer and weights.")],
    store: Store = Store(),  # noqa: B008
    json: JsonFlag = False,
) -> None:
    """Add a base model from a local folder."""
    from cli.admin import _print
    from domain.ids import check_id
    from runners.base_models.resolve import check_model_folder
    from storage.layout import PLATFORM

    with domain_errors():
        check_id(name, kind="--name")
        info = check_model_folder(folder.expanduser().resolve())
        rt = open_runtime(store)
        view = rt.platform.add_base_model(
            name, "local", info.path, rt.clock(), chat_template=info.has_chat_template
        )
    rt.projector.catch_up(PLATFORM)
    _print(view, json, title=f"added base model {name}")


@base_model_app.command(name="list")
def list_base_models(*, store: Store = Store(), json: JsonFlag = False) -> None:  # noqa: B008
    """Every base model in the catalogue."""
    from cli.output import Column, print_json, print_table

    rt = open_runtime(store)
    with domain_errors():
        views = rt.platform.base_models()
    if json:
        print_json(views)
        return
    cols = [Column(k) for k in ("name", "source_kind", "source", "chat_template")]
    print_table(views, cols, empty="no base models")
