"""The rules every server applies to what a client sends before it works on it: request ids and JSON nesting.

**Request ids.** The id a client gives (a V2 body's ``id``, or the ``x-request-id`` header) crosses
boundaries: it goes back in the ``x-request-id`` response header, to the predictor and the explainer in a
header, into the inference log's CloudEvents (``ce-id``, and the ``x-inference-id`` header a hashing proxy
routes on) and from there into the detector's join, archive and ``/feedback``. HTTP header values are
Latin-1 at most and can carry no CR or LF, gRPC metadata is printable ASCII, and a header has to stay short.
So one rule, checked where the id enters (:func:`check_request_id`, from :mod:`serving.server` for the
predictor, the transformer and the explainer, REST and gRPC alike): an id is 1 to :data:`MAX_ID_LENGTH`
printable ASCII characters, without spaces. Anything else is refused with a 400 that names the field and
the rule, never encoded: an id rewritten on its way would no longer be the one the client sends
``/feedback`` with. An empty id counts as absent (the transformer then makes one).

**JSON nesting.** orjson parses every body first (V1, the seed API, V2 without a JSON content type): it does
not recurse and stops at 1,024 levels by itself, so ordinary bodies pay for no extra check (a body it takes
that nests deeper than :data:`MAX_JSON_DEPTH` is no payload shape, and validation refuses it with a 400).
Only a body orjson refuses goes on, to the standard library's parser, which also reads ``NaN`` and
``Infinity`` (so that validation can name the field that holds one) but recurses, and raised
``RecursionError`` (a 500) on ``[[[[...]]]]``: it gets a body only once :func:`nesting_depth` has found it
within :data:`MAX_JSON_DEPTH`. Every refusal says :data:`NESTING_RULE`; FastAPI's own parser (V2 REST with a
JSON content type) stops at its recursion limit, deeper still, and :func:`serving.errors.http_error_handler`
answers it with the same message.

Only the standard library and orjson: the detector can use it without KServe.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

MAX_ID_LENGTH = 256
"""The longest request id accepted, in characters (a UUID has 36; W3C trace ids 32)."""
ID_RULE = f"1 to {MAX_ID_LENGTH} printable ASCII characters, without spaces"
REQUEST_ID_HEADER = "x-request-id"
MAX_JSON_DEPTH = 100
"""Arrays and objects nested deeper than this are refused. The deepest payload the servers take nests 4 levels
(V2: body, inputs, tensor, data); the standard library's parser, reached only for bodies orjson refuses,
recurses about once per level against Python's limit of 1,000 frames."""
NESTING_RULE = f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels"

_PRINTABLE_ASCII = re.compile(rf"[\x21-\x7e]{{1,{MAX_ID_LENGTH}}}")
_OUTSIDE_ID = re.compile(r"[^\x21-\x7e]")
_STRINGS = re.compile(rb'"[^"]*"')
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_OPENING = frozenset(b"[{")


def check_request_id(value: str | None, field: str) -> None:
    """Refuse a request id that cannot be carried safely (see the module docstring); ``None`` or ``""`` pass.

    Args:
        value: The id as received.
        field: Where it came from, for the message (``id``, ``x-request-id``).

    Raises:
        ValueError: The id breaks the rule; the message names the field, the rule and what is wrong (never
            the id itself, which may be 60 kB or hold control characters).
    """
    if not value or _PRINTABLE_ASCII.fullmatch(value):
        return
    if len(value) > MAX_ID_LENGTH:
        problem = f"got {len(value)} characters"
    else:
        offending = _OUTSIDE_ID.search(value)
        position = offending.start() if offending else 0
        problem = f"got U+{ord(value[position]):04X} at position {position}"
    raise ValueError(f"{field}: must be {ID_RULE}; {problem}")


def nesting_depth(body: bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep the arrays and objects of a JSON text nest, counted up to ``limit + 1`` (no parsing).

    Escaped backslashes and quotes are removed first, then everything but brackets and quotes, then each
    string (with any brackets in it): what is left is the brackets of the structure. All of it is bytes
    operations in C; only the walk over the brackets left is Python, and it stops past ``limit``.

    Args:
        body: The JSON text (a malformed one gives some count; the parser then says what is wrong).
        limit: Stop counting past this depth.

    Returns:
        The deepest level reached, at most ``limit + 1``.
    """
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = _STRINGS.sub(b"", unescaped.translate(None, _NOT_STRUCTURE))
    depth = deepest = 0
    for character in brackets:
        depth += 1 if character in _OPENING else -1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                break
    return deepest


def parse_json(body: bytes | str) -> Any:
    """Parse a request body: orjson, else (``NaN``, ``Infinity``) the standard library within the depth rule.

    Raises:
        ValueError: The body is not JSON (the message says where), or nests deeper than
            :data:`MAX_JSON_DEPTH` (:data:`NESTING_RULE`).
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass  # NaN or Infinity (read below, so validation can name the field), too deep, or not JSON
    data = body.encode() if isinstance(body, str) else body
    if nesting_depth(data) > MAX_JSON_DEPTH:
        raise ValueError(NESTING_RULE)
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"body: not valid JSON: {error}") from None
    except RecursionError:  # a server stack already deep: still the nesting, never a 500
        raise ValueError(NESTING_RULE) from None
