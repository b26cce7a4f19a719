"""Reading the JSON files a run writes (config.json, report.json), with one clear error if damaged."""
from __future__ import annotations

import json
from pathlib import Path

from archsearch.errors import UserError


def read_json_dict(path: Path, remedy: str) -> dict:
    """The JSON object in ``path``; a UserError ending in ``remedy`` if it is unreadable or no object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"'{path}' cannot be read ({exc}); {remedy}") from exc
    if not isinstance(value, dict):
        raise UserError(f"'{path}' holds a JSON {type(value).__name__}, not an object; {remedy}")
    return value
