"""The backup file format, version 2: a stream of compressed, authenticated chunks.

    file   = header || chunk ... || final chunk
    header = b"CCBK" || 0x02 || len(key_id) (1 byte) || key_id (ASCII) || secretstream header (24 bytes)
    chunk  = length (u32, big-endian) || secretstream(zlib(JSON object), associated data = header)

Each chunk is one JSON document (services/backup/snapshot.py says which); libsodium's
secretstream (XChaCha20-Poly1305) chains them, so a chunk that is altered, dropped, repeated,
moved or taken from another backup fails to decrypt, and a file cut short lacks the chunk
tagged FINAL. A writer and a reader hold one chunk at a time, whatever the period's size. The
stream key is derived from the backup key (HKDF), never the key itself, so version 1 files
(one AES-GCM message; services/backup/sealed.py) and version 2 files never share a key.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import nacl.bindings as sodium
import nacl.exceptions
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.backup.sealed import MAGIC, CopyDamaged, legacy_documents

VERSION = 2
_LENGTH = struct.Struct(">I")
_STREAM_HEADER = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_ABYTES = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_FINAL = sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
_MESSAGE = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
# A chunk's JSON may not exceed this, compressed or not: a reader never holds more than about
# this much, even for a hostile file.
MAX_CHUNK_BYTES = 4 * 1024 * 1024
# v1 files were one message of at most a bus message's period; anything far larger is not one.
MAX_LEGACY_BYTES = 64 * 1024 * 1024


def _stream_key(key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"clearcard backup file v2: secretstream key").derive(key)


class Sealer:
    """Turns JSON documents into the bytes of a version 2 file, one chunk at a time."""

    def __init__(self, key_id: str, key: bytes) -> None:
        raw_id = key_id.encode("ascii")
        self._state = sodium.crypto_secretstream_xchacha20poly1305_state()
        stream_header = sodium.crypto_secretstream_xchacha20poly1305_init_push(self._state, _stream_key(key))
        self.header = MAGIC + bytes([VERSION, len(raw_id)]) + raw_id + stream_header
        self.finished = False

    def chunk(self, document: dict[str, Any], *, final: bool = False) -> bytes:
        """One document as a chunk; the last one of the file must be `final`."""
        if self.finished:
            raise ValueError("the backup file is already finished")
        text = json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
        if len(text) > MAX_CHUNK_BYTES:
            raise ValueError(f"a backup chunk of {len(text)} bytes exceeds {MAX_CHUNK_BYTES}")
        sealed = sodium.crypto_secretstream_xchacha20poly1305_push(
            self._state, zlib.compress(text, 6), self.header, _FINAL if final else _MESSAGE)
        self.finished = final
        return _LENGTH.pack(len(sealed)) + sealed


class HashingReader:
    """A binary file read through SHA-256: the checksum of everything read so far."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, count: int) -> bytes:
        try:
            data = self._raw.read(count)
        except OSError as exc:
            raise CopyDamaged(f"cannot be read: {exc.strerror}") from None
        self._hash.update(data)
        self.size += len(data)
        return data

    def exactly(self, count: int) -> bytes:
        """`count` bytes, or CopyDamaged when the file ends first."""
        data = self.read(count)
        if len(data) != count:
            raise CopyDamaged("is truncated")
        return data

    def checksum(self) -> str:
        return self._hash.hexdigest()


def _inflate(plain: bytes) -> dict[str, Any]:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(plain, MAX_CHUNK_BYTES + 1)
    except zlib.error:
        raise CopyDamaged("decrypts but does not decompress") from None
    if len(text) > MAX_CHUNK_BYTES or not inflater.eof:
        raise CopyDamaged("holds a chunk larger than any ClearCard writes")
    try:
        document = json.loads(text)
    except ValueError:
        raise CopyDamaged("decrypts but holds no readable document") from None
    if not isinstance(document, dict):
        raise CopyDamaged("holds a chunk that is not a JSON object")
    return document


def _stream_documents(source: HashingReader, header: bytes, key: bytes) -> Iterator[dict[str, Any]]:
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    try:
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header[-_STREAM_HEADER:], _stream_key(key))
    except nacl.exceptions.CryptoError:
        raise CopyDamaged("has an unreadable stream header") from None
    while True:
        prefix = source.read(_LENGTH.size)
        if not prefix:
            raise CopyDamaged("is truncated (its final chunk is missing)")
        if len(prefix) != _LENGTH.size:
            raise CopyDamaged("is truncated")
        (length,) = _LENGTH.unpack(prefix)
        if not _ABYTES < length <= MAX_CHUNK_BYTES + _ABYTES:
            raise CopyDamaged("holds a chunk of impossible length (damaged)")
        try:
            plain, tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, source.exactly(length), header)
        except nacl.exceptions.CryptoError:
            raise CopyDamaged("does not decrypt (damaged, altered, reordered or mixed with another file)") from None
        yield _inflate(plain)
        if tag == _FINAL:
            if source.read(1):
                raise CopyDamaged("has data after its final chunk")
            return


def read_documents(source: HashingReader, key_for: Callable[[str], bytes]) -> Iterator[dict[str, Any]]:
    """The documents of a stored file (version 1 or 2), one at a time; raises CopyDamaged.

    Every document yielded is authentic; a damaged file raises at the first bad chunk, a
    truncated one after its last intact chunk, so callers commit only once the iterator ends.
    """
    start = source.exactly(6)
    if start[:4] != MAGIC or start[4] not in (1, VERSION):
        raise CopyDamaged("is not a ClearCard backup file (bad header)")
    raw_id = source.exactly(start[5])
    key_id = raw_id.decode("ascii", errors="replace")
    if start[4] == 1:
        rest = source.read(MAX_LEGACY_BYTES + 1)
        if len(rest) > MAX_LEGACY_BYTES:
            raise CopyDamaged("is larger than any version 1 backup")
        yield from legacy_documents(start + raw_id + rest, key_for)
        return
    header = start + raw_id + source.exactly(_STREAM_HEADER)
    yield from _stream_documents(source, header, key_for(key_id))
