"""Bounded line splitting for streamed batch files.

Lines end in LF, CRLF or a lone CR (HL7 v2 separates segments with CR; exports from
Windows use CRLF), so one reader serves NDJSON and HL7 batches. Memory stays bounded by
``max_len``: an over-long line is reported as ``None`` and its bytes are skipped, not kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

_EOL = re.compile(rb"\r\n|\r|\n")
BOM = b"\xef\xbb\xbf"  # the UTF-8 byte order mark some exporters write first
_CHUNK = 1 << 16  # bytes read per call


def read_lines(stream: BinaryIO, max_len: int) -> Iterator[tuple[int, bytes | None, int]]:
    """Yield ``(line_number, line, offset)`` from line 1: the line without its terminator
    (None when longer than ``max_len`` bytes) and the byte offset where it starts. A final
    line without terminator is yielded too."""
    number = 0
    buffer = bytearray()
    too_long = False
    base = 0  # bytes of the stream before the current chunk
    start = 0  # offset of the line being read
    pending_cr = False  # the last chunk ended in CR: a LF opening the next one belongs to it
    while data := stream.read(_CHUNK):
        position = 1 if pending_cr and data[:1] == b"\n" else 0
        start += position
        pending_cr = False
        while True:
            match = _EOL.search(data, position)
            end = match.start() if match else len(data)
            if not too_long:
                buffer += data[position:end]
                if len(buffer) > max_len:
                    too_long = True
                    buffer.clear()
            if match is None:
                break
            number += 1
            yield number, None if too_long else bytes(buffer), start
            buffer.clear()
            too_long = False
            pending_cr = match.group() == b"\r" and match.end() == len(data)
            position = match.end()
            start = base + position
        base += len(data)
    if buffer or too_long:
        yield number + 1, None if too_long else bytes(buffer), start
