"""The console: HTTP API, operations endpoints (health, readiness, metrics) and the web console."""
