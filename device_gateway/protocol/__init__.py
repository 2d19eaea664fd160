"""The ClearCard reference device protocol: pure framing and codes, no I/O.

This is the product's own documented protocol (docs/device-protocol.md), spoken by the
emulated devices; it is not any vendor's command set.
"""

from device_gateway.protocol.codes import NEVER_RETRY, RETRYABLE, Command, Status, is_retryable
from device_gateway.protocol.frame import (
    MAX_FRAME_SIZE,
    MAX_MESSAGE_SIZE,
    MAX_PAYLOAD,
    Frame,
    FrameDecoder,
    FrameError,
    Message,
    MessageAssembler,
    encode_message,
)

__all__ = [
    "MAX_FRAME_SIZE",
    "MAX_MESSAGE_SIZE",
    "MAX_PAYLOAD",
    "NEVER_RETRY",
    "RETRYABLE",
    "Command",
    "Frame",
    "FrameDecoder",
    "FrameError",
    "Message",
    "MessageAssembler",
    "Status",
    "encode_message",
    "is_retryable",
]
