"""Removing a HEIC/HEIF file's metadata items and thumbnails by rewriting its boxes, the picture untouched.

A HEIF file (ISO/IEC 23008-12) keeps its picture and its metadata as *items* listed in the ``meta``
box: EXIF is an ``Exif`` item, XMP a ``mime`` item, a thumbnail an image item with a ``thmb``
reference to the picture. :func:`strip_heif_items` deletes those items from every list that names
them (``iinf``, ``iloc``, ``iref``, ``ipma``), zeroes their bytes in ``mdat`` or ``idat``, and
replaces the bytes the ``meta`` box lost with a ``free`` box after it, so every offset in the file
still points where it did. The picture's coded data, its properties (rotation, colour, size) and its
auxiliary images (alpha, depth) are kept byte for byte. Top-level boxes other than the file type,
the ``meta`` box and the media data (``uuid`` boxes, for one) become ``free`` boxes of the same
size, zeroed.

Only still images are rewritten: a file with an image sequence (``moov``) or entity groups
(``grpl``) raises ``ValueError``, and the caller re-encodes it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["strip_heif_items"]

# Item types that hold metadata rather than pictures: EXIF, XMP (and other MIME data), URIs.
_METADATA_ITEMS = frozenset({b"Exif", b"mime", b"uri "})
_KEEP_TOP = frozenset({b"ftyp", b"meta", b"mdat"})
_USES = frozenset({b"dimg", b"base"})  # the source is made from its targets
_BELONGS_TO = frozenset({b"auxl", b"cdsc", b"thmb"})  # the source serves its targets


@dataclass(frozen=True)
class _Box:
    kind: bytes
    start: int  # of the box, header included
    body: int  # of its content, after the header (and, for a full box, not past version and flags)
    end: int


def strip_heif_items(data: bytes) -> bytes:
    """The HEIF file without its EXIF, XMP and other metadata items, nor its thumbnails.

    Args:
        data: a HEIC/HEIF file.

    Returns:
        The file's bytes, same length, the picture's boxes and data unchanged; ``data`` itself
        when there was nothing to remove.

    Raises:
        ValueError: a box that cannot be walked, or a structure this rewrite does not handle
            (an image sequence, entity groups, items in another file).
    """
    top = _children(data, 0, len(data))
    kinds = [box.kind for box in top]
    if b"moov" in kinds or kinds.count(b"meta") != 1:
        raise ValueError("not a single still HEIF image")
    meta = top[kinds.index(b"meta")]
    parts = {box.kind: box for box in _children(data, meta.body + 4, meta.end)}
    if b"grpl" in parts or not {b"iinf", b"iloc", b"pitm"} <= parts.keys():
        raise ValueError("HEIF meta box without the expected item lists")
    types = _item_types(data, parts[b"iinf"])
    references = _references(data, parts[b"iref"]) if b"iref" in parts else []
    primary = _primary(data, parts[b"pitm"])
    removed = {item for item, kind in types.items() if kind in _METADATA_ITEMS}
    removed |= {source for kind, source, _ in references if kind == b"thmb"}
    removed |= _only_used_by(removed, references, primary)
    removed.discard(primary)
    unknown_top = [box for box in top if box.kind not in _KEEP_TOP]
    if not removed and not unknown_top:
        return data

    out = bytearray(data)
    for box in unknown_top:  # same size, so nothing after it moves
        out[box.start : box.end] = _free(box.end - box.start)
    if removed:
        _remove_items(data, out, meta, parts, removed)
    return bytes(out)


def _remove_items(data: bytes, out: bytearray, meta: _Box, parts: dict[bytes, _Box], removed: set[int]) -> None:
    """Write into ``out`` the ``meta`` box without the ``removed`` items, a ``free`` box after it, their data zeroed."""
    iloc, extents = _iloc_without(data, parts[b"iloc"], removed)
    idat = parts.get(b"idat")
    for method, offset, length in extents:
        base = 0 if method == 0 else idat.body if idat is not None and method == 1 else -1
        if base < 0 or length == 0 or base + offset + length > len(data):
            raise ValueError("an item's data cannot be found to be removed")
        out[base + offset : base + offset + length] = bytes(length)
    rewritten = {
        b"iloc": iloc,
        b"iinf": _iinf_without(data, parts[b"iinf"], removed),
        b"iref": _iref_without(data, parts[b"iref"], removed) if b"iref" in parts else b"",
        b"iprp": _iprp_without(data, parts[b"iprp"], removed) if b"iprp" in parts else b"",
    }
    children = [rewritten.get(box.kind, out[box.start : box.end]) for box in _children(data, meta.body + 4, meta.end)]
    new_meta = _box(b"meta", bytes(out[meta.body : meta.body + 4]) + b"".join(children))
    lost = (meta.end - meta.start) - len(new_meta)
    if lost < 8:  # every removed item shortens iinf and iloc by more than a box header
        raise ValueError("the meta box did not shrink enough for a free box")
    out[meta.start : meta.end] = new_meta + _free(lost)


def _children(data: bytes, start: int, end: int) -> list[_Box]:
    """The boxes in ``data[start:end]``, in order."""
    boxes: list[_Box] = []
    pos = start
    while pos < end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise ValueError(f"HEIF box {kind!r} out of bounds")
        boxes.append(_Box(kind, pos, pos + header, pos + size))
        pos += size
    return boxes


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _free(size: int) -> bytes:
    return struct.pack(">I4s", size, b"free") + bytes(size - 8)


def _item_id(data: bytes, at: int, wide: bool) -> tuple[int, int]:
    """An item ID (16 or 32 bits) at ``at``, and the position after it."""
    if wide:
        return struct.unpack_from(">I", data, at)[0], at + 4
    return struct.unpack_from(">H", data, at)[0], at + 2


def _primary(data: bytes, pitm: _Box) -> int:
    return _item_id(data, pitm.body + 4, data[pitm.body] != 0)[0]


def _infe_entries(data: bytes, iinf: _Box) -> list[_Box]:
    count_size = 2 if data[iinf.body] == 0 else 4
    return _children(data, iinf.body + 4 + count_size, iinf.end)


def _item_types(data: bytes, iinf: _Box) -> dict[int, bytes]:
    """Item ID -> item type, from the ``infe`` entries (versions 2 and 3)."""
    types: dict[int, bytes] = {}
    for infe in _infe_entries(data, iinf):
        version = data[infe.body]
        if version < 2:
            raise ValueError("HEIF item info before version 2 has no item type")
        item, at = _item_id(data, infe.body + 4, version >= 3)
        types[item] = data[at + 2 : at + 6]  # after the protection index
    return types


def _iinf_without(data: bytes, iinf: _Box, removed: set[int]) -> bytes:
    version = data[iinf.body]
    kept = [
        data[infe.start : infe.end]
        for infe in _infe_entries(data, iinf)
        if _item_id(data, infe.body + 4, data[infe.body] >= 3)[0] not in removed
    ]
    count = struct.pack(">H" if version == 0 else ">I", len(kept))
    return _box(b"iinf", data[iinf.body : iinf.body + 4] + count + b"".join(kept))


def _references(data: bytes, iref: _Box) -> list[tuple[bytes, int, list[int]]]:
    """(reference type, from item, to items) of each reference in ``iref``."""
    wide = data[iref.body] != 0
    found = []
    for ref in _children(data, iref.body + 4, iref.end):
        source, at = _item_id(data, ref.body, wide)
        (count,) = struct.unpack_from(">H", data, at)
        at += 2
        targets = []
        for _ in range(count):
            target, at = _item_id(data, at, wide)
            targets.append(target)
        found.append((ref.kind, source, targets))
    return found


def _only_used_by(removed: set[int], references: list[tuple[bytes, int, list[int]]], primary: int) -> set[int]:
    """Items that belong only to removed items, transitively: a removed grid's tiles, a thumbnail's alpha.

    A ``dimg`` or ``base`` reference makes its targets part of its source; an ``auxl``, ``cdsc`` or
    ``thmb`` reference makes its source part of its targets.
    """
    gone = set(removed)
    while True:
        kept_parts = {
            t for kind, source, targets in references if kind in _USES and source not in gone for t in targets
        }
        orphans = {t for kind, source, targets in references if kind in _USES and source in gone for t in targets}
        orphans -= kept_parts
        for kind, source, targets in references:
            if kind in _BELONGS_TO and all(t in gone for t in targets):
                orphans.add(source)
        orphans -= gone | {primary}
        if not orphans:
            return gone - removed
        gone |= orphans


def _iref_without(data: bytes, iref: _Box, removed: set[int]) -> bytes:
    wide = data[iref.body] != 0
    id_format = ">I" if wide else ">H"
    kept = []
    for kind, source, targets in _references(data, iref):
        left = [t for t in targets if t not in removed]
        if source in removed or not left:
            continue
        body = struct.pack(id_format, source) + struct.pack(">H", len(left))
        kept.append(_box(kind, body + b"".join(struct.pack(id_format, t) for t in left)))
    return _box(b"iref", data[iref.body : iref.body + 4] + b"".join(kept))


def _iprp_without(data: bytes, iprp: _Box, removed: set[int]) -> bytes:
    children = []
    for box in _children(data, iprp.body, iprp.end):
        children.append(_ipma_without(data, box, removed) if box.kind == b"ipma" else data[box.start : box.end])
    return _box(b"iprp", b"".join(children))


def _ipma_without(data: bytes, ipma: _Box, removed: set[int]) -> bytes:
    version, flags = data[ipma.body], data[ipma.body + 3]
    (count,) = struct.unpack_from(">I", data, ipma.body + 4)
    at = ipma.body + 8
    kept = []
    for _ in range(count):
        start = at
        item, at = _item_id(data, at, version >= 1)
        associations = data[at]
        at += 1 + associations * (2 if flags & 1 else 1)
        if item not in removed:
            kept.append(data[start:at])
    if at > ipma.end:
        raise ValueError("HEIF ipma box out of bounds")
    return _box(b"ipma", data[ipma.body : ipma.body + 4] + struct.pack(">I", len(kept)) + b"".join(kept))


def _iloc_without(data: bytes, iloc: _Box, removed: set[int]) -> tuple[bytes, list[tuple[int, int, int]]]:
    """The ``iloc`` box without the removed items, and their extents: (construction method, offset, length)."""
    version = data[iloc.body]
    offset_size, length_size = data[iloc.body + 4] >> 4, data[iloc.body + 4] & 15
    base_size, index_size = data[iloc.body + 5] >> 4, (data[iloc.body + 5] & 15 if version in (1, 2) else 0)
    count_size = 4 if version == 2 else 2
    (count,) = struct.unpack_from(">I" if version == 2 else ">H", data, iloc.body + 6)
    at = iloc.body + 6 + count_size
    kept, extents = [], []
    for _ in range(count):
        start = at
        item, at = _item_id(data, at, version == 2)
        method = 0
        if version in (1, 2):
            method = struct.unpack_from(">H", data, at)[0] & 15
            at += 2
        reference_index = struct.unpack_from(">H", data, at)[0]
        at += 2
        base = _uint(data, at, base_size)
        at += base_size
        (extent_count,) = struct.unpack_from(">H", data, at)
        at += 2
        spans = []
        for _ in range(extent_count):
            at += index_size
            offset, length = _uint(data, at, offset_size), _uint(data, at + offset_size, length_size)
            at += offset_size + length_size
            spans.append((method, base + offset, length))
        if at > iloc.end:
            raise ValueError("HEIF iloc box out of bounds")
        if item not in removed:
            kept.append(data[start:at])
        elif reference_index != 0:
            raise ValueError("a HEIF item whose data is in another file")
        else:
            extents.extend(spans)
    count_bytes = struct.pack(">I" if version == 2 else ">H", len(kept))
    return _box(b"iloc", data[iloc.body : iloc.body + 6] + count_bytes + b"".join(kept)), extents


def _uint(data: bytes, at: int, size: int) -> int:
    """A big-endian unsigned integer of 0, 4 or 8 bytes."""
    if size not in (0, 4, 8):
        raise ValueError(f"HEIF iloc field of {size} bytes")
    return int.from_bytes(data[at : at + size], "big")
