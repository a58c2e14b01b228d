"""The context every role is handed (``runtime.context.Runtime``) and the settings it is built from
(``runtime.settings.Settings``).

Below ``api/`` and ``runners/``, above ``projections/`` and ``storage/`` (docs/CONTRACTS.md). Importing
this package imports nothing: ``runtime.settings`` stays cheap for entry points such as the job runner.
"""
