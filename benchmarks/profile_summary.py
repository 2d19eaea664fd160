"""Where a benchmark's Python CPU went, from a py-spy raw profile: by layer and by component.

    .venv/bin/py-spy record -r 100 -f raw -o profile.txt -- \\
        .venv/bin/python benchmarks/end_to_end.py --scenario throughput --devices 1000 --branches 50
    .venv/bin/python benchmarks/profile_summary.py profile.txt [--top 25]

py-spy samples every thread that is on the CPU (the trio thread and the gateway's device
threads). Each sample is counted once per table:

- layer: what the sampled frame itself was running (the leaf frame's library, or the product's
  folder), so the table says how much is scheduling, drivers, encoding and the product's code;
- component: the innermost product frame above it (services/coordinator, device_gateway, ...),
  so a pika or asyncpg frame is charged to the service that called it;
- the product functions with the most samples beneath them (inclusive), for the next change.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<name>.*) \((?P<path>[^()]*?):(?P<line>\d+)\)$")
PRODUCT = ("services/", "device_gateway/", "device_registry/", "shared/", "clearcard/")
LAYERS = (  # first match of the leaf frame's path wins
    ("trio scheduler and channels", ("trio/",)),
    ("trio-asyncio bridge and asyncio loop", ("trio_asyncio/", "asyncio/")),
    ("PostgreSQL client (asyncpg)", ("asyncpg/",)),
    ("AMQP client (pika)", ("pika/",)),
    ("Ed25519 and hashing (cryptography)", ("cryptography/", "hashlib")),
    ("JSON and pydantic", ("json/", "pydantic", "encoder.py", "decoder.py")),
    ("OpenTelemetry", ("opentelemetry/",)),
    ("pyusb", ("usb/",)),
    ("logging and metrics", ("structlog/", "logging/", "prometheus_client/")),
    ("threads", ("threading.py", "concurrent/", "queue.py")),
    ("imports (start-up)", ("importlib",)),
    ("stdlib glue: contextlib, inspect, dataclasses, enum, typing", (
        "contextlib.py", "inspect.py", "dataclasses.py", "enum.py", "typing.py", "abc", "functools.py")),
    ("files and paths", ("pathlib.py", "os.py", "posixpath.py", "genericpath.py", "tempfile.py", "shutil.py")),
)


def frames(stack: str) -> list[tuple[str, str]]:
    """(function, path) of each frame, outermost first; paths relative to the checkout or site-packages."""
    out = []
    for raw in stack.split(";"):
        m = FRAME.match(raw)
        path = m.group("path") if m else ""
        path = path.split("site-packages/")[-1].split("/lib/python3")[-1].lstrip("/")
        out.append((m.group("name") if m else raw, path))
    return out


def component(path: str) -> str:
    parts = path.split("/")
    return "/".join(parts[:2]) if parts[0] in ("services", "shared") else parts[0]


def layer(path: str) -> str:
    for name, marks in LAYERS:
        if any(mark in path for mark in marks):
            return name
    if path.startswith(PRODUCT):
        return f"product: {component(path)}"
    return "other (stdlib, importlib, ...)"


def summarize(text: str) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    layers: Counter[str] = Counter()
    components: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        stack_frames = frames(stack)
        layers[layer(stack_frames[-1][1])] += n
        owner = next((p for _, p in reversed(stack_frames) if p.startswith(PRODUCT)), "")
        components[component(owner) if owner else "outside the product (loop, baselines)"] += n
        for key in {f"{name} ({path})" for name, path in stack_frames if path.startswith(PRODUCT)}:
            inclusive[key] += n
    return total, layers, components, inclusive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    total, layers, components, inclusive = summarize(args.profile.read_text())
    for title, table in (("layer (leaf frame)", layers), ("component (innermost product frame)", components)):
        print(f"\n{title}: {total} samples")
        for key, n in table.most_common():
            print(f"  {100 * n / total:5.1f}%  {key}")
    print(f"\nproduct functions, inclusive (top {args.top})")
    for key, n in inclusive.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {key}")


if __name__ == "__main__":
    main()
