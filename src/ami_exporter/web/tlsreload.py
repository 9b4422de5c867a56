"""A TLS context whose settings a reload can replace while the listener keeps listening.

The listening socket gets one ``SSLContext`` when it is created, and asyncio wraps every
accepted connection with that context's :meth:`~ssl.SSLContext.wrap_bio`. This context hands
that call to :attr:`ReloadableSSLContext.current`, which a reload (SIGHUP) replaces with a
context built from the re-read ``--web.config.file``: a renewed certificate, a new client CA
or new TLS versions apply to every connection accepted afterwards, the ones open keep theirs,
and the listener is never closed. exporter-toolkit gets the same from ``GetConfigForClient``.
"""

from __future__ import annotations

import ssl
from typing import Any

__all__ = ["ReloadableSSLContext"]


class ReloadableSSLContext(ssl.SSLContext):
    """Wraps each new server-side connection with :attr:`current`, set at any time."""

    current: ssl.SSLContext

    def __new__(cls, current: ssl.SSLContext) -> ReloadableSSLContext:
        self = super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)
        self.current = current
        return self

    def __init__(self, current: ssl.SSLContext) -> None:
        # ssl.SSLContext.__init__ takes the protocol that __new__ already used.
        super().__init__()

    def wrap_bio(
        self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO, *args: Any, **kwargs: Any
    ) -> ssl.SSLObject:
        return self.current.wrap_bio(incoming, outgoing, *args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        return self.current.wrap_socket(*args, **kwargs)
