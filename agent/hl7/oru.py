"""The ORU^R01 that carries a scored message's results to the hospital's interface engine.

What leaves the agent is the least the engine needs to file the result against the right
patient and order, nothing more:

- MSH: the agent as sender (the application and facility the incoming message addressed),
  the incoming sender as receiver (either side as configured instead, ``ResultAddressing``),
  a new control id, the incoming version, processing id and character set;
- PID: only PID-1 and PID-3 (the patient identifier list, copied byte for byte); no name,
  birth date, sex or address, which the engine already holds;
- OBR: the incoming placer and filler order numbers (OBR-2/3, from the first ORC or OBR that
  has them), the model as the universal service id, the result time and status ``F``;
- NTE: the incoming control id and each model version's bundle digest, so a result can be
  traced to the message and the exact signed model that produced it;
- OBX: one per output, as in the ACK (``hl7_ack.obx_segment``).

The incoming message is read by hand with its own delimiters, as ``hl7_ack`` reads its
header: copied fields keep their escapes and bytes (ISO-8859-1 round-trips every byte).
Refusals name the segment and field, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from agent.errors import Hl7Error
from agent.hl7.ack import (
    CHARSET,
    MessageHeader,
    ResultRow,
    escape,
    obx_segment,
    parse_header,
    reply_msh,
    reply_version,
)
from agent.types import Prediction


def build_result_message(
    message: bytes,
    predictions: Sequence[Prediction],
    *,
    now: datetime | None = None,
    control_id: str | None = None,
    addressing: ResultAddressing | None = None,
) -> bytes:
    """The ORU^R01 (segments joined by CR, no MLLP framing) reporting ``predictions`` made
    from ``message``, addressed as ``addressing`` says where it says anything.

    Raises ``Hl7Error`` when the result could not be filed safely: no usable MSH, no PID-3,
    or more than one PID (a batch of patients: one result message could not say whose each
    output is).
    """
    header = parse_header(message)
    if header is None or header.segment != "MSH":
        raise Hl7Error("the result needs the message's MSH segment")
    fs = header.field_sep
    lines = [line for line in re.split(r"[\r\n]+", message.decode(CHARSET)) if line]
    pids = [line.split(fs) for line in lines if line.startswith("PID" + fs)]
    if len(pids) != 1:
        raise Hl7Error(f"the result needs exactly one PID segment, the message has {len(pids)}")
    identifiers = _field(pids[0], 3)
    if not identifiers:
        raise Hl7Error("the result needs PID-3 (patient identifier list)")
    orders = [line.split(fs) for line in lines if line.startswith(("ORC" + fs, "OBR" + fs))]
    placer = next((f for f in (_field(o, 2) for o in orders) if f), "")
    filler = next((f for f in (_field(o, 3) for o in orders) if f), "")

    def esc(text: str) -> str:
        return escape(text, fs, header.encoding)

    comp = header.encoding[0]
    reply_to = header if addressing is None else addressing.applied(header)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S+0000")
    models = list(dict.fromkeys((p.model, p.version, p.bundle_digest) for p in predictions))
    service = comp.join((esc(models[0][0]), esc(models[0][0]), "L")) if models else ""
    message_type = "ORU^R01^ORU_R01" if reply_version(header) >= "2.4" else "ORU^R01"
    obr = ["OBR", "1", placer, filler, service] + [""] * 2 + [stamp] + [""] * 14
    obr += [stamp, "", "", "F"]  # OBR-22 result time, OBR-25 result status
    notes = [f"source message control id {header.control_id}"] + [
        f"model {m} {v} bundle sha256:{d}" for m, v, d in models
    ]
    rows = [
        ResultRow(i, name, value, p.model, p.version)
        for i, p in enumerate(predictions, start=1)
        for name, value in p.outputs.items()
    ]
    segments = [
        reply_msh(reply_to, message_type.replace("^", comp), now=now, control_id=control_id),
        fs.join(["PID", "1", "", identifiers]),
        fs.join(obr),
        *(fs.join(["NTE", str(i), "L", esc(text)]) for i, text in enumerate(notes, start=1)),
        *(obx_segment(header, i, row, stamp) for i, row in enumerate(rows, start=1)),
    ]
    return "\r".join(segments).encode(CHARSET) + b"\r"


@dataclass(frozen=True)
class ResultAddressing:
    """MSH-3..6 of the result message where the site sets them (None: as derived from the
    incoming message). Values are plain text; ``^`` separates components (an HD such as
    ``EDGE^1.2.3.4^ISO``) and becomes the message's component separator."""

    sending_application: str | None = None
    sending_facility: str | None = None
    receiving_application: str | None = None
    receiving_facility: str | None = None

    def applied(self, header: MessageHeader) -> MessageHeader:
        """``header`` readdressed so that a reply to it (``reply_msh`` swaps the sides)
        carries these values."""

        def value(configured: str | None, derived: str) -> str:
            if configured is None:
                return derived
            return header.encoding[0].join(
                escape(part, header.field_sep, header.encoding) for part in configured.split("^")
            )

        return replace(
            header,
            receiving_application=value(self.sending_application, header.receiving_application),
            receiving_facility=value(self.sending_facility, header.receiving_facility),
            sending_application=value(self.receiving_application, header.sending_application),
            sending_facility=value(self.receiving_facility, header.sending_facility),
        )


def _field(fields: list[str], n: int) -> str:
    """Field ``n`` of a non-MSH segment split on its field separator."""
    return fields[n] if len(fields) > n else ""
