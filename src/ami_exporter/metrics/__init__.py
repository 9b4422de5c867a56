"""Collectors: one per concern, built from :mod:`ami_exporter.state` at each scrape.

The only part of the package that imports prometheus_client; it never writes state.
"""
