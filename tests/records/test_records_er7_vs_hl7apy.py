"""The light ER7 splitter agrees with hl7apy's full parse on every field, repetition and
component of the fixtures (and of a message full of escapes, repetitions and empty
components): the speed-up costs no correctness."""

from __future__ import annotations

from pathlib import Path

import pytest
from hl7apy.parser import get_message_info, parse_segment

from agent.hl7.er7 import read_message, split_batch
from agent.limits import Limits
from agent.records import parse_records
from agent.types import RecordFormat

HL7 = Path(__file__).resolve().parents[2] / "fixtures" / "hl7"
TRICKY = "\r".join(
    [
        "MSH|^~\\&|LAB|HOSP|EDGE|HOSP|20260315120000+0000||ORU^R01^ORU_R01|C9|P|2.6",
        "PID|1||A1^^^H&1.2.3&ISO^MR~B2^^^X^PI||O\\T\\Brien^Pat^^^^^L~Alias^^^^^^A||19700101|M",
        "OBR|1|||24323-8^Panel^LN|||202603151000",
        "OBX|1|ST|X^Note^L||a\\F\\b\\S\\c\\R\\d\\E\\e||||||F",
        "OBX|2|CWE|Y^Coded^L^^^^^^Original text||C1^One^L~C2^Two^L||||||F",
        "OBX|3|NM|8867-4^^LN||72|/min^^UCUM|||||F|||20260315110000",
    ]
)


def _messages() -> list[str]:
    texts = [p.read_text() for p in sorted(HL7.glob("*.hl7")) if "malformed" not in p.name]
    return [m for text in [*texts, TRICKY] for m in split_batch(text)]


@pytest.mark.parametrize("message", _messages(), ids=lambda m: m.split("|", 10)[9])
def test_same_fields_as_hl7apy(message: str) -> None:
    ours = read_message(message)
    encoding, _, version = get_message_info(message)
    lines = message.split("\r")
    compared = 0
    for segment in ours.segments:
        if segment.name == "MSH":
            continue
        reference = parse_segment(
            lines[segment.position - 1], version=version, encoding_chars=encoding
        )
        by_number: dict[int, list[object]] = {}
        for field in reference.children:
            by_number.setdefault(int(field.name.rsplit("_", 1)[1]), []).append(field)
        for number, fields in by_number.items():
            reps = segment.repetitions(number)
            assert reps == [f.to_er7() for f in fields]  # type: ignore[attr-defined]
            for raw, field in zip(reps, fields, strict=True):
                mine = segment.components(raw, number)
                for component in field.children:  # type: ignore[attr-defined]
                    name = component.name
                    index = int(name.rsplit("_", 1)[1]) if name and "_" in name else 1
                    theirs = component.to_er7().split(encoding["SUBCOMPONENT"])[0]
                    assert mine[index - 1] == segment.encoding.unescape(theirs, "test")
                    compared += 1
    assert compared > 0


def test_tricky_message_converts() -> None:
    [record] = parse_records(TRICKY.encode(), RecordFormat.hl7v2, limits=Limits())
    assert record.patient is not None
    assert [n.get("family") for n in record.patient["name"]] == ["O&Brien", "Alias"]
    assert [n.get("use") for n in record.patient["name"]] == ["official", "anonymous"]
    assert [i["value"] for i in record.patient["identifier"]] == ["A1", "B2"]
    note, coded, number = record.observations
    assert note["valueString"] == "a|b^c~d\\e"
    assert coded["code"]["text"] == "Original text"
    assert coded["valueCodeableConcept"]["coding"][0] == {
        "code": "C1",
        "system": "urn:hl7v2-local:L",
        "display": "One",
    }
    assert number["valueQuantity"]["value"] == 72
