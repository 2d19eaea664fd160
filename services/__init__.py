"""The ClearCard services: auth, coordinator, backup, audit, authority (bureau) simulator."""
