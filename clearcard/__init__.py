"""The `clearcard` command and the wiring that runs services in one process."""
