"""The shared input rules (serving/inputs.py): what an id may be, how a body's depth is counted and parsed."""

from __future__ import annotations

import json
import math

import pytest

from serving.inputs import MAX_JSON_DEPTH, NESTING_RULE, check_request_id, nesting_depth, parse_json


@pytest.mark.parametrize(
    "value", [None, "", "3f1c2a9e-1d2b-4c5d-8e9f-0a1b2c3d4e5f", "a:b/c_d.e~!#", "x" * 256]
)
def test_ids_a_header_can_carry_pass(value: str | None) -> None:
    check_request_id(value, "id")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("price-€", "got U+20AC at position 6"),
        ("a\r\nb", "got U+000D at position 1"),
        ("two words", "got U+0020 at position 3"),
        ("tab\t", "got U+0009 at position 3"),
        ("x" * 257, "got 257 characters"),
    ],
)
def test_other_ids_are_refused_naming_the_field_the_rule_and_the_first_offence(
    value: str, problem: str
) -> None:
    with pytest.raises(ValueError) as refused:
        check_request_id(value, "x-request-id")
    assert str(refused.value) == (
        f"x-request-id: must be 1 to 256 printable ASCII characters, without spaces; {problem}"
    )


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"{}", 1),
        (b'{"instances": [{"crim": 1}]}', 3),
        (b'{"id": "[[[[[[", "x": [1]}', 2),  # brackets in a string are not structure
        (b'["\\"[[[", [["]]]]"]]]', 3),  # nor after an escaped quote
        (b'["\\\\", [[1]]]', 3),  # an escaped backslash ends no string
        (b"[" * 100_000 + b"]" * 100_000, MAX_JSON_DEPTH + 1),  # counted only past the limit
    ],
)
def test_nesting_is_counted_outside_strings(body: bytes, depth: int) -> None:
    assert nesting_depth(body) == depth
    if depth <= MAX_JSON_DEPTH:
        assert nesting_depth(body) == _depth(json.loads(body))


def _depth(value: object) -> int:
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    return 0 if children is None else 1 + max((_depth(child) for child in children), default=0)


def test_a_body_with_nan_is_parsed_unless_too_deep() -> None:
    parsed = parse_json(b'{"instances": [{"crim": NaN, "note": "' + b"[" * 500 + b'"}]}')
    assert math.isnan(parsed["instances"][0]["crim"])
    with pytest.raises(ValueError, match=NESTING_RULE):
        parse_json(b'{"x": NaN, "y": ' + b"[" * 101 + b"]" * 101 + b"}")
    assert _depth(parse_json(b'{"x": NaN, "y": ' + b"[" * 99 + b"]" * 99 + b"}")) == MAX_JSON_DEPTH
    with pytest.raises(ValueError, match="body: not valid JSON"):
        parse_json(b'{"instances": [')
