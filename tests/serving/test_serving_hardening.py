"""The outside probe's findings about the service, each answered: drawings cached, a full or read-only disk,
who may name a camera, text fields, form fields, merges, and one JSON shape for every error."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from serving.photos.annotated import ANNOTATED_CACHE
from serving.routes import reports as report_routes
from tests.serving.helpers import Server, deposit_photo, moved

BASE = (43.2965, 5.3698)  # Marseille: this module's places, away from the other modules'


def _place(index: int) -> tuple[float, float]:
    return moved(*BASE, north_m=500.0 * index)


# --------------------------------------------------------------------------------------------------
# The annotated photo is drawn once


def test_the_annotated_photo_is_drawn_once_then_read_from_the_cache(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    lat, lon = _place(1)
    report = server.upload(deposit_photo(9101, lat=lat, lon=lon)).json()
    drawn: list[Path] = []
    render = report_routes.render_annotated

    def counting(path: Path, *args: Any, **kwargs: Any) -> bytes:
        drawn.append(path)
        return render(path, *args, **kwargs)

    monkeypatch.setattr(report_routes, "render_annotated", counting)
    url, headers = report["links"]["annotated_image"], server.headers("agent")
    first = server.client.get(url, headers=headers)
    second = server.client.get(url, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content and len(drawn) == 1
    cached = list((server.data_dir / ANNOTATED_CACHE / report["image"]["sha256"][:2]).rglob("*.jpg"))
    assert len(cached) == 1

    # The stored file rewritten (re-encoded, blurred again): drawn again from the new file.
    stored = drawn[0]
    tmp = stored.with_name(".rewrite")
    tmp.write_bytes(stored.read_bytes())
    os.replace(tmp, stored)
    assert server.client.get(url, headers=headers).status_code == 200
    assert len(drawn) == 2
