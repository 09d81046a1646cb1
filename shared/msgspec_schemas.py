"""JSON Schemas of msgspec types whose defaults follow the code, not the msgspec version."""

from __future__ import annotations

from typing import Any

import msgspec
import msgspec.inspect as mi


def components(types: list[Any], *, ref_template: str) -> dict[str, Any]:
    """The schema of each type reachable from ``types``, by name, every ``default`` derived here.

    ``ref_template`` is msgspec's: where the schemas point at each other, e.g.
    ``#/components/schemas/{name}``.
    """
    _, found = msgspec.json.schema_components(types, ref_template=ref_template)
    for name, struct in _structs(types).items():
        _set_defaults(found.get(name), struct)
    return found


def _structs(types: list[Any]) -> dict[str, mi.StructType | mi.DataclassType]:
    """Every struct or dataclass reachable from ``types``, by its component name (class name)."""
    found: dict[str, mi.StructType | mi.DataclassType] = {}
    pending: list[mi.Type] = list(mi.multi_type_info(types))
    while pending:
        info = pending.pop()
        if isinstance(info, mi.StructType | mi.DataclassType):
            if info.cls.__name__ not in found:
                found[info.cls.__name__] = info
                pending += [f.type for f in info.fields]
        elif isinstance(info, mi.Metadata):
            pending.append(info.type)
        elif isinstance(info, mi.UnionType):
            pending += info.types
        elif isinstance(info, mi.DictType):
            pending += [info.key_type, info.value_type]
        elif isinstance(info, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
            pending.append(info.item_type)
        elif isinstance(info, mi.TupleType):
            pending += info.item_types
    return found


# Factories whose value is a constant a schema can state: an empty collection.
_EMPTY_FACTORIES: tuple[Any, ...] = (list, dict, set, frozenset, tuple)


def _set_defaults(schema: dict[str, Any] | None, struct: mi.StructType | mi.DataclassType) -> None:
    """Each property's ``default``: the field's static default or empty collection, else none.

    msgspec 0.22 and 0.23 render factory defaults differently; deriving every default here
    keeps the document a function of the code, not of the msgspec version. Any other factory's
    value (a fresh id, the current time, a struct) is no constant a schema could state.
    """
    properties = (schema or {}).get("properties", {})
    for field in struct.fields:
        prop = properties.get(field.encode_name)
        if prop is None:
            continue
        if field.default is not msgspec.NODEFAULT:
            prop["default"] = msgspec.to_builtins(field.default)
        elif field.default_factory in _EMPTY_FACTORIES:
            prop["default"] = msgspec.to_builtins(field.default_factory())
        else:
            prop.pop("default", None)
