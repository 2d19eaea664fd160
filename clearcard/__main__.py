"""`python -m clearcard` runs the CLI."""

from clearcard.cli import main

main()
