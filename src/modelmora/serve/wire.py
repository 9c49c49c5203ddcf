"""Response JSON: one encoder for every route.

orjson writes numpy arrays itself and prints float32 values in their shortest round-trip
form: a 384-float embedding answer takes ~13 µs and 4.6 KB instead of ~210 µs and 7.9 KB
through ``json.dumps(row.tolist())``, on the router's single event-loop thread and on the
client's parser. Decoded as float32, the values are identical. Non-finite floats become
``null`` (standard JSON has no NaN).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

__all__ = ["dumps"]


def _fallback(obj: Any) -> Any:
    """Arrays orjson cannot write natively (non-contiguous, unusual dtypes) and numpy scalars."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc, default=_fallback, option=orjson.OPT_SERIALIZE_NUMPY)
