"""How the platform's processes are put together: one small entry point per role.

- ``roles.embedded``: ``tune serve``, every role in one process on the embedded defaults;
- ``roles.ledger``: ``python -m roles.ledger``, the ledger on its own (production);
- ``roles.http``: serving an ASGI app with granian; ``roles.bootstrap``: a new home's first start.

Each entry point reads ``runtime.Settings`` once, builds a ``runtime.Runtime`` and hands its
parts to ``api`` and ``runners``, which never import each other (docs/CONTRACTS.md).
"""
