"""Bounded line splitting for streamed batch files.

Lines end in LF, CRLF or a lone CR (HL7 v2 separates segments with CR; exports from
Windows use CRLF), so one reader serves NDJSON and HL7 batches. Memory stays bounded by
``max_len``: an over-long line is reported as ``None`` and its bytes are skipped, not kept.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

EOL = re.compile(rb"\r\n|\r|\n")
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
        ends = _Terminators(data)
        while True:
            end, after = ends.next(position)
            if after >= 0 and not buffer and not too_long and end - position <= max_len:
                number += 1  # the whole line is in this chunk: one copy, not three
                yield number, data[position:end], start
            else:
                if not too_long:
                    buffer += data[position:end]
                    if len(buffer) > max_len:
                        too_long = True
                        buffer.clear()
                if after < 0:
                    break
                number += 1
                yield number, None if too_long else bytes(buffer), start
                buffer.clear()
            too_long = False
            pending_cr = end + 1 == after == len(data) and data[end] == 0x0D  # a lone CR
            position = after
            start = base + position
        base += len(data)
    if buffer or too_long:
        yield number + 1, None if too_long else bytes(buffer), start


class _Terminators:
    """The line ends of one chunk, found with ``bytes.find`` (a regular expression's
    alternation scans a 25 kB line about a hundred times slower). Each kind's next position
    is remembered until the reading position passes it, so every byte is scanned once."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._lf = data.find(b"\n")
        self._cr = data.find(b"\r")

    def next(self, position: int) -> tuple[int, int]:
        """``(end, after)`` of the first terminator at or past ``position``: where the line
        ends and where the next begins; ``(len(data), -1)`` when the chunk has none."""
        data = self._data
        if 0 <= self._lf < position:
            self._lf = data.find(b"\n", position)
        if 0 <= self._cr < position:
            self._cr = data.find(b"\r", position)
        lf, cr = self._lf, self._cr
        if cr < 0 and lf < 0:
            return len(data), -1
        if cr < 0 or 0 <= lf < cr:
            return lf, lf + 1
        return cr, cr + 2 if lf == cr + 1 else cr + 1
