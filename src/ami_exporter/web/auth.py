"""Basic auth for the HTTP side: ``basic_auth_users`` of ``--web.config.file``.

bcrypt is slow on purpose (tens of milliseconds per check), so checks run in a worker thread
(the event loop keeps reading AMI meanwhile), at most a few at a time, and a successful check
is cached under ``(user, sha256(password))`` so that a scrape every 15 s costs one dict lookup.
Failures are never cached. An unknown user is checked against a dummy hash, so the response
time does not tell which user names exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import Iterable
from typing import Final

from ami_exporter.config.errors import ConfigError
from ami_exporter.config.web import WebUser

__all__ = ["BasicAuth", "basic_auth_from_users"]

# Checks running at once: bcrypt costs CPU on purpose, a flood of bad passwords must not
# take every core (nor the default executor's every thread).
MAX_CONCURRENT_CHECKS: Final = 2
MAX_CACHED: Final = 256
# A valid bcrypt hash (cost 10) of a random string: what an unknown user is checked against.
_DUMMY_HASH: Final = b"$2b$10$PI0H2vrOrn/Dibb.vUCGge0rK1bvSxuSKFa8NWzITPjo0Wi7laJKO"


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = dict(users)
        self._cache: set[tuple[str, bytes]] = set()
        self._semaphore: asyncio.Semaphore | None = None
        self.checks = 0  # bcrypt computations done (cache misses), for tests and debugging

    @staticmethod
    def parse_header(header: str | None) -> tuple[str, bytes] | None:
        """``(user, password)`` from an ``Authorization`` value, or None if not Basic."""
        if not header:
            return None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            raw = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        user, sep, password = raw.partition(b":")
        if not sep:
            return None
        return user.decode("utf-8", "surrogateescape"), password

    def check_password(self, user: str, password: bytes) -> bool:
        """Synchronous check (bcrypt cost included); cached on success."""
        key = (user, hashlib.sha256(password).digest())
        if key in self._cache:
            return True
        import bcrypt

        hashed = self._users.get(user)
        self.checks += 1
        try:
            ok = bcrypt.checkpw(password, hashed if hashed is not None else _DUMMY_HASH)
        except ValueError:
            ok = False
        ok = ok and hashed is not None
        if ok:
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            self._cache.add(key)
        return ok

    async def authorize(self, header: str | None) -> bool:
        """True when ``header`` carries a known user and its password."""
        creds = self.parse_header(header)
        if creds is None:
            return False
        user, password = creds
        if (user, hashlib.sha256(password).digest()) in self._cache:
            return True
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)
        async with self._semaphore:
            return await asyncio.to_thread(self.check_password, user, password)


def basic_auth_from_users(users: Iterable[WebUser]) -> BasicAuth | None:
    """The checker for ``users`` (None when there is none); a malformed hash is a ConfigError."""
    import bcrypt

    hashes: dict[str, bytes] = {}
    for user in users:
        try:
            bcrypt.checkpw(b"", user.bcrypt_hash)
        except ValueError:
            raise ConfigError(f"{user.at}: the bcrypt hash of {user.name!r} is invalid") from None
        hashes[user.name] = user.bcrypt_hash
    return BasicAuth(hashes) if hashes else None
