"""Opaque cursors over increasing primary keys."""

from __future__ import annotations

import base64

from api.errors import Unprocessable
from api.validation import DB_ID_MAX


def encode_cursor(last_id: int) -> str:
    """Cursor pointing after `last_id`."""
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    """The id a cursor points after; 422 naming `cursor` when it is not one of ours."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != "id":
            raise ValueError
        last_id = int(value)
        if not 0 <= last_id <= DB_ID_MAX:
            raise ValueError
        return last_id
    except ValueError:
        raise Unprocessable.field("cursor", "not a valid cursor") from None
