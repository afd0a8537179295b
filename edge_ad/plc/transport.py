"""What every PLC transport shares: the error types, lazy protocol imports, an asyncio loop in a thread for the
async libraries (asyncua, pymodbus), and PLC URL parsing. Adapters import this module, never `link`."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from concurrent.futures import TimeoutError as FutureTimeout
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from edge_ad import optional
from edge_ad.errors import PlcConnectionError, PlcError

log = logging.getLogger(__name__)
T = TypeVar("T")
Value = bool | int | float


def require(module: str, what: str) -> ModuleType:
    """Import a PLC protocol library lazily (PlcError with the install hint when it is missing)."""
    return optional.require(module, what, PlcError)


class LoopThread:
    """An asyncio event loop in a daemon thread, so async protocol libraries serve a synchronous caller."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        """Run `coro` on the loop; PlcConnectionError on time-out or on a transport error."""
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except FutureTimeout as e:
            fut.cancel()
            raise PlcConnectionError(f"{what}: no answer within {timeout:g} s") from e

    def stop(self) -> None:
        """Cancel pending tasks, stop the loop and join the thread."""
        if self.loop.is_closed():
            return

        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(_cancel_all(), self.loop).result(5.0)
            except (FutureTimeout, RuntimeError):
                log.warning("event loop tasks did not finish within 5 s")
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5.0)
        if not self._thread.is_alive():
            self.loop.close()


def parse_url(url: str, empty_host: bool = False) -> tuple[str, str, int | None, str, dict[str, str]]:
    """Split a PLC URL into (scheme, host, port, path, query); PlcError for a malformed one.

    empty_host: servers accept `scheme://:PORT` (host "", the adapter then binds 127.0.0.1)."""
    parts = urlsplit(url)
    if not parts.scheme or not (parts.hostname or (empty_host and parts.netloc.startswith(":"))):
        raise PlcError(f"--plc {url!r}: expected SCHEME://HOST[:PORT]..., e.g. opcua://0.0.0.0:4840, "
                       "modbus://0.0.0.0:5020, s7://192.168.0.1/0/1/100")
    try:
        port = parts.port
    except ValueError as e:
        raise PlcError(f"--plc {url!r}: bad port ({e})") from e
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return parts.scheme.lower(), parts.hostname or "", port, parts.path, query


__all__ = ["LoopThread", "PlcConnectionError", "PlcError", "Value", "parse_url", "require"]
