"""The HTTP API (Litestar): ``api.app.create_app(settings, runtime=)``; ``roles.embedded`` serves it.

``api.schemas`` holds every request and response shape and imports nothing
from the server side, so the CLI imports it alone; importing this package
imports nothing else.
"""
