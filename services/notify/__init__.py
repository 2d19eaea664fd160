"""Notifications to the people responsible for a branch (email and webhooks)."""
