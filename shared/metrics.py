"""Prometheus metrics (`clearcard_*`): instruments services increment, and the fleet snapshot.

Two kinds of metric live here:

- instruments (counters, histograms) that a service records where the event happens (the
  coordinator when a device clear finishes and after each step, the gateway around each
  device command, the console per HTTP request, notify per message sent); each serving
  process writes its cumulative values to PostgreSQL every few seconds (shared/metrics_store.py)
  and the console's `/metrics` shows their sum over every process of the installation;
- the fleet snapshot, computed from PostgreSQL (and the broker's queue depths) by the console,
  so that any console replica reports the same fleet-wide numbers.

Import the instruments and use them; never create metrics elsewhere, so names stay unique.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# One registry for the instruments of this process (not prometheus_client's default one, so
# importing ClearCard never adds metrics to a host application's registry).
REGISTRY = CollectorRegistry(auto_describe=True)

_STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_COMMAND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

DEVICE_CLEARS = Counter(
    "clearcard_device_clears", "Device clears finished, by outcome and error code (contract §6).",
    ["outcome", "error_code"], registry=REGISTRY,
)
STEP_DURATION = Histogram(
    "clearcard_step_duration_seconds", "Time a device spent on one clear step.",
    ["step"], buckets=_STEP_BUCKETS, registry=REGISTRY,
)
GATEWAY_COMMAND = Histogram(
    "clearcard_gateway_command_duration_seconds", "Time the gateway took for a device command, queueing "
    "for the device included, by command and outcome (ok or the error code).",
    ["op", "outcome"], buckets=_COMMAND_BUCKETS, registry=REGISTRY,
)
NOTIFICATIONS = Counter(
    "clearcard_notifications", "Notifications delivered or failed, by channel (email, webhook) and outcome.",
    ["channel", "outcome"], registry=REGISTRY,
)
RPC_CALLS = Counter(
    "clearcard_rpc_calls", "Commands this process sent over the bus and waited for, by operation.",
    ["op"], registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "clearcard_http_requests", "Console HTTP requests by route and status code.",
    ["route", "method", "status"], registry=REGISTRY,
)
CLEAR_REQUESTS_SUBMITTED = Counter(
    "clearcard_console_clear_requests_submitted", "Clear requests the console published.",
    ["mode", "preview"], registry=REGISTRY,
)

_flush_hooks: list[Callable[[], None]] = []


def flushed_soon() -> None:
    """Something worth showing happened (a clear finished): write this process's metrics soon."""
    for hook in list(_flush_hooks):
        hook()


def on_flush_request(hook: Callable[[], None]) -> Callable[[], None]:
    """Register a flusher's wake-up; returns the function that unregisters it."""
    _flush_hooks.append(hook)
    return lambda: _flush_hooks.remove(hook)


@dataclass(frozen=True)
class FleetSnapshot:
    """Fleet-wide numbers read from PostgreSQL at scrape time."""

    # (branch, family, risk colour of shared/deadlines.py) -> devices
    devices: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    # (filing, comparison) of each device's open period, as the bureau last said -> devices
    bureau: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # (branch, online "true"/"false") -> devices
    online: Mapping[tuple[str, str], int] = field(default_factory=dict)
    running_requests: int = 0
    devices_in_progress: int = 0
    # queue -> messages waiting (only where the transport can tell)
    queue_depths: Mapping[str, int] = field(default_factory=dict)
    # (status) -> digital-invoice monthly confirmations
    digital_confirmations: Mapping[str, int] = field(default_factory=dict)


class SnapshotCollector(Collector):
    """Exposes one FleetSnapshot; build one per scrape."""

    def __init__(self, snapshot: FleetSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        s = self.snapshot
        devices = GaugeMetricFamily("clearcard_devices", "Registered devices by branch, family and lock-date risk "
                                    "(red: critical, amber: warning, green, unknown, abandoned).",
                                    labels=["branch", "family", "risk"])
        for (branch, family, risk), n in sorted(s.devices.items()):
            devices.add_metric([branch, family, risk], n)
        yield devices
        bureau = GaugeMetricFamily("clearcard_devices_bureau", "Devices by the bureau's filing and comparison "
                                   "status of their open period.", labels=["filing", "comparison"])
        for (filing, comparison), n in sorted(s.bureau.items()):
            bureau.add_metric([filing, comparison], n)
        yield bureau
        online = GaugeMetricFamily("clearcard_devices_online", "Registered devices by branch and connection.",
                                   labels=["branch", "online"])
        for (branch, flag), n in sorted(s.online.items()):
            online.add_metric([branch, flag], n)
        yield online
        yield GaugeMetricFamily("clearcard_clear_requests_running", "Clear requests not finished yet.",
                                value=s.running_requests)
        yield GaugeMetricFamily("clearcard_device_clears_in_progress", "Device clears without an outcome yet.",
                                value=s.devices_in_progress)
        depths = GaugeMetricFamily("clearcard_queue_depth", "Messages waiting in a queue.", labels=["queue"])
        for queue, n in sorted(s.queue_depths.items()):
            depths.add_metric([queue], n)
        yield depths
        digital = GaugeMetricFamily("clearcard_digital_confirmations", "Monthly digital-invoice summary "
                                    "confirmations by status.", labels=["status"])
        for status, n in sorted(s.digital_confirmations.items()):
            digital.add_metric([status], n)
        yield digital


def exposition(snapshot: FleetSnapshot, installation: Collector | None = None) -> bytes:
    """The Prometheus text format: the installation's instruments (or this process's) and the snapshot."""
    scrape = CollectorRegistry(auto_describe=True)
    scrape.register(SnapshotCollector(snapshot))
    return generate_latest(REGISTRY if installation is None else _single(installation)) + generate_latest(scrape)


def _single(collector: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def metric_names() -> Iterator[str]:
    """Every metric family name this module defines (for docs and tests)."""
    for metric in REGISTRY.collect():
        yield metric.name
    yield from (m.name for m in SnapshotCollector(FleetSnapshot()).collect())
