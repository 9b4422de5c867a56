"""HTTP: the /metrics and health endpoints, the web config (TLS, basic auth), the status page."""
