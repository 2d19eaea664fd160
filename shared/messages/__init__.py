"""Frozen message models, one module per family, decoded once at the edge."""

from shared.messages.codec import MAX_MESSAGE_BYTES, DecodeError, decode, encode

__all__ = ["MAX_MESSAGE_BYTES", "DecodeError", "decode", "encode"]
