"""Server interceptors, applied to every service (health and reflection included):

- `DecodeGuard`: a body that does not parse (truncated, bad UTF-8 in a string field) is
  INVALID_ARGUMENT naming the message type, where grpc would answer UNKNOWN;
- `BearerAuth`: `authorization: Bearer <token>` metadata checked in constant time against the
  configured tokens (health exempt, so load balancers need no secret); UNAUTHENTICATED otherwise.
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc

HEALTH_PREFIX = "/grpc.health.v1.Health/"


class _Undecodable:
    """What a guarded deserializer returns instead of raising."""

    def __init__(self, type_name: str, error: BaseException) -> None:
        self.type_name, self.error = type_name, error

    def message(self) -> str:
        detail = str(self.error)[:120] or type(self.error).__name__
        return f"request body is not a valid {self.type_name}: {detail}"


def _guarded(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    owner = getattr(deserializer, "__self__", None)
    type_name = getattr(owner, "__name__", "request message")

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError, UnicodeDecodeError, ...
            return _Undecodable(type_name, exc)
    return parse


async def _reject(context: grpc.aio.ServicerContext, request: _Undecodable) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message())


def _unary_request(behavior: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps a unary-request behavior, keeping its shape (coroutine or async generator)."""
    if inspect.isasyncgenfunction(behavior):
        async def gen(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, _Undecodable):
                await _reject(context, request)
            async for response in behavior(request, context):
                yield response
        return gen

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            await _reject(context, request)
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result
    return call


def _stream_request(behavior: Callable[..., Any]) -> Callable[..., Any]:
    def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
                ) -> AsyncIterator[Any]:
        async def gen() -> AsyncIterator[Any]:
            async for request in requests:
                if isinstance(request, _Undecodable):
                    await _reject(context, request)
                yield request
        return gen()

    if inspect.isasyncgenfunction(behavior):
        async def gen(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
                      ) -> AsyncIterator[Any]:
            async for response in behavior(checked(requests, context), context):
                yield response
        return gen

    async def call(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        result = behavior(checked(requests, context), context)
        return await result if inspect.isawaitable(result) else result
    return call


class DecodeGuard(grpc.aio.ServerInterceptor):
    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
            details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        changes: dict[str, Any] = {
            "request_deserializer": _guarded(handler.request_deserializer)}
        for kind, wrap in (("unary_unary", _unary_request), ("unary_stream", _unary_request),
                           ("stream_unary", _stream_request),
                           ("stream_stream", _stream_request)):
            behavior = getattr(handler, kind)
            if behavior is not None:
                changes[kind] = wrap(behavior)
        return handler._replace(**changes)


def _deny(message: str) -> grpc.RpcMethodHandler:
    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
    return grpc.unary_unary_rpc_method_handler(deny)


class BearerAuth(grpc.aio.ServerInterceptor):
    """Tokens are compared with hmac.compare_digest; none of them is ever echoed or logged."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = [t.encode() for t in tokens if t]
        if not self._tokens:
            raise ValueError("BearerAuth needs at least one token")

    def _allowed(self, metadata: Any) -> str | None:
        values = [v for k, v in (metadata or ()) if k == "authorization"]
        if not values:
            return "missing 'authorization: Bearer <token>' metadata"
        value = values[0]
        raw = value.encode() if isinstance(value, str) else bytes(value)
        scheme, _, token = raw.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return "authorization metadata must be 'Bearer <token>'"
        if not any(hmac.compare_digest(token.strip(), t) for t in self._tokens):
            return "invalid bearer token"
        return None

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
            details: grpc.HandlerCallDetails) -> Any:
        if details.method.startswith(HEALTH_PREFIX):
            return await continuation(details)
        problem = self._allowed(details.invocation_metadata)
        if problem is not None:
            return _deny(problem)
        return await continuation(details)
