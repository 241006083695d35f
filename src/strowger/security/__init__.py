"""API security: who may call what (docs/security.md).

* :func:`install_security` guards every route of a FastAPI app (bearer JWT or
  ``X-API-Key``; scope derived from path and method) and enforces input limits.
* :func:`current_principal` / :data:`CurrentPrincipal` give handlers the caller.
* :class:`OperatorAudit` records operator actions in the caller's transaction.
* :func:`ensure_admin_credentials` creates the embedded default's admin key.
* :func:`install_redaction` keeps credentials out of the logs.
"""

from __future__ import annotations

from strowger.security.audit import AUDIT_TABLES, AuditEntry, OperatorAudit, Outcome
from strowger.security.auth import (
    Authenticator,
    Forbidden,
    Principal,
    Unauthenticated,
    generate_api_key,
    hash_api_key,
)
from strowger.security.credentials import ensure_admin_credentials
from strowger.security.limits import InputLimitMiddleware, InputLimits
from strowger.security.middleware import (
    AuthMiddleware,
    CurrentPrincipal,
    current_principal,
    install_security,
    require_scope,
    route_path,
)
from strowger.security.redact import RedactingFilter, install_redaction, redact
from strowger.security.routecheck import assert_all_routes_protected, unprotected_operations
from strowger.security.scopes import RouteTable, Rule
from strowger.security.settings import ApiKeyEntry, SecuritySettings, load_security_settings

__all__ = [
    "AUDIT_TABLES",
    "ApiKeyEntry",
    "AuditEntry",
    "AuthMiddleware",
    "Authenticator",
    "CurrentPrincipal",
    "Forbidden",
    "InputLimitMiddleware",
    "InputLimits",
    "OperatorAudit",
    "Outcome",
    "Principal",
    "RedactingFilter",
    "RouteTable",
    "Rule",
    "SecuritySettings",
    "Unauthenticated",
    "assert_all_routes_protected",
    "current_principal",
    "ensure_admin_credentials",
    "generate_api_key",
    "hash_api_key",
    "install_redaction",
    "install_security",
    "load_security_settings",
    "redact",
    "require_scope",
    "route_path",
    "unprotected_operations",
]
