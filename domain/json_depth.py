"""How deeply a JSON text nests, checked before it is decoded.

msgspec (like the standard ``json``) recurses once per level of arrays and objects, so a
line of 1,000 ``[`` ends in ``RecursionError`` instead of a decode error. Untrusted JSON
(a request body, a dataset line) is therefore checked first against ``MAX_JSON_DEPTH``, a
limit far above any real request or training example (a chat example nests 3 levels).

The check reads the bytes once in C (``bytes.count``) and only looks closer when the text holds
more brackets than the limit: then strings are cut out (brackets inside them are text) and the
remaining brackets are counted.
"""

from __future__ import annotations

import re
from itertools import accumulate

__all__ = ["MAX_JSON_DEPTH", "json_too_deep"]

MAX_JSON_DEPTH = 64

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_too_deep(data: bytes, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text ``data`` nests arrays and objects deeper than ``max_depth`` levels.

    Exact for valid JSON; for invalid JSON (an unterminated string) it may count brackets that
    the decoder would have refused anyway.
    """
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return False
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(accumulate(_STEP[b] for b in brackets), default=0) > max_depth
