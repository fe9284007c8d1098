"""The `Prefer` request header (RFC 7240) as POST /api/task reads it: `wait=N` seconds."""

from __future__ import annotations

from core.errors import ValidationError

MIN_WAIT_S = 1
MAX_WAIT_S = 60


def wait_seconds(header: str | None) -> int | None:
    """The `wait` preference, or None when there is none. Other preferences are ignored, as
    RFC 7240 asks; a `wait` that is not a whole number of seconds in 1-60 is a 400, so a
    client never silently gets a different wait than it asked for."""
    if header is None:
        return None
    for preference in header.split(","):
        name, _, value = preference.split(";")[0].strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        text = value.strip().strip('"')
        if not text.isdigit() or not MIN_WAIT_S <= int(text) <= MAX_WAIT_S:
            raise ValidationError(
                f"Prefer: wait must be a whole number of seconds, {MIN_WAIT_S}-{MAX_WAIT_S}"
            )
        return int(text)
    return None
