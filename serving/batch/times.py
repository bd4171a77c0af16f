"""When a camera frame was taken: read from its file name, and naive times placed in a time zone.

The file-name pattern (:data:`NAME_TIME`), searched in the file's base name, first match wins::

    YYYYMMDD_HHMMSS          cam12_20240501_093000.jpg, IMG_20240501_093000.jpg
    YYYYMMDD-HHMMSS          20240501-093000.jpg
    YYYYMMDDHHMMSS           20240501093000.jpg
    YYYY-MM-DD_HH-MM-SS      2024-05-01_09-30-00.jpg (also T or a space between date and time,
                             and : between hours, minutes and seconds)

optionally followed by a fraction of a second (``.123``, ``,5``, or up to 6 digits straight after the
seconds, as PXL_20240501_093000123.jpg) and an offset: ``Z``, ``+HH:MM``, ``-HH:MM`` or ``+HHMM``
(``-HHMM`` is not read as an offset: a dash and four digits is more often a sequence number). Digits
must not run on before or after the match. A time without an offset is read in the zone the caller
gives (``vipare batch --tz``, UTC by default). Impossible dates (2024-02-30) do not match.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import PurePosixPath
from typing import Final

__all__ = ["NAME_TIME", "TIME_PATTERN_HELP", "in_zone", "parse_timestamp", "parse_tz", "time_from_name"]

NAME_TIME: Final = re.compile(
    r"""
    (?<!\d)
    (?P<year>(?:19|20)\d{2})(?P<ds>-?)(?P<month>0[1-9]|1[0-2])(?P=ds)(?P<day>0[1-9]|[12]\d|3[01])
    [T_ -]?
    (?P<hour>[01]\d|2[0-3])(?P<ts>:?|-?)(?P<minute>[0-5]\d)(?P=ts)(?P<second>[0-5]\d|60)
    (?:[.,]?(?P<fraction>\d{1,6}))?
    (?P<offset>Z|[+-](?:[01]\d|2[0-3]):[0-5]\d|\+(?:[01]\d|2[0-3])[0-5]\d)?
    (?!\d)
    """,
    re.VERBOSE,
)

TIME_PATTERN_HELP: Final = (
    "YYYYMMDD_HHMMSS in the file name (also YYYYMMDD-HHMMSS, YYYYMMDDHHMMSS or YYYY-MM-DD_HH-MM-SS, "
    "with T or a space allowed between date and time, an optional fraction of a second and an optional "
    "offset Z, +HH:MM, -HH:MM or +HHMM), e.g. cam12_20240501_093000.jpg"
)


def parse_tz(name: str) -> tzinfo:
    """A time zone from an IANA name (``Europe/Paris``), ``UTC``, or a fixed offset ``+02:00``.

    Raises:
        ValueError: an unknown zone.
    """
    text = name.strip()
    if text.upper() in ("UTC", "Z"):
        return UTC
    match = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", text)
    if match:
        sign = 1 if match[1] == "+" else -1
        return timezone(sign * timedelta(hours=int(match[2]), minutes=int(match[3])))
    try:
        return zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; give an IANA name such as Europe/Paris, UTC, or +02:00"
        ) from None


def in_zone(when: datetime, tz: tzinfo) -> datetime:
    """``when`` itself when it has an offset, else the same wall-clock time in ``tz``; in UTC either way."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    return when.astimezone(UTC)


def time_from_name(name: str, tz: tzinfo = UTC) -> datetime | None:
    """The capture time a frame's file name carries (see the module doc), in UTC; None when it has none.

    Args:
        name: a file name or path; only its last component is searched.
        tz: the zone of a time written without an offset.
    """
    base = PurePosixPath(name.replace("\\", "/")).name
    for match in NAME_TIME.finditer(base):
        try:
            when = datetime(
                int(match["year"]), int(match["month"]), int(match["day"]),
                int(match["hour"]), int(match["minute"]), min(int(match["second"]), 59),
                int((match["fraction"] or "0").ljust(6, "0")),
            )
        except ValueError:  # 2024-02-30
            continue
        offset = match["offset"]
        if offset:
            if offset == "Z":
                when = when.replace(tzinfo=UTC)
            else:
                sign = 1 if offset[0] == "+" else -1
                digits = offset[1:].replace(":", "")
                when = when.replace(tzinfo=timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))))
        return in_zone(when, tz)
    return None


def parse_timestamp(text: str, tz: tzinfo = UTC) -> datetime:
    """An ISO 8601 time (``2024-05-01T09:30:00+02:00``, ``2024-05-01 09:30:00``, ``...Z``) in UTC.

    A time without an offset is read in ``tz``.

    Raises:
        ValueError: not an ISO 8601 time.
    """
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time such as 2024-05-01T09:30:00+02:00") from None
    return in_zone(when, tz)
