"""Frames of the reference device protocol: encoding, an incremental decoder, reassembly.

Pure: no I/O and no event loop, so the host driver and the emulated device share it and it is
tested on its own. Layout (big-endian), 14-byte header, payload, CRC32 over header + payload:

    magic "CCDP" | version u8 | flags u8 | sequence u16 | command u8 | status u8 | length u32
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"CCDP"
VERSION = 1
HEADER = struct.Struct(">4sBBHBBI")
HEADER_SIZE = HEADER.size  # 14
CRC_SIZE = 4
MAX_FRAME_SIZE = 16 * 1024  # one bulk read's worth; larger messages are split into fragments
MAX_PAYLOAD = MAX_FRAME_SIZE - HEADER_SIZE - CRC_SIZE
MAX_MESSAGE_SIZE = 64 * 1024 * 1024  # a reassembled message larger than this is refused

FLAG_RESPONSE = 0x01  # sent by the device
FLAG_MORE = 0x02  # another fragment of the same message follows
_KNOWN_FLAGS = FLAG_RESPONSE | FLAG_MORE


class FrameError(ValueError):
    """A frame or message that cannot be built or reassembled."""


@dataclass(frozen=True)
class Frame:
    """One frame as it travels over a bulk endpoint."""

    sequence: int
    command: int
    payload: bytes = b""
    status: int = 0
    flags: int = 0

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)

    @property
    def more(self) -> bool:
        return bool(self.flags & FLAG_MORE)

    def encode(self) -> bytes:
        """The frame's bytes, CRC included."""
        if not 0 <= self.sequence <= 0xFFFF:
            raise FrameError(f"sequence {self.sequence} out of range")
        if not (0 <= self.command <= 0xFF and 0 <= self.status <= 0xFF):
            raise FrameError("command and status are single bytes")
        if self.flags & ~_KNOWN_FLAGS:
            raise FrameError(f"unknown flags {self.flags:#x}")
        if len(self.payload) > MAX_PAYLOAD:
            raise FrameError(f"payload of {len(self.payload)} bytes exceeds {MAX_PAYLOAD}")
        head = HEADER.pack(MAGIC, VERSION, self.flags, self.sequence, self.command, self.status,
                           len(self.payload))
        body = head + self.payload
        return body + struct.pack(">I", zlib.crc32(body))


def encode_message(
    sequence: int, command: int, payload: bytes, *, status: int = 0, response: bool = False
) -> bytes:
    """A whole message as one or more frames (fragments flagged MORE except the last)."""
    if len(payload) > MAX_MESSAGE_SIZE:
        raise FrameError(f"message of {len(payload)} bytes exceeds {MAX_MESSAGE_SIZE}")
    base = FLAG_RESPONSE if response else 0
    chunks = [payload[i:i + MAX_PAYLOAD] for i in range(0, len(payload), MAX_PAYLOAD)] or [b""]
    out = bytearray()
    for index, chunk in enumerate(chunks):
        flags = base | (FLAG_MORE if index < len(chunks) - 1 else 0)
        out += Frame(sequence, command, chunk, status, flags).encode()
    return bytes(out)


class FrameDecoder:
    """Turns a byte stream into frames; skips garbage and damaged frames and resynchronizes.

    Feed it whatever a read returned (short reads, several frames, noise); it never raises on
    input. `discarded` counts bytes dropped while hunting for the next good frame.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.discarded = 0
        self.bad_frames = 0

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return every complete, intact frame now available."""
        self._buffer += data
        frames: list[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def resync(self) -> list[Frame]:
        """Give up on a partial frame (its length may be noise) and look for the next one."""
        if self._buffer:
            self.bad_frames += 1
            self._drop(1)
        return self.feed(b"")

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buffer)

    def _drop(self, count: int) -> None:
        del self._buffer[:count]
        self.discarded += count

    def _next(self) -> Frame | None:
        buf = self._buffer
        while True:
            start = buf.find(MAGIC)
            if start < 0:
                # keep a tail that may be the beginning of a magic split across reads
                keep = len(MAGIC) - 1
                if len(buf) > keep:
                    self._drop(len(buf) - keep)
                return None
            if start:
                self._drop(start)
            if len(buf) < HEADER_SIZE:
                return None
            _, version, flags, seq, command, status, length = HEADER.unpack_from(buf)
            if version != VERSION or flags & ~_KNOWN_FLAGS or length > MAX_PAYLOAD:
                self.bad_frames += 1
                self._drop(1)  # not a real header: look for the next magic
                continue
            total = HEADER_SIZE + length + CRC_SIZE
            if len(buf) < total:
                return None
            (crc,) = struct.unpack_from(">I", buf, HEADER_SIZE + length)
            if zlib.crc32(bytes(buf[:HEADER_SIZE + length])) != crc:
                self.bad_frames += 1
                self._drop(1)
                continue
            payload = bytes(buf[HEADER_SIZE:HEADER_SIZE + length])
            del buf[:total]
            return Frame(seq, command, payload, status, flags)


@dataclass(frozen=True)
class Message:
    """A reassembled message: the first fragment's header with every fragment's payload."""

    sequence: int
    command: int
    status: int
    response: bool
    payload: bytes


class MessageAssembler:
    """Joins MORE-flagged fragments; a fragment of another message restarts assembly."""

    def __init__(self) -> None:
        self._head: Frame | None = None
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, frame: Frame) -> Message | None:
        """Take one frame; return the message it completes, if any."""
        head = self._head
        if head is not None and (head.sequence, head.command, head.flags & FLAG_RESPONSE) != (
            frame.sequence, frame.command, frame.flags & FLAG_RESPONSE
        ):
            self._reset()  # the rest of that message was lost; start over with this one
            head = None
        if head is None:
            self._head = head = frame
        self._parts.append(frame.payload)
        self._size += len(frame.payload)
        if self._size > MAX_MESSAGE_SIZE:
            self._reset()
            return None
        if frame.more:
            return None
        message = Message(head.sequence, head.command, head.status, head.is_response,
                          b"".join(self._parts))
        self._reset()
        return message

    def _reset(self) -> None:
        self._head = None
        self._parts = []
        self._size = 0
