"""``POST /v1/datasets/export``: the reviewed photos as a YOLO dataset, in one zip (:mod:`serving.dataset`)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO, Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from serving.auth import Permission, Principal
from serving.dataset.select import ExportFilter
from serving.dataset.splits import SplitFractions
from serving.dataset.write import export_zip
from serving.errors import ErrorBody, PermissionDeniedError
from serving.forms import invalid_field
from serving.queries import Bbox, parse_bbox
from serving.routes.deps import ServiceDep, get_principal
from serving.schemas import Timestamp

__all__ = ["HASH_HEADER", "router"]

HASH_HEADER = "X-Vipare-Dataset-Hash"
"""The answer's header that carries the dataset hash (also in the zip's manifest.json)."""

_CHUNK = 1 << 20

router = APIRouter(
    tags=["datasets"],
    responses={
        401: {"model": ErrorBody, "description": "No API key, or an unknown or revoked one."},
        403: {"model": ErrorBody, "description": "The key's role may not export reviews (managers and admins may)."},
        404: {
            "model": ErrorBody,
            "description": "No photo to export (code nothing_to_export): none reviewed yet, or none matching the "
            "filters. The message says what to do.",
        },
    },
)


def _exporter(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    # Those who may review photos may export the reviews: one permission, so roles stay in one table.
    if not principal.can(Permission.REPORT_REVIEW):
        role = str(principal.role)
        article = "An" if role[:1] in "aeiou" else "A"
        raise PermissionDeniedError(
            f"{article} {role} key may not export the reviewed photos; managers and admins may."
        )
    return principal


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := handle.read(_CHUNK):
            yield chunk
    finally:
        handle.close()


@router.post(
    "/v1/datasets/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}, "description": "The dataset, one zip."}},
    summary="The reviewed photos as a YOLO dataset (zip)",
)
def export_dataset(
    service: ServiceDep,
    _principal: Annotated[Principal, Depends(_exporter)],
    since: Annotated[
        Timestamp | None, Query(description="Photos observed at or after this time (ISO 8601 with offset).")
    ] = None,
    until: Annotated[Timestamp | None, Query(description="Photos observed at or before this time.")] = None,
    bbox: Annotated[
        str | None,
        Query(
            description="min_lon,min_lat,max_lon,max_lat in decimal degrees (WGS 84)", examples=["6.1,49.1,6.2,49.2"]
        ),
    ] = None,
    include_unreviewed: Annotated[
        bool, Query(description="Also the photos nobody reviewed, labelled by the model's detections.")
    ] = False,
    val_fraction: Annotated[float, Query(ge=0, lt=1, description="Share of the groups held out for val.")] = 0.2,
    test_fraction: Annotated[float, Query(ge=0, lt=1, description="Share of the groups held out for test.")] = 0.0,
) -> StreamingResponse:
    """Every reviewed photo (and with ``include_unreviewed`` the others, labelled by the model) matching
    the filters, as ``vipare dataset export`` writes them: ``images/`` and ``labels/`` per split,
    ``data.yaml`` and ``manifest.json``, under one top folder ``vipare-dataset/``. The ``data.yaml`` has no
    ``path``, so Ultralytics reads the split folders next to it wherever the zip is unpacked. Photos of one
    incident, or of one ~100 m cell and week, fall in one split. The dataset hash is in the
    ``X-Vipare-Dataset-Hash`` header and the manifest.
    """
    box: Bbox | None = None
    if bbox is not None:
        try:
            box = parse_bbox(bbox)
        except ValueError as exc:
            raise invalid_field("bbox", str(exc), where="query", value=bbox) from None
    try:
        flt = ExportFilter(since=since, until=until, bbox=box, include_unreviewed=include_unreviewed)
    except ValueError as exc:
        raise invalid_field("until", str(exc), where="query", value=until) from None
    try:
        fractions = SplitFractions(val=val_fraction, test=test_fraction)
    except ValueError as exc:
        raise invalid_field("test_fraction", str(exc), where="query", value=test_fraction) from None
    # Built in a temporary file that is unlinked at once: the open handle keeps it until the answer is
    # sent, and nothing is left behind whether the client disconnects or the process dies.
    handle = tempfile.TemporaryFile(prefix="vipare-dataset-", suffix=".zip")  # noqa: SIM115 - the answer closes it
    streaming = False
    try:
        with service.sessions() as session:
            summary = export_zip(session, service.photos, handle, flt, fractions)
        size = handle.tell()
        handle.seek(0)
        streaming = True
    finally:
        if not streaming:
            handle.close()
    name = f"vipare-dataset-{summary.dataset_hash[:12]}.zip"
    return StreamingResponse(
        _chunks(handle),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Content-Length": str(size),
            HASH_HEADER: summary.dataset_hash,
        },
    )

