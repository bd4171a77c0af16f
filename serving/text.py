"""Text fields people type: what they may hold, field by field.

Two kinds, as pydantic types for the request models (:mod:`serving.schemas`):

* :data:`FreeText` (notes, comments, a camera's description): what a person wrote, shown on the pages
  and in exports. Kept as sent, except that control characters are removed: NUL and the other C0
  and C1 controls but tab and line feed (a carriage return before a line feed is dropped, a lone one
  becomes a line feed: a form's text area sends CRLF), and the bidirectional embeddings, overrides
  and isolates (U+202A-U+202E, U+2066-U+2069) that make a text read differently from how it is
  stored. Removed rather than refused: a photo is never turned away for its note.
* :data:`Name` (key names, camera ids): shown in histories and used to find things. Refused (422)
  when they hold any control character, tab and line feed included, a bidirectional control of the
  list above, or a directional mark (U+200E, U+200F, U+061C): a name must read as it is stored.

Invalid UTF-8 in a form field is refused before any of this (:mod:`serving.forms`).
"""

from __future__ import annotations

import re
from typing import Annotated, Final

from pydantic import AfterValidator

__all__ = ["FreeText", "Name", "clean_free_text", "check_name"]

_BIDI_CONTROLS: Final = "\u202a-\u202e\u2066-\u2069"
_FREE_TEXT_REMOVED: Final = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI_CONTROLS}]")
_NAME_REFUSED: Final = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI_CONTROLS}\u200e\u200f\u061c]")


def clean_free_text(value: str) -> str:
    """``value`` without control characters but tab and line feed, nor bidirectional controls (CRLF -> LF)."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return _FREE_TEXT_REMOVED.sub("", value)


def check_name(value: str) -> str:
    """``value`` itself, refused when it holds a control character or a bidirectional control or mark.

    Raises:
        ValueError: what it holds and at which position (pydantic turns it into a 422 field error).
    """
    found = _NAME_REFUSED.search(value)
    if found is not None:
        raise ValueError(
            f"holds the invisible character U+{ord(found.group()):04X} at position {found.start()}; names may not "
            "hold control characters, tabs, line breaks or text-direction marks: send it without"
        )
    return value


FreeText = Annotated[str, AfterValidator(clean_free_text)]
"""A note or comment: control and bidirectional characters removed (see the module doc)."""

Name = Annotated[str, AfterValidator(check_name)]
"""A name or id: refused when it holds a control or bidirectional character (see the module doc)."""
