"""Generated JSON documents (AsyncAPI, Postman) normalised: they change only with the contract.

A generated file must change only when the contract does (an event, a route, a field), never
because a library upgrade renders the same contract differently: :func:`normalised` is applied
to every JSON document before it is written or compared. Writing and checking the
checked-in files is tooling: :mod:`tlr.generated_files`.
"""

from __future__ import annotations

import inspect
from typing import Any


def normalised(node: Any) -> Any:
    """``node`` (a JSON value) with every ``description`` dedented and stripped the same way.

    ``inspect.cleandoc`` is what Python itself applies to docstrings; msgspec before 0.23 kept
    their indentation and 0.23 drops it, so both give the same text once this has run.
    """
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else normalised(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [normalised(item) for item in node]
    return node
