"""``model``: list, show, download, chat with and delete fine-tuned models."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

from cyclopts import Parameter

from cli.context import Ctx, JsonFlag, build_app, console_script
from cli.errors import CliError
from cli.pages import AfterFlag, AllFlag, LimitFlag

__all__ = ["app", "main"]

app = build_app("model", "Your fine-tuned models: list, download, chat, delete.")

_COLUMNS = ("model_id", "base_model", "kind", "job_id", "status", "size_bytes", "created_at")


@app.command(name="list")
def list_models(
    *,
    limit: LimitFlag = 20,
    every: AllFlag = False,
    after: AfterFlag = None,
    json: JsonFlag = False,
    ctx: Ctx,
) -> None:
    """List your models, newest first: the latest --limit, or --all."""
    from api.schemas import ModelList
    from cli.pages import show_rows

    path = f"/models/{ctx.user_id}/list"
    show_rows(ctx.client, path, ModelList, "models", _COLUMNS, limit=limit, every=every, after=after,
              json=json)


@app.command
def show(*, model_id: str, json: JsonFlag = False, ctx: Ctx) -> None:
    """Show one model: base model, kind, size, training metrics."""
    from api.schemas import Model
    from cli.output import print_document, print_json

    reply = ctx.client.get(f"/models/{model_id}", type=Model)
    print_json(reply) if json else print_document(reply, title=model_id)
    gate = reply.stop_gate
    if not json and gate is not None and not gate.get("stops", True):
        print(
            f"warning: this model never stops: its answer did not end within {gate.get('max_new_tokens')} "
            "tokens before it was published (check that the training answers end with the end marker)",
            file=sys.stderr,
        )


@app.command
def download(
    *,
    model_id: str,
    output: Annotated[Path | None, Parameter(help="Where to put it (default ./<model-id>).")] = None,
    archive: Annotated[bool, Parameter(help="Save the .tar as sent instead of unpacking it.")] = False,
    with_base: Annotated[bool, Parameter(help="Include the base model (folder base/).")] = False,
    merged: Annotated[
        bool,
        Parameter(help="Merge the adapter into its base: safetensors that load with transformers alone."),
    ] = False,
    ctx: Ctx,
) -> None:
    """Download a model's weights (progress bar; size and sha256 verified against `model show`)."""
    from api.schemas import Model
    from cli.weights import download_archive, fetch_weights, merge_weights

    if merged and archive:
        raise CliError("--merged writes a folder; it cannot be combined with --archive", where="--merged")
    dest = output or Path(f"{model_id}.tar" if archive else model_id)
    if dest.exists() and (archive or not dest.is_dir() or any(dest.iterdir())):
        raise CliError(f"{dest} already exists", where="--output")
    meta = ctx.client.get(f"/models/{model_id}", type=Model)
    base = with_base or merged
    expected = None if base else meta.sha256  # `model show`'s digest is that of the plain download
    if archive:
        digest = download_archive(ctx.client, model_id, dest, with_base=base, expected_sha256=expected)
        print(f"saved {dest} (sha256 {digest})")
    elif merged:
        merge_weights(ctx.client, model_id, dest)
        print(f"saved {model_id} merged into its base in {dest}/ (loads with transformers alone)")
    else:
        fetch_weights(ctx.client, model_id, dest, with_base=base, expected_sha256=expected)
        print(f"saved {model_id} in {dest}/ (sha256 verified)")


@app.command
def chat(
    *,
    model_id: str,
    prompt: Annotated[str | None, Parameter(help="Ask once, print the answer and exit.")] = None,
    system: Annotated[str | None, Parameter(help="System message for the conversation.")] = None,
    temperature: Annotated[float, Parameter(help="0 for greedy decoding.")] = 0.7,
    max_new_tokens: int = 256,
    ctx: Ctx,
) -> int:
    """Chat with a model (or a base model) on the server, through its OpenAI-compatible endpoint."""
    if not 0 <= temperature <= 2:
        raise CliError("temperature must be between 0 and 2", where="--temperature")
    if max_new_tokens < 1:
        raise CliError("max-new-tokens must be >= 1", where="--max-new-tokens")
    from cli.chat import ChatSettings, run_chat

    settings = ChatSettings(system=system, temperature=temperature, max_new_tokens=max_new_tokens)
    return run_chat(ctx.client, model_id, settings=settings, prompt=prompt)


@app.command
def delete(*, model_id: str, ctx: Ctx) -> None:
    """Delete a model and its weights."""
    from api.schemas import Deleted

    ctx.client.delete(f"/models/{model_id}", type=Deleted)
    print(f"deleted {model_id}")


main = console_script(app, "model")
