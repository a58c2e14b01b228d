"""``POST /auth/login``: email and password -> a bearer token with an expiry."""

from __future__ import annotations

from datetime import timedelta

from litestar import Controller, post
from litestar.datastructures import State
from litestar.di import NamedDependency

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
        responses=documented(403),
        exclude_from_auth=True,
        operation_class=PublicOperation,
        status_code=200,
        sync_to_thread=True,
    )
    def login(
        self,
        data: LoginRequest,
        accounts: NamedDependency[AccountService],
        runtime: NamedDependency[Runtime],
        state: State,
    ) -> LoginResponse:
        """Exchange an email and password for a bearer token (send it as ``Authorization: Bearer ...``)."""
        caller = accounts.login(data.email, data.password)
        ttl = timedelta(seconds=runtime.settings.token_ttl_s)
        expires_at = (runtime.clock() + ttl).replace(microsecond=0)
        token = state.jwt_auth.create_token(
            identifier=caller.user_id,
            token_expiration=ttl,
            token_extras={"role": caller.role, "email": caller.email},
        )
        return LoginResponse(
            token=token,
            user_id=caller.user_id,
            email=caller.email,
            role=caller.role,
            expires_at=iso(expires_at) or "",
        )
