"""Basic auth for the HTTP side: ``basic_auth_users`` of ``--web.config.file``.

bcrypt is slow on purpose (0.24 s per check at cost 12 here), which makes it the cheapest way
to make the exporter the outage: a few wrong passwords a second keep every core busy, and a
queue of them kept a correct scrape waiting 16 s. So:

* **Caches.** A correct ``(user, password)`` is remembered (Prometheus sends the same one every
  scrape: one dict lookup), and so is a wrong one (a repeated wrong password costs nothing).
  Both are keyed by an HMAC under a key drawn at start, so memory holds neither a password nor
  a fast hash of one; both are bounded.
* **No duplicate work.** Requests carrying credentials already being checked wait for that
  check instead of queueing another: a hundred copies of one wrong password cost one check.
* **A bounded, fair queue.** At most ``MAX_WORKERS`` checks run at once, in the default
  executor's threads (the event loop keeps reading AMI meanwhile). Waiting checks are queued
  per client address (``LANE_DEPTH`` each, ``MAX_LANES`` addresses; IPv6 by /64) and taken in
  turn from each address, so a flood from one address delays another address's new
  credentials by about one check per busy address. Beyond those bounds a request is answered
  at once: 429 (that address has too many checks waiting) or 503 (too many addresses), with a
  ``Retry-After``; a credential known to be wrong gets its 401 at once and never queues.
* **No user enumeration.** An unknown user is checked against a dummy hash of the same cost as
  a real user's (made at start, one per distinct cost, which one chosen by a keyed hash of the
  name), through the same queue and caches; user names are compared in constant time. Known
  user with a wrong password and unknown user take the same time.

What a flood of wrong passwords that change every request (nothing to cache) gets: the
exporter stays up, the loop unblocked, bcrypt on at most ``MAX_WORKERS`` threads, memory
bounded; every request is answered within about ``LANE_DEPTH * MAX_LANES / MAX_WORKERS``
checks or refused at once. Credentials verified before the flood are served from the cache as
if there were no flood; new ones from another address are checked within about
``MAX_LANES / MAX_WORKERS + 1`` checks (about 1 s at cost 12). New credentials from the flood's
own address (or the same reverse proxy) may be refused with 429 while the flood lasts.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import math
import os
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from types import MappingProxyType
from typing import Final

from ami_exporter.config.errors import ConfigError
from ami_exporter.config.web import WebUser

__all__ = ["AuthDecision", "BasicAuth", "basic_auth_from_users"]

log = logging.getLogger("ami_exporter.web")


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # a container's or taskset's share, on Linux
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# Checks running at once: bcrypt costs CPU on purpose; a flood of bad passwords must not take
# every core (the event loop keeps one to itself when there are two) nor the default
# executor's every thread.
MAX_WORKERS: Final = max(1, min(2, _cpus() - 1))
LANE_DEPTH: Final = 4  # checks waiting per client address
MAX_LANES: Final = 8  # client addresses with checks waiting
MAX_CACHED: Final = 256  # correct credentials remembered (one per user in practice)
MAX_FAILED: Final = 4096  # wrong credentials remembered (150 bytes each: 0.6 MB at most)
MAX_PASSWORD: Final = 72  # bcrypt's limit; longer is refused (bcrypt 5 raises, 4 truncated)
SHED_LOG_INTERVAL: Final = 60.0
_BCRYPT64: Final = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_CHALLENGE: Final = MappingProxyType({"WWW-Authenticate": 'Basic realm="ami-exporter"'})


@dataclass(frozen=True, slots=True)
class AuthDecision:
    """What to answer: ``ok``, or the status, body and headers of the refusal."""

    ok: bool
    status: HTTPStatus = HTTPStatus.OK
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


ALLOWED: Final = AuthDecision(True)
DENIED: Final = AuthDecision(False, HTTPStatus.UNAUTHORIZED, b"Unauthorized\n", _CHALLENGE)


@dataclass(slots=True)
class _Job:
    key: bytes
    hashed: bytes
    known: bool
    password: bytes
    done: asyncio.Future[bool]


def _cost(hashed: bytes) -> int:
    """The cost of a ``$2b$12$...`` hash (already checked for form)."""
    return int(hashed.split(b"$")[2])


def _dummy_hash(cost: int) -> bytes:
    """A well-formed hash of that cost that no password matches (its checksum is random)."""
    checksum = "".join(secrets.choice(_BCRYPT64) for _ in range(31)).encode()
    import bcrypt

    return bcrypt.gensalt(cost, b"2b") + checksum


def _lane(peer: object) -> str:
    """The queue of a client: its IPv4 address or IPv6 /64 ("" when unknown)."""
    host = peer[0] if isinstance(peer, tuple) and peer else peer
    try:
        address = ipaddress.ip_address(str(host).partition("%")[0])
    except ValueError:
        return ""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes (see the module doc)."""

    def __init__(self, users: dict[str, bytes]) -> None:
        self._key = secrets.token_bytes(32)
        self._users = [
            (self._tag(b"name", name.encode()), hashed) for name, hashed in users.items()
        ]
        # One cost per user, so an unknown name looks like a user of some cost, in proportion.
        costs = sorted(_cost(hashed) for hashed in users.values()) or [10]
        dummies = {cost: _dummy_hash(cost) for cost in set(costs)}
        self._dummies = [dummies[cost] for cost in costs]
        self._good: OrderedDict[bytes, None] = OrderedDict()
        self._bad: OrderedDict[bytes, None] = OrderedDict()
        self._pending: dict[bytes, asyncio.Future[bool]] = {}
        self._lanes: OrderedDict[str, deque[_Job]] = OrderedDict()
        self._running = 0
        self._check_seconds = 0.25  # a running mean, for Retry-After
        self._shed = 0  # refusals not yet logged
        self._shed_since = 0.0
        self._shed_logged = -math.inf
        self.checks = 0  # bcrypt computations done (cache misses), for tests and debugging

    def _tag(self, kind: bytes, data: bytes) -> bytes:
        return hmac.new(self._key, kind + b"\0" + data, hashlib.sha256).digest()

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

    async def authorize(self, header: str | None, peer: object = None) -> bool:
        """True when ``header`` carries a known user and its password (see :meth:`check`)."""
        return (await self.check(header, peer)).ok

    async def check(self, header: str | None, peer: object = None) -> AuthDecision:
        """The answer to a request with this ``Authorization`` header from ``peer``.

        ``peer`` is the transport's ``peername`` (an address tuple), or None when unknown: it
        only chooses the queue, so that one client's flood does not delay another's check.
        """
        creds = self.parse_header(header)
        if creds is None or len(creds[1]) > MAX_PASSWORD:
            return DENIED
        user, password = creds
        user_bytes = user.encode("utf-8", "surrogateescape")
        key = self._tag(b"cred", user_bytes + b":" + password)
        if key in self._good:
            return ALLOWED
        if key in self._bad:
            self._bad.move_to_end(key)
            return DENIED
        pending = self._pending.get(key) or self._enqueue(_lane(peer), key, user_bytes, password)
        if isinstance(pending, AuthDecision):
            return pending
        # Shielded: a request that goes away must not cancel the check others wait for.
        return ALLOWED if await asyncio.shield(pending) else DENIED

    def _lookup(self, user: bytes) -> tuple[bytes, bool]:
        """The user's hash, or a dummy of a user's cost: the same time either way."""
        tag = self._tag(b"name", user)
        found: bytes | None = None
        for name_tag, hashed in self._users:  # every user, no early exit
            if hmac.compare_digest(name_tag, tag):
                found = hashed
        index = int.from_bytes(self._tag(b"dummy", user)[:8], "big") % len(self._dummies)
        dummy = self._dummies[index]
        return (found, True) if found is not None else (dummy, False)

    def _enqueue(
        self, lane: str, key: bytes, user: bytes, password: bytes
    ) -> asyncio.Future[bool] | AuthDecision:
        """Queue a check (the future of its result), or the refusal when the queue is full."""
        queue = self._lanes.get(lane)
        if queue is None and len(self._lanes) >= MAX_LANES:
            return self._refuse(HTTPStatus.SERVICE_UNAVAILABLE)
        if queue is not None and len(queue) >= LANE_DEPTH:
            return self._refuse(HTTPStatus.TOO_MANY_REQUESTS)
        if queue is None:
            queue = self._lanes[lane] = deque()
        hashed, known = self._lookup(user)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        queue.append(_Job(key, hashed, known, password, done))
        self._pending[key] = done
        self._pump()
        return done

    def _refuse(self, status: HTTPStatus) -> AuthDecision:
        waiting = sum(len(queue) for queue in self._lanes.values()) + self._running
        retry_after = max(1, math.ceil(waiting * self._check_seconds / MAX_WORKERS))
        now = time.monotonic()
        if not self._shed:
            self._shed_since = now
        self._shed += 1
        if now - self._shed_logged >= SHED_LOG_INTERVAL:  # once a minute at most, whatever flood
            log.warning(
                "basic auth: the password check queue is full (a flood of wrong passwords?): "
                "%d request(s) refused with 429/503 in %.0f s (logged once a minute at most)",
                self._shed,
                now - self._shed_since,
            )
            self._shed, self._shed_logged = 0, now
        body = f"{status.phrase}: too many password checks waiting\n".encode()
        return AuthDecision(False, status, body, {"Retry-After": str(retry_after)})

    def _pump(self) -> None:
        """Start waiting checks, one address after the other, while a worker is free."""
        loop = asyncio.get_running_loop()
        while self._running < MAX_WORKERS and self._lanes:
            lane, queue = self._lanes.popitem(last=False)
            job = queue.popleft()
            if queue:
                self._lanes[lane] = queue  # to the back: the next address goes first
            try:
                future = loop.run_in_executor(None, _verify, job.hashed, job.password)
            except RuntimeError:  # the loop is closing: refuse, rather than leave it waiting
                self._settle(job, None)
                continue
            self._running += 1
            self.checks += 1
            future.add_done_callback(partial(self._finish, job))

    def _finish(self, job: _Job, future: asyncio.Future[tuple[bool, float]]) -> None:
        self._running -= 1
        try:
            ok, seconds = future.result()
        except (Exception, asyncio.CancelledError):  # _verify catches what bcrypt raises
            log.exception("basic auth: the password check failed")
            self._settle(job, None)
        else:
            self._check_seconds += (seconds - self._check_seconds) / 8
            self._settle(job, ok and job.known)
        self._pump()

    def _settle(self, job: _Job, ok: bool | None) -> None:
        """Answer the requests waiting for ``job``; remember the result (None: no result)."""
        if ok is not None:
            cache, bound = (self._good, MAX_CACHED) if ok else (self._bad, MAX_FAILED)
            cache[job.key] = None
            if len(cache) > bound:
                cache.popitem(last=False)
        del self._pending[job.key]
        if not job.done.done():
            job.done.set_result(bool(ok))


def _verify(hashed: bytes, password: bytes) -> tuple[bool, float]:
    """bcrypt in a worker thread: whether the password matches, and the seconds it took."""
    import bcrypt

    start = time.perf_counter()
    try:
        ok = bcrypt.checkpw(password, hashed)
    except ValueError:  # a NUL byte or another password bcrypt refuses
        ok = False
    return ok, time.perf_counter() - start


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
