"""The fault suite: its marker (until pyproject's `markers` lists it) and a last-resort cleanup."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

import pytest

from tests.faults.harness import SPAWNED


@pytest.fixture(autouse=True)
def no_service_outlives_its_test() -> Iterator[None]:
    """SIGCONT and SIGKILL any `clearcard serve` process a test left behind (say, on a timeout)."""
    yield
    while SPAWNED:
        process = SPAWNED.pop()
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.kill()
