"""What the broker holds for one test's vhost (`rabbitmqctl list_queues`), for verdicts."""

from __future__ import annotations

from urllib.parse import unquote

from tests.faults.servers import rabbitmqctl


async def queue_counts(url: str) -> dict[str, int]:
    """Messages (ready and unacknowledged) per queue of the vhost of `url`."""
    vhost = unquote(url.rsplit("/", 1)[1])
    listed = await rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "name", "messages")
    counts = {}
    for line in listed.splitlines():
        name, _, count = line.partition("\t")
        if count.strip().isdigit():
            counts[name] = int(count)
    return counts


async def assert_no_dead_letters(url: str) -> None:
    """Every dead-letter queue of the vhost is empty (and there are some: the topology was declared)."""
    counts = await queue_counts(url)
    dead = {name: n for name, n in counts.items() if name.endswith(".dead")}
    assert dead, counts
    assert {name: n for name, n in dead.items() if n} == {}, dead
