"""Security events (class ``security``, AMI reference 3.9), counted by service and event name."""

from __future__ import annotations

from typing import Final

from ami_exporter.ami.protocol import Message
from ami_exporter.state import labels

# Service labels a single server can create before further ones fold into `other`.
MAX_SECURITY_SERVICES: Final = 16


class SecurityEvents:
    """``InvalidPassword``, ``FailedACL``, ``SuccessfulAuth``... of one server."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}  # (service, event name) -> n
        self._services: set[str] = set()

    def on_security(self, msg: Message) -> None:
        service = labels.identifier_or_other(msg.get("Service") or "")
        if service not in self._services:
            if len(self._services) >= MAX_SECURITY_SERVICES:
                service = labels.OTHER
            else:
                self._services.add(service)
        key = (service, msg.name)
        self.counts[key] = self.counts.get(key, 0) + 1
