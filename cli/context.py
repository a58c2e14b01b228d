"""What the three apps share: the ``--api-url`` meta option and the per-run ``Context``.

Each app is a cyclopts ``App`` whose meta launcher reads ``--api-url``
(``$TUNE_API_URL``, default ``http://127.0.0.1:8600``) wherever it appears,
then calls the command with a ``Context`` injected into its ``ctx``
parameter (declared ``parse=False``, so it never shows in ``--help``).
The client and credentials are built only when a command asks for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from cyclopts import App, Parameter

from cli.config import DEFAULT_API_URL, Credentials, load_credentials, normalize_url
from cli.errors import CliError, run

if TYPE_CHECKING:
    from cli.client import ApiClient

__all__ = ["Context", "Ctx", "JsonFlag", "build_app", "console_script"]


class Context:
    """The API URL of this run, and the client and login built from it on demand."""

    def __init__(self, api_url: str) -> None:
        self.api_url = normalize_url(api_url)
        self._client: ApiClient | None = None
        self._creds: Credentials | None = None

    @property
    def credentials(self) -> Credentials:
        """The stored login for this server; CliError if there is none or it expired."""
        if self._creds is None:
            creds = load_credentials(self.api_url)
            if creds is None:
                raise CliError(f"not logged in to {self.api_url}; run `tune login`")
            if creds.expired():
                raise CliError(
                    f"the session on {self.api_url} expired at {creds.expires_at}; run `tune login`"
                )
            self._creds = creds
        return self._creds

    @property
    def user_id(self) -> str:
        return self.credentials.user_id

    @property
    def client(self) -> ApiClient:
        """A client that sends the stored token (login must exist)."""
        if self._client is None:
            from cli.client import ApiClient

            self._client = ApiClient(self.api_url, self.credentials.token)
        return self._client

    def anonymous_client(self) -> ApiClient:
        from cli.client import ApiClient

        return ApiClient(self.api_url)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


Ctx = Annotated[Context, Parameter(parse=False)]
JsonFlag = Annotated[bool, Parameter(name="--json", help="Print JSON instead of a table.")]


def build_app(name: str, help: str) -> App:
    """A cyclopts App with the shared ``--api-url`` meta launcher."""
    app = App(
        name=name,
        help=help,
        default_parameter=Parameter(negative=()),
        suppress_keyboard_interrupt=False,
        version_flags=(),
        help_format="plaintext",
    )

    app.meta.suppress_keyboard_interrupt = False  # run() reports Ctrl-C as one line

    @app.meta.default
    def _launcher(
        *tokens: Annotated[str, Parameter(show=False, allow_leading_hyphen=True)],
        api_url: Annotated[
            str, Parameter(env_var="TUNE_API_URL", help="URL of the tune API server.")
        ] = DEFAULT_API_URL,
    ) -> Any:
        command, bound, ignored = app.parse_args(tokens, print_error=False, exit_on_error=False)
        ctx = Context(api_url)
        try:
            return command(*bound.args, **bound.kwargs, **{k: ctx for k in ignored})
        finally:
            ctx.close()

    return app


def console_script(app: App, prog: str) -> Callable[[list[str] | None], None]:
    """The ``main`` of console script ``prog`` (``pyproject.toml``): run ``app``'s meta launcher and
    exit with its status."""

    def main(tokens: list[str] | None = None) -> None:
        import os
        import sys

        status = run(app.meta, tokens, prog=prog)
        try:
            sys.stdout.flush()
        except BrokenPipeError:  # the reader went away (`tune list | head`): no noise at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(status)

    main.__doc__ = f"Console script ``{prog}``."
    return main
