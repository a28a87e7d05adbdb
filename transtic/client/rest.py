"""REST clients of the analytics service, sync (``AnalyticsClient``) and async
(``AsyncAnalyticsClient``), with typed answers, API keys, TLS and retries.

Both build requests and read answers with the same functions below; only the sending
loop differs, one blocking and one awaiting.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from services.analytics.schemas import (
    AnalyzeResponse,
    FramePage,
    LoadResult,
    ModelsInfo,
    RepositoryIndex,
    StoredFrame,
    StreamList,
    UnloadResult,
)
from transtic.bitstream.container import MAGIC
from transtic.client.errors import ClientError, RetryPolicy, parse_retry_after

M = TypeVar("M", bound=BaseModel)
BITSTREAM_TYPE = "application/x-transtic"
RETRY_STATUSES = frozenset({429, 503})
Verify = bool | str | Path | ssl.SSLContext


@dataclass
class _Call:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _verify(verify: Verify) -> bool | ssl.SSLContext:
    """A CA bundle path becomes a context trusting it (httpx wants a context)."""
    if isinstance(verify, str | Path):
        return ssl.create_default_context(cafile=str(verify))
    return verify


def _analyze_call(
    data: bytes, content_type: str | None, task: str | None, quality: int | None, image: bool
) -> _Call:
    if content_type is None:
        content_type = BITSTREAM_TYPE if data[: len(MAGIC)] == MAGIC else "application/octet-stream"
    params: dict[str, Any] = {"return_image": image}
    if task:
        params["task"] = task
    if quality is not None:
        params["quality"] = quality
    return _Call("POST", "/v1/analyze", params, data, {"content-type": content_type})


def _frames_call(stream_id: str, since: int, limit: int) -> _Call:
    return _Call("GET", f"/v1/streams/{stream_id}/frames", {"since": since, "limit": limit})


def _repository_call(ready: bool) -> _Call:
    return _Call("GET", "/v1/repository/models", {"ready": ready})


def _load_call(name: str) -> _Call:
    return _Call("POST", f"/v1/repository/models/{name}/load")


def _unload_call(name: str, version: str | None, force: bool) -> _Call:
    params: dict[str, Any] = {"force": force}
    if version:
        params["version"] = version
    return _Call("POST", f"/v1/repository/models/{name}/unload", params)


def _error(response: httpx.Response) -> ClientError:
    """The service's problem details (or, from something in between, the bare text)."""
    try:
        body = response.json()
        code, message = str(body["code"]), str(body["detail"])
    except (ValueError, KeyError, TypeError):
        code, message = f"HTTP_{response.status_code}", response.text[:500]
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return ClientError(response.status_code, code, message, retry_after_s=retry_after)


def _parse(response: httpx.Response, model: type[M]) -> M:
    if response.is_error:
        raise _error(response)
    return model.model_validate(response.json())


def _http_options(
    base_url: str,
    api_key: str | None,
    verify: Verify,
    cert: tuple[str, str] | None,
    timeout_s: float,
) -> dict[str, Any]:
    """What the sync and async clients give httpx: one place for auth and TLS."""
    return {
        "base_url": base_url,
        "headers": _auth_headers(api_key),
        "verify": _verify(verify),
        "cert": cert,
        "timeout": timeout_s,
    }


class AnalyticsClient:
    """``with AnalyticsClient("https://host:8080", api_key=..., verify="ca.pem") as c:``"""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        verify: Verify = True,
        cert: tuple[str, str] | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(**_http_options(base_url, api_key, verify, cert, timeout_s))

    def __enter__(self) -> AnalyticsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> httpx.Response:
        for attempt in range(self.retry.attempts):
            response = self._http.request(
                call.method, call.path, params=call.params, content=call.content,
                headers=call.headers,
            )  # fmt: skip
            if response.status_code not in RETRY_STATUSES or attempt + 1 == self.retry.attempts:
                return response
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            time.sleep(self.retry.delay(attempt, retry_after))
        raise AssertionError("unreachable: the last attempt returns")

    def analyze(
        self,
        data: bytes,
        *,
        content_type: str | None = None,
        task: str | None = None,
        quality: int | None = None,
        return_image: bool = False,
    ) -> AnalyzeResponse:
        """Analyse an image file or a TransTIC bitstream (told apart by its magic)."""
        call = _analyze_call(data, content_type, task, quality, return_image)
        return _parse(self._send(call), AnalyzeResponse)

    def streams(self, limit: int = 100) -> StreamList:
        return _parse(self._send(_Call("GET", "/v1/streams", {"limit": limit})), StreamList)

    def frames(self, stream_id: str, since: int = -1, limit: int = 100) -> FramePage:
        return _parse(self._send(_frames_call(stream_id, since, limit)), FramePage)

    def iter_frames(self, stream_id: str, since: int = -1) -> Iterator[StoredFrame]:
        """Every stored frame after ``since``, following the pages to the end."""
        while True:
            page = self.frames(stream_id, since, 1000)
            yield from page.frames
            if not page.frames:
                return
            since = page.next_since

    def models(self) -> ModelsInfo:
        return _parse(self._send(_Call("GET", "/v1/models")), ModelsInfo)

    def repository(self, *, ready: bool = False) -> RepositoryIndex:
        """Model control: every model, loaded or loadable by name."""
        return _parse(self._send(_repository_call(ready)), RepositoryIndex)

    def load_model(self, name: str) -> LoadResult:
        return _parse(self._send(_load_call(name)), LoadResult)

    def unload_model(
        self, name: str, *, version: str | None = None, force: bool = False
    ) -> UnloadResult:
        return _parse(self._send(_unload_call(name, version, force)), UnloadResult)

    def ready(self) -> bool:
        return self._send(_Call("GET", "/readyz")).status_code == 200

    def metrics(self) -> str:
        response = self._send(_Call("GET", "/metrics"))
        if response.is_error:
            raise _error(response)
        return response.text


class AsyncAnalyticsClient:
    """The same calls as ``AnalyticsClient``, awaited: ``async with AsyncAnalyticsClient(...)``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        verify: Verify = True,
        cert: tuple[str, str] | None = None,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(**_http_options(base_url, api_key, verify, cert, timeout_s))

    async def __aenter__(self) -> AsyncAnalyticsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> httpx.Response:
        for attempt in range(self.retry.attempts):
            response = await self._http.request(
                call.method, call.path, params=call.params, content=call.content,
                headers=call.headers,
            )  # fmt: skip
            if response.status_code not in RETRY_STATUSES or attempt + 1 == self.retry.attempts:
                return response
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            await asyncio.sleep(self.retry.delay(attempt, retry_after))
        raise AssertionError("unreachable: the last attempt returns")

    async def analyze(
        self,
        data: bytes,
        *,
        content_type: str | None = None,
        task: str | None = None,
        quality: int | None = None,
        return_image: bool = False,
    ) -> AnalyzeResponse:
        call = _analyze_call(data, content_type, task, quality, return_image)
        return _parse(await self._send(call), AnalyzeResponse)

    async def streams(self, limit: int = 100) -> StreamList:
        response = await self._send(_Call("GET", "/v1/streams", {"limit": limit}))
        return _parse(response, StreamList)

    async def frames(self, stream_id: str, since: int = -1, limit: int = 100) -> FramePage:
        return _parse(await self._send(_frames_call(stream_id, since, limit)), FramePage)

    async def iter_frames(self, stream_id: str, since: int = -1) -> AsyncIterator[StoredFrame]:
        while True:
            page = await self.frames(stream_id, since, 1000)
            for frame in page.frames:
                yield frame
            if not page.frames:
                return
            since = page.next_since

    async def models(self) -> ModelsInfo:
        return _parse(await self._send(_Call("GET", "/v1/models")), ModelsInfo)

    async def repository(self, *, ready: bool = False) -> RepositoryIndex:
        return _parse(await self._send(_repository_call(ready)), RepositoryIndex)

    async def load_model(self, name: str) -> LoadResult:
        return _parse(await self._send(_load_call(name)), LoadResult)

    async def unload_model(
        self, name: str, *, version: str | None = None, force: bool = False
    ) -> UnloadResult:
        return _parse(await self._send(_unload_call(name, version, force)), UnloadResult)

    async def ready(self) -> bool:
        return (await self._send(_Call("GET", "/readyz"))).status_code == 200
