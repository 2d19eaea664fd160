"""Pieces every ClearCard service shares: configuration, messages, bus, database, telemetry."""
