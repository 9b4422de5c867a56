"""Encoding a registry for one scrape, in the format the scraper asked for.

Content negotiation (Prometheus text 0.0.4 or OpenMetrics 1.0.0 from the ``Accept`` header)
is prometheus_client's own ``choose_encoder``; this module keeps it on the metrics side, so
the web layer never imports prometheus_client.
"""

from __future__ import annotations

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

__all__ = ["CollectorRegistry", "encode"]


def encode(registry: CollectorRegistry, accept: str) -> tuple[bytes, str]:
    """The scrape body and its content type for an ``Accept`` header."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type
