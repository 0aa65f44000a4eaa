"""Generate the field reference of docs/configuration.md from the schema itself (a test keeps the doc in sync).

`python -m llmgw_sidecar.config_docs` prints the generated block.
"""

from __future__ import annotations

import enum
import types
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .config import Config
from .docgen import cli

BEGIN = "<!-- BEGIN GENERATED FIELDS (python -m llmgw_sidecar.config_docs) -->"
END = "<!-- END GENERATED FIELDS -->"


def _models_in(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for a in get_args(tp) for m in _models_in(a)]


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list[{_type_name(get_args(tp)[0])}]"
    if origin is dict:
        k, v = get_args(tp)
        return f"map[{_type_name(k)}, {_type_name(v)}]"
    if str(origin).endswith("Literal"):
        return " \\| ".join(f"`{a}`" for a in get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " \\| ".join(f"`{m.value}`" for m in tp)
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "object"
    if get_origin(tp) is not None and get_args(tp):  # Annotated[...]
        return _type_name(get_args(tp)[0])
    return getattr(tp, "__name__", str(tp))


def _default(f: FieldInfo) -> str:
    if f.default is PydanticUndefined and f.default_factory is None:
        return "required"
    if f.default_factory is not None:
        value = f.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(object)"
        return f"`{value!r}`"
    value = f.default
    if isinstance(value, enum.Enum):
        value = value.value
    return f"`{value!r}`" if value is not None else "`None`"


def rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, f in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _models_in(f.annotation)
        desc = (f.description or "").replace("|", "\\|")
        out.append(f"| `{path}` | {_type_name(f.annotation)} | {_default(f)} | {desc} |")
        for sub in nested:
            is_list = get_origin(f.annotation) is list
            out.extend(rows(sub, f"{path}[]." if is_list else f"{path}."))
    return out


def generate() -> str:
    lines = ["| field | type | default | meaning |", "|---|---|---|---|", *rows(Config)]
    return "\n".join([BEGIN, *lines, END])


if __name__ == "__main__":
    cli(BEGIN, END, generate)
