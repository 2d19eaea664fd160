"""The profile summary charges each sample to the layer it ran in and to the product part that called it."""

from __future__ import annotations

from benchmarks.profile_summary import summarize

RAW = "\n".join([
    # a pika frame under the bus, under the coordinator's runner: pika layer, bus component
    "<module> (benchmarks/end_to_end.py:1);Runner.drive (services/coordinator/runner.py:10);"
    "RabbitBus.publish (shared/bus/rabbitmq.py:20);"
    "Channel.basic_publish (/v/lib/python3.11/site-packages/pika/channel.py:30) 6",
    # the scheduler with no product frame above it: the event loop itself
    "<module> (benchmarks/end_to_end.py:1);run (/v/lib/python3.11/site-packages/trio/_core/_run.py:2) 3",
    # the product's own code as the sampled frame
    "<module> (benchmarks/end_to_end.py:1);Runner.drive (services/coordinator/runner.py:10);"
    "gate (services/coordinator/machine.py:44) 1",
    "not a profile line",
])


def test_samples_are_charged_to_their_layer_and_their_caller() -> None:
    total, layers, components, inclusive = summarize(RAW)
    assert total == 10
    assert layers == {"AMQP client (pika)": 6, "trio scheduler and channels": 3,
                      "product: services/coordinator": 1}
    assert components == {"shared/bus": 6, "outside the product (loop, baselines)": 3,
                          "services/coordinator": 1}
    # a function is counted once per sample however deep it recurs, with everything beneath it
    assert inclusive["Runner.drive (services/coordinator/runner.py)"] == 7
    assert inclusive["RabbitBus.publish (shared/bus/rabbitmq.py)"] == 6
