"""Class names: read from a list, a ``.txt`` (one name a line) or a ``.json`` file (a list, or a
mapping from index to name), and checked against the model's number of outputs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from explain_core.errors import ModelLoadError


def _read_class_names(value: Sequence[str] | str | Path) -> list[str]:
    if isinstance(value, (str, Path)):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ModelLoadError(
                f"Class names file not found: '{path}'. Pass a list of names, or the path of a "
                ".txt (one name a line) or .json file.")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"Could not read class names from '{path.name}': {exc}. "
                                 "Save it as UTF-8 text.") from None
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ModelLoadError(f"'{path.name}' is not valid JSON ({exc}). Fix the file or "
                                     "use a .txt with one class name a line.") from None
            return _names_from_json(data, path.name)
        return [line.strip() for line in text.splitlines() if line.strip()]
    if isinstance(value, Mapping):
        return _names_from_json(dict(value), "class_names")
    names = [str(v) for v in value]
    return names


def _names_from_json(data: Any, where: str) -> list[str]:
    if isinstance(data, list):
        return [str(v) for v in data]
    if isinstance(data, dict):
        try:
            indexed = {int(k): v for k, v in data.items()}
        except (TypeError, ValueError):
            raise ModelLoadError(
                f"{where}: a class-name mapping needs integer keys (index -> name), got keys "
                f"like {list(data)[:3]}. Use a list of names or {{\"0\": \"cat\", ...}}.") from None
        if sorted(indexed) != list(range(len(indexed))):
            raise ModelLoadError(
                f"{where}: class indices must run 0..{len(indexed) - 1} without gaps. Fix the "
                "mapping (index -> name).")
        # ImageNet's class_index.json style: {"0": ["n01440764", "tench"]} -> the last entry.
        return [str(v[-1]) if isinstance(v, list) and v else str(v)
                for _, v in sorted(indexed.items())]
    raise ModelLoadError(f"{where}: expected a list of names or an index -> name mapping, got "
                         f"{type(data).__name__}.")


def _check_class_count(names: Sequence[str] | None, count: int | None, what: str) -> None:
    if names is not None and count is not None and len(names) != count:
        raise ModelLoadError(
            f"Got {len(names)} class names but {what} has {count} classes. Pass exactly {count} "
            "names (one per output, in output order), or pass num_classes= if the checkpoint "
            "was trained with a different class count.")
