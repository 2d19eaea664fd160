"""Coordinator: drives every device of a clear request through the steps, durably."""
