"""``POST /auth/login``: email and password -> a bearer token with an expiry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.middleware.rate_limit import get_remote_address
from litestar.params import JSONBody

from api.auth import token_extras
from api.errors import documented
from api.openapi import PublicOperation
from api.schemas import LoginRequest, LoginResponse
from api.services import AccountService
from projections.render import iso
from runtime.context import Runtime


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]

    @post(
        "/login",
        operation_id="login",
        responses=documented(),
        exclude_from_auth=True,
        operation_class=PublicOperation,
        status_code=200,
        sync_to_thread=True,
    )
    def login(
        self,
        data: JSONBody[LoginRequest],
        accounts: NamedDependency[AccountService],
        runtime: NamedDependency[Runtime],
        state: State,
        request: Request[Any, Any, Any],
    ) -> LoginResponse:
        """Exchange an email and password for a bearer token (send it as ``Authorization: Bearer ...``).

        Every refusal is the same 401; after repeated failures for an account or from an address,
        429 with ``Retry-After`` until the backoff ends.
        """
        caller = accounts.login(data.email, data.password, get_remote_address(request))
        ttl = timedelta(seconds=runtime.settings.token_ttl_s)
        expires_at = (runtime.clock() + ttl).replace(microsecond=0)
        token = state.jwt_auth.create_token(
            identifier=caller.user_id,
            token_expiration=ttl,
            token_extras=token_extras(caller),
        )
        return LoginResponse(
            token=token,
            user_id=caller.user_id,
            email=caller.email,
            role=caller.role,
            expires_at=iso(expires_at) or "",
        )
