"""Subcommands of `clearcard`, one module per area."""
