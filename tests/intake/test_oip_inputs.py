import math

import pytest

from agent.errors import RecordError
from agent.intake.http.oip import rows_from_inputs

FEATURES = ["a", "b", "c"]


def test_one_matrix_tensor() -> None:
    rows = rows_from_inputs(
        [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}],
        FEATURES,
    )
    assert rows == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def test_nested_data_is_flattened() -> None:
    rows = rows_from_inputs(
        [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [[1.5, None, 3]]}], FEATURES
    )
    assert rows[0][0] == 1.5 and math.isnan(rows[0][1])


def test_one_tensor_per_feature_in_any_order() -> None:
    inputs = [
        {"name": n, "shape": [2], "datatype": "FP64", "data": v}
        for n, v in (("c", [3, 30]), ("a", [1, 10]), ("b", [2, 20]))
    ]
    assert rows_from_inputs(inputs, FEATURES) == [[1, 2, 3], [10, 20, 30]]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([], "non-empty"),
        ([{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2]}], "shape"),
        ([{"name": "x", "shape": [1, 3], "datatype": "BYTES", "data": ["a"]}], "numeric"),
        ([{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}], "missing: b, c"),
        ([{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": ["a", "b", "c"]}], "numbers"),
    ],
)
def test_bad_inputs_are_refused_with_a_reason(inputs: list[object], message: str) -> None:
    with pytest.raises(RecordError, match=message):
        rows_from_inputs(inputs, FEATURES)
