"""Reading multipart/form-data bodies strictly: text fields in UTF-8, each scalar field once.

Starlette's form parser decodes a text field that is not valid UTF-8 as Latin-1, so bytes sent in
another encoding would be stored as mojibake; :func:`read_form` refuses them instead (422, naming the
field). A field sent twice would silently keep one value; :func:`text_fields` refuses it (422).
A malformed body (no boundary, too many files or fields, a part over its size) is 400 ``bad_request``
with the parser's reason, as Starlette answers it. :func:`invalid_field` is the 422 of one field that
every route checking its own fields raises.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

__all__ = ["invalid_field", "read_form", "text_fields"]

_SPOOL_MAX_SIZE = MultiPartParser.spool_max_size


class _NotUtf8(Exception):
    def __init__(self, field: str) -> None:
        super().__init__(field)
        self.field = field


class _StrictParser(MultiPartParser):
    """Starlette's parser, refusing a text field whose bytes are not UTF-8 (it would decode them as Latin-1)."""

    def __init__(self, *args: Any, spool_max_size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spool_max_size = spool_max_size

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode("utf-8")
            except UnicodeDecodeError:
                raise _NotUtf8(part.field_name) from None
        super().on_part_end()


def invalid_field(
    field: str,
    msg: str,
    *,
    kind: str = "value_error",
    where: Literal["body", "query"] = "body",
    value: object = None,
) -> RequestValidationError:
    """The error of one field of a request, answered 422 ``invalid_request`` as FastAPI's own checks are.

    Args:
        field: the field's name.
        msg: what is wrong, and what to send instead.
        kind: the error's type, in pydantic's words (``value_error``, ``string_type``...).
        where: the part of the request that holds the field.
        value: the value sent, repeated in the answer (None for a body field: it may be a file).

    Returns:
        The error to raise.
    """
    return RequestValidationError([{"type": kind, "loc": (where, field), "msg": msg, "input": value}])


async def read_form(
    request: Request, *, max_files: int, max_fields: int, max_part_size: int, in_memory: int = _SPOOL_MAX_SIZE
) -> FormData:
    """The request's multipart/form-data body, its text fields checked to be UTF-8.

    Other content types are read by Starlette as usual (``request.form``). The caller closes the form.

    A file part up to ``in_memory`` bytes stays in memory; a larger one spools to a temporary file,
    each chunk written through a worker thread. A route that reads the file whole anyway (a photo it
    analyses) gains nothing from the temporary file and sets ``in_memory`` to its body limit.

    Raises:
        RequestValidationError: a text field that is not valid UTF-8.
        HTTPException: 400 for a malformed multipart body.
    """
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return await request.form(max_files=max_files, max_fields=max_fields, max_part_size=max_part_size)
    parser = _StrictParser(
        request.headers, request.stream(), max_files=max_files, max_fields=max_fields, max_part_size=max_part_size,
        spool_max_size=in_memory,
    )
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise HTTPException(status_code=400, detail=f"{exc.message} Send one multipart/form-data body.") from None
    except _NotUtf8 as exc:
        raise invalid_field(
            exc.field, "The field is not valid UTF-8 text; send it encoded as UTF-8.", kind="unicode_error"
        ) from None


def text_fields(form: FormData, *, skip: Collection[str] = ()) -> dict[str, str]:
    """The form's text fields, each sent once, without those named in ``skip`` (the file fields).

    Raises:
        RequestValidationError: a field sent more than once, or a file where text is expected.
    """
    fields: dict[str, str] = {}
    for name, value in form.multi_items():
        if name in skip:
            continue
        if not isinstance(value, str) or isinstance(value, UploadFile):
            raise invalid_field(name, "Send text, not a file.", kind="string_type")
        if name in fields:
            raise invalid_field(name, "The field is sent more than once; send it once.", kind="repeated_field")
        fields[name] = value
    return fields
