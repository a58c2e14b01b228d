"""API keys: create (the key shown once), list and revoke the caller's keys (``domain.api_keys``)."""

from __future__ import annotations

from api import schemas
from api.services.base import UserService
from domain.api_keys import ApiKeyInfo
from projections.render import iso

__all__ = ["KeyService"]


def _row(info: ApiKeyInfo) -> schemas.ApiKey:
    return schemas.ApiKey(
        key_id=info.key_id,
        name=info.name,
        status=info.status,
        created_at=iso(info.created_at),
        revoked_at=iso(info.revoked_at),
    )


class KeyService(UserService):
    """The caller's API keys (read from their aggregate, so a revocation counts at once)."""

    def create(self, name: str) -> schemas.ApiKeyCreated:
        info, key = self.app.create_api_key(name.strip(), self.rt.clock())
        row = _row(info)
        return schemas.ApiKeyCreated(
            key_id=row.key_id, name=row.name, status=row.status, created_at=row.created_at, key=key
        )

    def list(self) -> schemas.ApiKeyList:
        return schemas.ApiKeyList(keys=[_row(info) for info in self.app.list_api_keys()])

    def revoke(self, key_id: str) -> schemas.ApiKey:
        return _row(self.app.revoke_api_key(key_id, self.rt.clock()))
