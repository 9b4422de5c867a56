"""What the exporter knows of each Asterisk server, as plain data updated per event.

Imports nothing of prometheus_client: the collectors in :mod:`ami_exporter.metrics` read it
at scrape time.
"""
