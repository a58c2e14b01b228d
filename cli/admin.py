"""``tune admin``: operator tools on the bucket (provisional)."""

from __future__ import annotations

from cyclopts import App, Parameter

admin_app = App(name="admin", help="Operator tools.", default_parameter=Parameter(negative=()))
