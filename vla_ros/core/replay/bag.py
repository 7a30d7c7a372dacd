"""Reading rosbag2 recordings (sqlite3 and mcap) for replay.

`storage.open_source` does the storage work: bag directories of uncompressed sqlite3 or indexed mcap files are read
directly and zero-copy, anything else (single storage files, rosbag2 compression, unindexed mcap) through rosbags'
AnyReader; both give the same messages in the same order. This module adds what replay needs on top: topic remaps,
one-line errors for bad bags, lazy deserialisation (a 30 Hz camera topic is read but only the frames an observation
uses are decoded; their capture stamps come straight from the CDR bytes, `raw_header_stamp`), a CDR decoder that
accepts the trailing bytes ROS 2's own serializer leaves (see `Bag.decode`), and deserializers shared across bags
(see `Bag._decoder`).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, NamedTuple

import yaml

from vla_ros.core.errors import VlaRosError, one_line
from vla_ros.core.replay.storage import jazzy_typestore, open_source

STORAGES = ("sqlite3", "mcap")
STORAGE_BY_SUFFIX = {".db3": "sqlite3", ".mcap": "mcap"}
# What a malformed CDR payload raises inside rosbags' generated deserializers.
_DECODE_ERRORS = (struct.error, UnicodeDecodeError, ValueError, IndexError, TypeError, OverflowError, KeyError)
_ENCAPSULATIONS = (b"\x00\x00", b"\x00\x01")  # plain CDR, big / little endian (byte 1 is the endianness flag)
_STAMP = {0: struct.Struct(">iI"), 1: struct.Struct("<iI")}  # builtin_interfaces/Time: int32 sec, uint32 nanosec


class BagError(VlaRosError):
    """A bag that cannot be replayed: missing, corrupt, unsupported storage, missing or mistyped topics."""


class MessageDecodeError(VlaRosError):
    """One message whose payload does not deserialize as its topic's type (counted and skipped by replay)."""


@dataclass(frozen=True)
class BagTopic:
    name: str  # after remapping
    recorded_name: str  # as stored in the bag
    msgtype: str
    count: int
    latched: bool = False  # recorded from a transient-local publisher (e.g. an instruction topic)


class BagMessage(NamedTuple):
    """One recorded message, not yet deserialized. `log_time` is the recorder's receive time in seconds; `raw` may be
    a view into the bag's storage, valid while the bag is open."""

    topic: str  # after remapping
    msgtype: str
    log_time_ns: int
    raw: bytes | memoryview

    @property
    def log_time(self) -> float:
        return self.log_time_ns * 1e-9


def parse_remaps(items: Iterable[str]) -> dict[str, str]:
    """['/cam:=/camera/image', ...] -> {'/cam': '/camera/image'} (bag name -> name the chain expects)."""
    remaps = {}
    for item in items:
        source, sep, target = item.partition(":=")
        if not sep or not source.startswith("/") or not target.startswith("/"):
            raise BagError(f"--remap {item!r}: expected FROM:=TO with absolute topic names, "
                           "e.g. /cam:=/camera/image_raw")
        if source in remaps:
            raise BagError(f"--remap {item!r}: topic {source} is remapped twice")
        remaps[source] = target
    return remaps


def _storage_of(path: Path) -> tuple[str, dict | None]:
    """The storage plugin of a bag directory or file, and its parsed metadata.yaml (None for a single storage file),
    with a one-line error for anything unusable."""
    if not path.exists():
        raise BagError(f"bag {path}: no such file or directory")
    if path.is_file():
        storage = STORAGE_BY_SUFFIX.get(path.suffix)
        if storage is None:
            raise BagError(f"bag {path}: unknown storage file type {path.suffix!r}; expected a rosbag2 directory, "
                           f"or a .db3 (sqlite3) or .mcap file")
        return storage, None
    metadata_path = path / "metadata.yaml"
    if not metadata_path.is_file():
        raise BagError(f"bag {path}: directory has no metadata.yaml; expected a rosbag2 bag directory")
    try:
        metadata = yaml.load(metadata_path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        info = metadata["rosbag2_bagfile_information"]
        storage = info["storage_identifier"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, KeyError) as exc:
        raise BagError(f"bag {path}: unreadable metadata.yaml ({type(exc).__name__}: {exc})") from None
    if storage not in STORAGES:
        raise BagError(f"bag {path}: unknown storage {storage!r} in metadata.yaml; "
                       f"expected one of {', '.join(STORAGES)}")
    return storage, metadata


def _cdr_body(message: BagMessage, minimum: int = 0) -> int:
    """The endianness flag (1 little, 0 big) of a CDR payload of at least `minimum` body bytes; else
    MessageDecodeError."""
    raw = message.raw
    if len(raw) < 4 + minimum or bytes(raw[:2]) not in _ENCAPSULATIONS:
        problem = "is truncated" if len(raw) >= 4 and bytes(raw[:2]) in _ENCAPSULATIONS else \
            "is not CDR (bad encapsulation header)"
        raise MessageDecodeError(f"topic {message.topic}: message at t={message.log_time:.6f} s {problem}")
    return raw[1]


def raw_header_stamp(message: BagMessage) -> float | None:
    """header.stamp in seconds of a message that starts with a std_msgs/Header (sensor_msgs/Image, CompressedImage,
    JointState), read from its CDR bytes without deserializing the rest (a 640x480 frame is ~1 MB); None when unset
    (0), exactly as `messages.header_stamp` on the deserialized message.

    After the 4-byte encapsulation header the body starts with builtin_interfaces/Time (int32 sec, uint32 nanosec),
    at offset 0 of the body, so without alignment padding, in the byte order the header's flag gives.
    MessageDecodeError when the bytes cannot hold it. Nothing after the stamp is checked.
    """
    sec, nanosec = _STAMP[_cdr_body(message, 8)].unpack_from(message.raw, 4)
    seconds = int(sec) + int(nanosec) * 1e-9
    return seconds if seconds > 0 else None


class Bag:
    """An open rosbag2 recording with remapped topic names. Use as a context manager."""

    def __init__(self, path: str | Path, remaps: Mapping[str, str] | None = None, reader: str = "auto"):
        """`reader`: "auto" (direct where it can, else rosbags), or force "direct" / "rosbags" (for comparisons)."""
        self.path = Path(path)
        self.storage, metadata = _storage_of(self.path)
        self._remaps = dict(remaps or {})
        try:
            self._source = open_source(self.path, metadata, reader)
        except Exception as exc:  # rosbags / sqlite / mcap raise many types for a corrupt bag; all mean "unreadable"
            raise BagError(f"bag {self.path}: cannot open {self.storage} bag ({one_line(exc)})") from None
        self.reader = self._source.kind  # "direct" or "rosbags" (see vla_ros.core.replay.storage)
        self._typestore = self._source.typestore
        self._connections: dict[str, list[int]] = {}
        self.topics: dict[str, BagTopic] = {}
        connections = self._source.connections
        for index, connection in enumerate(connections):
            name = self._remaps.get(connection.topic, connection.topic)
            self._connections.setdefault(name, []).append(index)
        for name, indexes in self._connections.items():
            types = sorted({connections[i].msgtype for i in indexes})
            if len(types) > 1:
                raise BagError(f"bag {self.path}: topic {name} is recorded with several types ({', '.join(types)})")
            first = connections[indexes[0]]
            self.topics[name] = BagTopic(name, first.topic, types[0], sum(connections[i].count for i in indexes),
                                         any(connections[i].latched for i in indexes))
        unused = sorted(set(self._remaps) - {c.topic for c in connections})
        if unused:
            raise BagError(f"bag {self.path}: --remap names topic {unused[0]}, which the bag does not have "
                           f"(topics: {', '.join(sorted(c.topic for c in connections))})")
        self.messages_with_trailing_bytes = 0
        self._decoders: dict[str, tuple[object, object]] = {}  # msgtype -> (msgdef, its typestore)

    # --- metadata -------------------------------------------------------------------------------------------------

    @property
    def start_time(self) -> float:
        return self._source.start_ns * 1e-9

    @property
    def end_time(self) -> float:
        return self._source.end_ns * 1e-9

    @property
    def duration(self) -> float:
        source = self._source
        return max(0.0, (source.end_ns - source.start_ns) * 1e-9) if source.message_count else 0.0

    @property
    def message_count(self) -> int:
        return self._source.message_count

    def topic(self, name: str, msgtypes: Iterable[str], purpose: str) -> BagTopic:
        """The topic `name`, which must exist with one of `msgtypes`; a one-line BagError otherwise."""
        msgtypes = tuple(msgtypes)
        info = self.topics.get(name)
        if info is None:
            available = ", ".join(f"{t.name} [{t.msgtype}]" for t in self.topics.values()) or "none"
            raise BagError(f"bag {self.path}: no topic {name} ({purpose}, expected {' or '.join(msgtypes)}); "
                           f"topics in the bag: {available}; use --remap FROM:={name} if it was recorded under "
                           "another name")
        if info.msgtype not in msgtypes:
            raise BagError(f"bag {self.path}: topic {name} ({purpose}) has type {info.msgtype}, expected "
                           f"{' or '.join(msgtypes)}")
        return info

    def can_decode(self, msgtype: str) -> bool:
        return msgtype in self._typestore.fielddefs

    # --- messages -------------------------------------------------------------------------------------------------

    def messages(self, topics: Iterable[str]) -> Iterator[BagMessage]:
        """Messages of `topics` (remapped names) in recording (log time) order, payloads still serialized."""
        indexes = [i for name in topics for i in self._connections.get(name, ())]
        if not indexes:
            return
        connections = self._source.connections
        names = {i: self._remaps.get(connections[i].topic, connections[i].topic) for i in indexes}
        types = {i: connections[i].msgtype for i in indexes}
        last_time = None
        try:
            for index, log_time_ns, raw in self._source.messages(indexes):
                last_time = log_time_ns
                yield BagMessage(names[index], types[index], log_time_ns, raw)
        except Exception as exc:  # a corrupt storage surfaces mid-iteration with storage-specific exception types
            where = f"after t={last_time * 1e-9:.6f} s" if last_time is not None else "at the first message"
            raise BagError(f"bag {self.path}: corrupt {self.storage} data {where} ({one_line(exc)})") from None

    def decode(self, message: BagMessage) -> object:
        """Deserialize one message; MessageDecodeError when its bytes are not a valid CDR `msgtype`.

        rosbags' own `deserialize_cdr` rejects payloads with more than 3 bytes after the message. Messages serialized
        by ROS 2 itself (rclpy.serialization / rmw_fastrtps, e.g. bags written with rosbag2_py) carry up to several
        extra bytes: Fast CDR sizes the buffer with a worst-case alignment estimate (ros2/rosbag2#1025). So decode with
        the type's generated deserializer and accept a tail, counting such messages.
        """
        little_endian = _cdr_body(message)
        raw = memoryview(message.raw)
        try:
            msgdef, typestore = self._decoder(message.msgtype)
        except Exception as exc:  # rosbags' TypesysError for a type with no definition
            raise MessageDecodeError(f"topic {message.topic}: no definition for {message.msgtype} "
                                     f"({one_line(exc)})") from None
        deserialize = msgdef.deserialize_cdr_le if little_endian else msgdef.deserialize_cdr_be
        try:
            decoded, end = deserialize(raw[4:], 0, msgdef.cls, typestore)
        except _DECODE_ERRORS as exc:
            raise MessageDecodeError(f"topic {message.topic}: message at t={message.log_time:.6f} s does not "
                                     f"deserialize as {message.msgtype} ({one_line(exc)})") from None
        if end + 4 > len(raw):
            raise MessageDecodeError(f"topic {message.topic}: message at t={message.log_time:.6f} s is truncated")
        if len(raw) - 4 - end > 3:
            self.messages_with_trailing_bytes += 1
        return decoded

    def _decoder(self, msgtype: str) -> tuple[object, object]:
        decoder = self._decoders.get(msgtype)
        if decoder is None:
            decoder = self._decoders[msgtype] = _decoder(self._typestore, msgtype)
        return decoder

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> "Bag":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@functools.lru_cache(maxsize=256)
def _decoder(typestore, msgtype: str) -> tuple[object, object]:
    """(msgdef, typestore) that deserialize `msgtype` of a bag with `typestore`: the process-wide Jazzy ones when the
    bag defines the type exactly as Jazzy does (same RIHS01 hash, which covers nested types: the usual case), else ones
    generated from the bag's own definition. Cached per typestore (bags of one recorder share theirs, see
    storage.bag_typestore), which the cache also keeps alive."""
    jazzy = jazzy_typestore()
    try:
        same = msgtype in jazzy.fielddefs and jazzy.hash_rihs01(msgtype) == typestore.hash_rihs01(msgtype)
    except Exception:  # a definition rosbags cannot hash (e.g. a nested type is missing): use the bag's own
        same = False
    typestore = jazzy if same else typestore
    return typestore.get_msgdef(msgtype), typestore
