"""API key on every path of vLLM's OpenAI server: an ASGI middleware for `--middleware`.

vLLM's own --api-key / VLLM_API_KEY guards only /v1, /v2, /inference and /cohere; /invocations,
/tokenize, /detokenize, /abort_requests, /metrics, /version (and with VLLM_SERVER_DEV_MODE /pause,
/sleep, /reset_prefix_cache, ...) stay open to anyone who reaches the port. This middleware,
loaded with

    --middleware vllm_fleet_auth.APIKeyMiddleware

(vllm-entrypoint adds that itself whenever VLLM_API_KEY is set), answers 401 to every HTTP or
WebSocket request that does not carry `Authorization: Bearer <VLLM_API_KEY>`, except:
  - the paths in VLLM_AUTH_OPEN_PATHS (space separated, exact match; default "/health /ping"):
    health checks of Docker, load balancers and SageMaker carry no key;
  - OPTIONS requests, as vLLM's own check does: a browser's CORS preflight never carries the key,
    and vLLM's CORS middleware (inside this one) answers it without reaching any endpoint.
Without VLLM_API_KEY (or with it empty) it passes everything through: the seed's open server.

vLLM 0.32/0.33 load `--middleware module.attr` in
vllm/entrypoints/serve/middleware/register.py: a class is `app.add_middleware(cls)`ed (Starlette
then calls cls(app)), a coroutine function becomes `@app.middleware("http")`. A class is used here:
a pure ASGI middleware also sees WebSocket connections (the realtime API), which an "http"
function middleware never does. It is the last middleware added, so the outermost: it runs before
vLLM's own ones. Only the standard library is imported, so it loads before fastapi/starlette and
can be tested without them.

The key is read once, from the environment, when the app is built; an `--api-key` argument is not
seen (and would show in the process list: the image passes the key only as VLLM_API_KEY).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets

__all__ = ["APIKeyMiddleware"]

DEFAULT_OPEN_PATHS = "/health /ping"

# OpenAI's own answer to a missing or wrong key, so OpenAI clients raise AuthenticationError
_BODY = json.dumps(
    {
        "error": {
            "message": "Missing or invalid API key: send it as 'Authorization: Bearer <key>'.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
).encode()


def _digest(value: str | bytes) -> bytes:
    # compare fixed-length digests: compare_digest on the raw strings would reveal the key's length
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    return hashlib.sha256(value).digest()


class APIKeyMiddleware:
    """Pure ASGI middleware: Bearer VLLM_API_KEY on every path but the open ones."""

    def __init__(self, app, api_key: str | None = None, open_paths: str | None = None) -> None:
        self.app = app
        key = os.environ.get("VLLM_API_KEY", "") if api_key is None else api_key
        self._key_digest = _digest(key) if key else None
        if open_paths is None:
            open_paths = os.environ.get("VLLM_AUTH_OPEN_PATHS", DEFAULT_OPEN_PATHS)
        self.open_paths = frozenset(open_paths.split())

    def _authorized(self, scope) -> bool:
        for name, value in scope.get("headers") or ():
            if name.lower() == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    return False
                return secrets.compare_digest(_digest(token.strip()), self._key_digest)
        return False

    async def __call__(self, scope, receive, send) -> None:
        if self._key_digest is None or scope["type"] not in ("http", "websocket"):
            # no key configured, or "lifespan": nothing to guard
            await self.app(scope, receive, send)
            return
        # Starlette routes on the path with --root-path removed, so compare the same path
        path = scope.get("path", "")
        root_path = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path):] or "/"
        if path in self.open_paths or scope.get("method") == "OPTIONS" or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        await self._deny(scope, send)

    @staticmethod
    async def _deny(scope, send) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(_BODY)).encode()),
            (b"www-authenticate", b'Bearer realm="vllm"'),
        ]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": _BODY})
        elif "websocket.http.response" in scope.get("extensions", {}):
            # the server can send an HTTP answer instead of the handshake: the same 401
            await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": _BODY})
        else:
            # closing before accepting makes the server refuse the handshake (HTTP 403)
            await send({"type": "websocket.close", "code": 1008})
