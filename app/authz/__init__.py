"""Authorization layers: small checks behind one Protocol, composed per route."""

from app.authz.base import AuthContext, AuthzMiddleware, Layer, auth_context

__all__ = ["AuthContext", "AuthzMiddleware", "Layer", "auth_context"]
