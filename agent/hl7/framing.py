"""MLLP release 1 framing: ``0x0B`` message ``0x1C 0x0D``. The one definition, used by the
listener (frames in, ACKs out) and the results sender (ORUs out, ACKs in)."""

from __future__ import annotations

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"


def frame(message: bytes) -> bytes:
    """``message`` wrapped for the wire."""
    return START_BLOCK + message + END_BLOCK


def unframe(data: bytes) -> bytes:
    """The message inside one frame's bytes (ending with the end block, when it does):
    what follows the first start block; when there is none, the whole content, so a
    peer's garbage is still answered (with AR unless it happens to be HL7)."""
    content = data.removesuffix(END_BLOCK)
    start = content.find(START_BLOCK)
    return content[start + 1 :] if start >= 0 else content.lstrip(b"\r\n\t ")
