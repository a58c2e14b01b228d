"""The command-line clients ``tune``, ``model`` and ``dataset`` (cyclopts apps over the HTTP API).

Modules: ``tune`` / ``model`` / ``dataset`` (the apps and their ``main``), ``billing``
(billing, budget, cost), ``serve`` and ``admin`` / ``audit`` (operator tools that import
the server lazily), ``context`` (``--api-url`` and the per-run ``Context``), ``client``
(httpx), ``config`` (token file, caches), ``output`` (rich tables, JSON), ``weights``
(verified downloads), ``chat`` (torch, imported only by ``model chat``), ``errors``
(``CliError`` and exit codes). Importing this package imports nothing.
"""
