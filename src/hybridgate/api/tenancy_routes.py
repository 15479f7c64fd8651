"""The admin HTTP API (``admin`` scope) and /readyz with the authentication status.

    GET  /admin/tenants              list tenants
    POST /admin/tenants              {"name": ...}
    GET  /admin/keys[?tenant=NAME]   list keys (ids, never secrets)
    POST /admin/keys                 {"tenant": ..., "scopes": [...], ...}: the key, shown once
    POST /admin/keys/revoke          {"id": "hg_..."}: takes effect at once in this process
    GET  /admin/budgets              each budget's spend in its current period
    POST /admin/budgets              a budget (as in tenancy.budgets[]): created or replaced
    POST /admin/budgets/delete       {"name": ...}

Every admin action is written to the audit trail with the acting key's id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hybridgate.api.asgi import Handler, JSONResponse, Request, Response
from hybridgate.api.auth import ClientAuth
from hybridgate.api.http import read_json
from hybridgate.config.tenancy import BudgetConfig
from hybridgate.errors import InvalidRequest
from hybridgate.gateway import Gateway
from hybridgate.tenancy.admin import Admin, BudgetName, KeySpec, RevokeSpec, TenantSpec, parse
from hybridgate.tenancy.service import Tenancy

_MAX_ADMIN_BODY = 64 * 1024


class TenancyRoutes:
    def __init__(self, gateway: Gateway, tenancy: Tenancy, auth: ClientAuth) -> None:
        self.gateway = gateway
        self.tenancy = tenancy
        self.auth = auth
        audit = tenancy.audit
        sink = (lambda r: audit.record(r.pop("event"), **r)) if audit is not None else None
        store = tenancy.store
        configured = frozenset(b.name for b in gateway.config.tenancy.budgets)
        self.admin = Admin(store.sync, sink, gateway.clock.wall, configured) if store is not None else None

    def admin_routes(self, route: Callable[..., Any]) -> dict[str, dict[str, Any]]:
        def admin(handler: Handler) -> Any:
            return route(handler, "openai", True, "admin")

        return {
            "/admin/tenants": {"GET": admin(self.tenants), "POST": admin(self.create_tenant)},
            "/admin/keys": {"GET": admin(self.keys), "POST": admin(self.create_key)},
            "/admin/keys/revoke": {"POST": admin(self.revoke_key)},
            "/admin/budgets": {"GET": admin(self.budgets), "POST": admin(self.set_budget)},
            "/admin/budgets/delete": {"POST": admin(self.delete_budget)},
        }

    async def readyz(self, request: Request) -> Response:
        ready, detail = self.gateway.readiness()
        return JSONResponse({**detail, "auth": self.auth.status()}, status=200 if ready else 503)

    def _admin(self) -> Admin:
        if self.admin is None:
            raise InvalidRequest("no key store is configured (tenancy.store)")
        return self.admin

    async def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        store = self.tenancy.store
        assert store is not None
        return await store.call(fn, *args)

    async def tenants(self, request: Request) -> Response:
        admin = self._admin()
        return JSONResponse({"data": await self._call(admin.store.tenants)})

    async def create_tenant(self, request: Request) -> Response:
        admin = self._admin()
        spec = parse(TenantSpec, await read_json(request, _MAX_ADMIN_BODY))
        return JSONResponse(await self._call(admin.create_tenant, spec, request.identity.key_id), status=201)

    async def keys(self, request: Request) -> Response:
        admin = self._admin()
        records = await self._call(admin.store.keys, request.query.get("tenant"))
        return JSONResponse({"data": [r.public() for r in records]})

    async def create_key(self, request: Request) -> Response:
        admin = self._admin()
        spec = parse(KeySpec, await read_json(request, _MAX_ADMIN_BODY))
        record, token = await self._call(admin.create_key, spec, request.identity.key_id)
        return JSONResponse({**record.public(), "key": token}, status=201)

    async def revoke_key(self, request: Request) -> Response:
        admin = self._admin()
        spec = parse(RevokeSpec, await read_json(request, _MAX_ADMIN_BODY))
        record = await self._call(admin.revoke_key, spec, request.identity.key_id)
        self.auth.forget(record.key_id)
        return JSONResponse(record.public())

    async def set_budget(self, request: Request) -> Response:
        admin = self._admin()
        spec = parse(BudgetConfig, await read_json(request, _MAX_ADMIN_BODY))
        new = await self._call(admin.set_budget, spec, request.identity.key_id)
        await self.tenancy.reload_budgets()  # in force for the next request
        return JSONResponse(spec.model_dump(), status=201 if new else 200)

    async def delete_budget(self, request: Request) -> Response:
        admin = self._admin()
        spec = parse(BudgetName, await read_json(request, _MAX_ADMIN_BODY))
        await self._call(admin.delete_budget, spec, request.identity.key_id)
        await self.tenancy.reload_budgets()
        return JSONResponse({"name": spec.name, "deleted": True})

    async def budgets(self, request: Request) -> Response:
        ledger = self.tenancy.budgets
        return JSONResponse({"data": ledger.describe() if ledger is not None else []})
