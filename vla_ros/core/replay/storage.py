"""Where `Bag` gets its connections, times and raw messages from.

`DirectSource` reads the rosbag2 layouts replay meets most, a bag directory of uncompressed sqlite3 or indexed mcap
files, without copying payloads: mcap files are memory-mapped and a message is a memoryview of its bytes in the map
(or in its decompressed chunk), so a camera frame costs nothing until an observation uses it; sqlite3 rows come
straight from the stdlib driver. The summary (schemas, channels, chunk index) comes from the official `mcap` reader;
chunk records are walked here because `mcap`'s own iteration copies every payload into a new bytes object. Like the
official readers by default, chunk CRCs are not verified (that alone would read every byte of every frame); a
damaged record structure, a wrong chunk length or a failed decompression is an error. The bag's metadata.yaml gives
topics, counts and times, its message definitions are parsed once per process (`bag_typestore`).

`RosbagsSource` (rosbags' AnyReader) reads everything else: a single .db3 / .mcap file given without its directory,
rosbag2-compressed bags, mcap files without a summary. `open_source` picks the direct source when it can and falls
back otherwise, so an unusual or broken bag gets rosbags' own diagnosis. Both give the same messages in the same
order: by log time, ties in file order (mcap: chunk offset, then position in the chunk; sqlite3: row id), split files
one after the other.
"""

from __future__ import annotations

import functools
import heapq
import mmap
import sqlite3
import struct
from pathlib import Path, PurePath
from typing import Iterator, NamedTuple, Sequence

import yaml

_U64 = struct.Struct("<Q")
_MESSAGE_HEADER = struct.Struct("<HIQ")  # channel id, sequence, log time (publish time follows)
_MESSAGE_OPCODE, _MESSAGE_HEADER_SIZE = 0x05, 22  # + publish time (8)
_DEFINITION_FORMATS = {"ros2msg": "msg", "ros2idl": "idl", "omgidl": "idl"}


class Connection(NamedTuple):
    topic: str  # as recorded
    msgtype: str
    count: int
    latched: bool  # offered transient-local QoS


class Unsupported(Exception):
    """A layout DirectSource does not read; rosbags reads it instead."""


@functools.cache
def jazzy_typestore():
    """One Jazzy typestore per process, so the deserializers rosbags generates for it (milliseconds per type) are
    generated once, not once per opened bag."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def supplemented(typestore):
    """`typestore` plus Jazzy's definitions of the types it lacks: a bag that embeds some definitions (rosbags then
    uses only those) can still carry topics of other types without one."""
    jazzy = jazzy_typestore()
    if typestore is not jazzy:
        known = typestore.fielddefs
        typestore.register({name: fields for name, fields in jazzy.fielddefs.items() if name not in known})
    return typestore


@functools.lru_cache(maxsize=64)
def bag_typestore(definitions: tuple[tuple[str, str, str], ...], digests: tuple[tuple[str, str], ...]):
    """The typestore of a bag's embedded definitions ((msgtype, "msg" | "idl", text) each), as rosbags' AnyReader
    builds it, with each recorded RIHS01 digest checked; Jazzy's when the bag embeds none. Cached: a fleet of bags
    from one recorder parses its definitions once per process."""
    from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

    if not definitions:
        return jazzy_typestore()
    types = {}
    for msgtype, form, text in definitions:
        if form == "msg":
            types.update(get_types_from_msg(text, msgtype))
            continue
        separator = "=" * 80 + "\n"
        parts = [part.split("\n", 1)[1] for part in text.split(separator)[1:]] \
            if text.startswith(f"{separator}IDL: ") else [text]
        for idl in parts:
            types.update(get_types_from_idl(idl))
    typestore = get_typestore(Stores.EMPTY)
    typestore.register(types)
    for msgtype, digest in digests:
        if (have := typestore.hash_rihs01(msgtype)) != digest:
            raise ValueError(f"message type {msgtype!r} hash mismatch {have} != {digest}")
    return supplemented(typestore)


class _McapFile:
    """An indexed mcap file, memory-mapped."""

    def __init__(self, path: Path):
        from mcap.reader import SeekingReader

        with path.open("rb") as handle:
            summary = SeekingReader(handle).get_summary()
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        if summary is None or not summary.chunk_indexes:
            self.close()
            raise Unsupported("mcap file without a chunk index")
        if any(c.compression not in ("", "zstd", "lz4") for c in summary.chunk_indexes):
            self.close()
            raise Unsupported("unknown chunk compression")
        self._channels, self._schemas, self._chunks = summary.channels, summary.schemas, summary.chunk_indexes

    def definitions(self) -> dict[str, tuple[str, str]]:
        """msgtype -> (format, text) of the schemas the channels use."""
        out = {}
        for channel in self._channels.values():
            schema = self._schemas.get(channel.schema_id)
            if schema is not None and schema.encoding in _DEFINITION_FORMATS:
                out.setdefault(schema.name, (_DEFINITION_FORMATS[schema.encoding], schema.data.decode()))
        return out

    def messages(self, wanted: dict[tuple[str, str], int]) -> Iterator[tuple[int, int, memoryview]]:
        """(connection index, log time ns, payload) of the channels `wanted` maps by (topic, msgtype)."""
        channels = {}
        for channel_id, channel in self._channels.items():
            schema = self._schemas.get(channel.schema_id)
            index = wanted.get((channel.topic, schema.name if schema else ""))
            if index is not None:
                channels[channel_id] = index
        chunks = [(i, c) for i, c in enumerate(self._chunks)
                  if not c.message_index_offsets or any(k in channels for k in c.message_index_offsets)]
        merged = heapq.merge(*(self._chunk(chunk, order, channels) for order, chunk in chunks))
        for log_time, _, position, index, payload in merged:
            if position >= 0:  # not a chunk's opening marker
                yield index, log_time, payload

    def _chunk(self, chunk, order: int, channels: dict[int, int]):
        """The chunk's messages of `channels` by log time (stable), keyed for merging with the other chunks; first a
        marker at the chunk's start time, so the merge decompresses a chunk only when its time comes."""
        yield chunk.message_start_time, order, -1, -1, None
        start = chunk.chunk_start_offset + 9 + 40 + len(chunk.compression)  # opcode, length, fixed chunk fields
        (size,) = _U64.unpack_from(self._map, start - 8)
        if size != chunk.compressed_size or start + size > len(self._map):
            raise ValueError(f"chunk at offset {chunk.chunk_start_offset}: records length {size} does not match the "
                             f"index ({chunk.compressed_size})")
        records = memoryview(self._map)[start:start + size]
        if chunk.compression == "zstd":
            import zstandard

            records = memoryview(zstandard.decompress(records, max_output_size=chunk.uncompressed_size))
        elif chunk.compression == "lz4":
            import lz4.frame

            records = memoryview(lz4.frame.decompress(records))
        if len(records) != chunk.uncompressed_size:
            raise ValueError(f"chunk at offset {chunk.chunk_start_offset}: {len(records)} bytes, expected "
                             f"{chunk.uncompressed_size}")
        found, position, end = [], 0, len(records)
        while position < end:
            opcode = records[position]
            (length,) = _U64.unpack_from(records, position + 1)
            body, position = position + 9, position + 9 + length
            if position > end or not 0x01 <= opcode <= 0x0F:
                raise ValueError(f"chunk at offset {chunk.chunk_start_offset}: broken record at {body - 9}")
            if opcode == _MESSAGE_OPCODE:
                if length < _MESSAGE_HEADER_SIZE:
                    raise ValueError(f"chunk at offset {chunk.chunk_start_offset}: message record of {length} bytes")
                channel, _, log_time = _MESSAGE_HEADER.unpack_from(records, body)
                index = channels.get(channel)
                if index is not None:
                    found.append((log_time, order, len(found), index, records[body + _MESSAGE_HEADER_SIZE:position]))
        found.sort(key=lambda m: m[0])  # stable: equal times keep their record order
        yield from found

    def close(self) -> None:
        try:
            self._map.close()
        except BufferError:  # payload views still alive (e.g. an observation image): the map goes with the last one
            pass


class _Sqlite3File:
    """An uncompressed rosbag2 sqlite3 database, read-only."""

    def __init__(self, path: Path):
        self._db = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)
        # sqlite reads the pages of a blob through a memory map instead of a read() per page: a camera frame spans
        # hundreds of overflow pages, and reading them so measured 2.5x faster
        self._db.execute(f"PRAGMA mmap_size = {path.stat().st_size}")
        self._topics = {row[0]: (row[1], row[2]) for row in self._db.execute("SELECT id, name, type FROM topics")}
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        self._definitions = {}
        if "message_definitions" in tables:
            for msgtype, encoding, text in self._db.execute(
                    "SELECT topic_type, encoding, encoded_message_definition FROM message_definitions ORDER BY id"):
                if encoding in _DEFINITION_FORMATS:
                    self._definitions.setdefault(msgtype, (_DEFINITION_FORMATS[encoding], text))

    def definitions(self) -> dict[str, tuple[str, str]]:
        return self._definitions

    def messages(self, wanted: dict[tuple[str, str], int]) -> Iterator[tuple[int, int, bytes]]:
        ids = {topic_id: wanted[key] for topic_id, key in self._topics.items() if key in wanted}
        if not ids:
            return
        rows = self._db.execute(f"SELECT topic_id, timestamp, data FROM messages WHERE topic_id IN "
                                f"({', '.join('?' * len(ids))}) ORDER BY timestamp, id", tuple(ids))
        for topic_id, log_time, data in rows:
            yield ids[topic_id], log_time, data

    def close(self) -> None:
        self._db.close()


def _latched(profiles) -> bool:
    """Whether offered QoS profiles (metadata.yaml's list, or the YAML string ROS 2 writes) are transient local,
    read as rosbags reads them (durability 1 or "transient_local")."""
    if isinstance(profiles, str):
        profiles = yaml.load(profiles, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or []
    return any(str(p.get("durability")).lower() in ("1", "transient_local") for p in profiles if isinstance(p, dict))


class DirectSource:
    """A rosbag2 directory (metadata.yaml already parsed) of uncompressed sqlite3 files or indexed mcap files."""

    kind = "direct"

    def __init__(self, path: Path, metadata: dict):
        info = metadata["rosbag2_bagfile_information"]
        if info["version"] > 9 or (info.get("compression_mode") or "none").lower() != "none":
            raise Unsupported("rosbag2 compression or an unknown metadata version")
        topics = [t["topic_metadata"] for t in info["topics_with_message_count"]]
        if any(t["serialization_format"] != "cdr" for t in topics):
            raise Unsupported("a serialization format other than CDR")
        self.connections = [Connection(t["name"], t["type"], item["message_count"],
                                       _latched(t.get("offered_qos_profiles") or []))
                            for t, item in zip(topics, info["topics_with_message_count"])]
        count = info["message_count"]
        start, duration = info["starting_time"]["nanoseconds_since_epoch"], info["duration"]["nanoseconds"]
        # as rosbags: end is one nanosecond past the last message
        self.message_count = count
        self.start_ns, self.end_ns = (start, start + duration + 1) if count else (2**63 - 1, 0)
        opener = _McapFile if info["storage_identifier"] == "mcap" else _Sqlite3File
        self._files = []
        try:
            for name in info["relative_file_paths"]:
                self._files.append(opener(path / PurePath(name).name))
            definitions = {}
            for storage in self._files:
                for msgtype, definition in storage.definitions().items():
                    definitions.setdefault(msgtype, definition)
            digests = {t["type"]: t.get("type_description_hash") for t in topics}
            self.typestore = bag_typestore(
                tuple(sorted((msgtype, *definition) for msgtype, definition in definitions.items())),
                tuple(sorted((m, d) for m, d in digests.items() if d and m in definitions)))
        except BaseException:
            self.close()
            raise

    def messages(self, indexes: Sequence[int]) -> Iterator[tuple[int, int, bytes | memoryview]]:
        wanted = {(self.connections[i].topic, self.connections[i].msgtype): i for i in indexes}
        for storage in self._files:  # split files in order, as rosbag2 wrote them
            yield from storage.messages(wanted)

    def close(self) -> None:
        for storage in self._files:
            storage.close()


class RosbagsSource:
    """Any bag rosbags reads, through its AnyReader."""

    kind = "rosbags"

    def __init__(self, path: Path):
        from rosbags.highlevel import AnyReader
        from rosbags.interfaces import QosDurability

        self._reader = AnyReader([path], default_typestore=jazzy_typestore())
        self._reader.open()
        self.typestore = self._reader.typestore
        if any(c.msgtype not in self.typestore.fielddefs for c in self._reader.connections):
            supplemented(self.typestore)
        self._handles = list(self._reader.connections)
        self.connections = [
            Connection(c.topic, c.msgtype, c.msgcount,
                       any(getattr(p, "durability", None) == QosDurability.TRANSIENT_LOCAL
                           for p in getattr(c.ext, "offered_qos_profiles", None) or []))
            for c in self._handles]
        self.message_count = self._reader.message_count
        self.start_ns, self.end_ns = self._reader.start_time, self._reader.end_time

    def messages(self, indexes: Sequence[int]) -> Iterator[tuple[int, int, bytes]]:
        index_of = {id(self._handles[i]): i for i in indexes}
        for connection, log_time, raw in self._reader.messages(connections=[self._handles[i] for i in indexes]):
            yield index_of[id(connection)], log_time, raw

    def close(self) -> None:
        self._reader.close()


READERS = ("auto", "direct", "rosbags")


def open_source(path: Path, metadata: dict | None, reader: str = "auto") -> DirectSource | RosbagsSource:
    """The direct source for a bag directory it can read (`metadata`: its parsed metadata.yaml), else rosbags';
    `reader` "direct" or "rosbags" insists on one (the benchmark and the tests compare them)."""
    if reader not in READERS:
        raise ValueError(f"bag reader: expected one of {', '.join(READERS)}, got {reader!r}")
    if reader != "rosbags" and metadata is not None:
        try:
            return DirectSource(path, metadata)
        except Exception:  # noqa: BLE001 - unsupported or damaged: rosbags reads it or names the problem
            if reader == "direct":
                raise
    if reader == "direct":
        raise Unsupported("a single storage file: only rosbags reads it")
    return RosbagsSource(path)
