"""Promoting a model: check a candidate ONNX file, keep a copy, record who switched the service to it.

The promotions' history is the ``model_promotions`` table (:class:`~serving.models.ModelPromotion`):
its latest row is the model every service worker should run. Promoting a file:

1. stream it to a temporary folder under ``<data_dir>/models/``, hashing it on the way (such
   folders left by a crash are deleted by a later promotion);
2. load it as vipare's detector with the service's thresholds and thread count, run one warm-up
   inference, and check its classes are the project's (:mod:`vipare.taxonomy`), in order; anything
   else is :class:`ModelRejectedError` (HTTP 422) with what is wrong and what to do, and nothing is
   kept or recorded;
3. fsync it and rename it to ``<data_dir>/models/<sha256>.onnx`` (then fsync the folder), so a
   promotion row never names a file that is not whole on disk;
4. add the promotion row.

A rollback promotes again, as a new row, the latest earlier model that differs from the current
one; before the first promotion there is nothing to roll back to, and a history with a single model
can only go back to the configured ``model_path`` it replaced, when that file is still the same.

Running services follow the table (:meth:`serving.service.Service.follow_promotions`); the worker
that takes a promotion over HTTP switches at once, with the detector loaded here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from serving.config import ServiceSettings
from serving.db import write_session
from serving.errors import ServiceError
from serving.models import ModelPromotion, utcnow
from serving.photos.store import fsync_path
from vipare.detection import Detector
from vipare.errors import ModelError
from vipare.taxonomy import TAXONOMY_VERSION, class_names

__all__ = [
    "MAX_MODEL_BYTES",
    "MODELS_DIR",
    "ModelRejectedError",
    "NoEarlierModelError",
    "Promotion",
    "current_model",
    "list_promotions",
    "load_model",
    "open_detector",
    "parse_card",
    "promote",
    "promotion_path",
    "rollback",
]

MODELS_DIR = "models"
"""Folder of the promoted models' copies, under the data folder."""

MAX_MODEL_BYTES = 512 * 1024 * 1024
"""Largest model file ``POST /v1/models`` takes (an exported YOLO11x is about 220 MB)."""

_CHUNK = 1024 * 1024
_STALE_INCOMING_S = 3600.0
"""A candidate's folder older than this was left by a promotion that crashed (checking takes seconds)."""
_EXPORT_HINT = (
    "Promote the .onnx file that vipare's export step writes (python -m training.export), trained on the "
    "project's classes"
)


class ModelRejectedError(ServiceError):
    """A candidate model cannot serve: not ONNX, no metadata, not a detector of the project's classes."""

    status_code, code = 422, "model_rejected"


class NoEarlierModelError(ServiceError):
    """A rollback with no earlier model to go back to."""

    status_code, code = 409, "no_earlier_model"


@dataclass(frozen=True)
class Promotion:
    """One row of the promotions' history, detached from its database session.

    Attributes:
        id: the row's id; a later promotion has a larger one.
        sha256: the model file's sha256.
        file: where the copy is, relative to the data folder (:func:`promotion_path`).
        promoted_at: when (UTC).
        promoted_by: who: an admin key's name, or the user who ran ``vipare models``.
        previous_sha256: the model it replaced, when known.
        comment: why.
        card: the model card (JSON) given with it.
    """

    id: int
    sha256: str
    file: str
    promoted_at: datetime
    promoted_by: str
    previous_sha256: str | None
    comment: str | None
    card: dict[str, Any] | None

    @classmethod
    def of(cls, row: ModelPromotion) -> Promotion:
        """The values of a row."""
        return cls(
            id=row.id,
            sha256=row.sha256,
            file=row.file,
            promoted_at=row.promoted_at,
            promoted_by=row.promoted_by,
            previous_sha256=row.previous_sha256,
            comment=row.comment,
            card=row.card,
        )


def current_model(session: Session) -> Promotion | None:
    """The latest promotion (the model services should run), or None when no model was ever promoted."""
    row = session.scalars(select(ModelPromotion).order_by(ModelPromotion.id.desc()).limit(1)).first()
    return None if row is None else Promotion.of(row)


def list_promotions(session: Session) -> list[Promotion]:
    """Every promotion, newest first."""
    return [Promotion.of(row) for row in session.scalars(select(ModelPromotion).order_by(ModelPromotion.id.desc()))]


def promotion_path(settings: ServiceSettings, promotion: Promotion) -> Path:
    """The model file of a promotion."""
    return settings.data_dir / promotion.file


def open_detector(path: Path, settings: ServiceSettings, *, warmup: bool) -> Detector:
    """Load a model file with the service's thresholds and onnxruntime thread count.

    Raises:
        vipare.ModelError: the file cannot be loaded as a detector.
    """
    return Detector.from_settings(settings, model_path=path, warmup=warmup)


def load_model(path: Path, settings: ServiceSettings, *, name: str | None = None) -> Detector:
    """Load a model, warm it up and check it detects the project's classes, in the project's order.

    Args:
        path: the ``.onnx`` file.
        settings: thresholds and thread count.
        name: how messages call the file (default: its path).

    Returns:
        The detector, warm: ready to swap in.

    Raises:
        ModelRejectedError: the file is not a usable detector of the project's classes; the message
            says what is wrong and what to do.
    """
    shown = name or str(path)
    try:
        detector = open_detector(path, settings, warmup=False)
        detector.warm_up()
    except ModelError as exc:
        detail = str(exc).replace(str(path), shown)
        raise ModelRejectedError(f"{shown} cannot serve as the model: {detail}. {_EXPORT_HINT}.") from exc
    expected = class_names()
    if list(detector.names) != expected:
        raise ModelRejectedError(
            f"{shown} detects the classes {list(detector.names)}, but the project's are {expected}, in this order "
            f"(vipare.taxonomy, version {TAXONOMY_VERSION}): train it on the project's datasets and export it "
            "again (python -m training.train, then python -m training.export)."
        )
    return detector


def parse_card(text: str | bytes, name: str = "the model card") -> dict[str, Any]:
    """Read a model card: a JSON object.

    Raises:
        ModelRejectedError: not a JSON object.
    """
    try:
        card = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelRejectedError(f"{name} is not JSON ({exc}); send the .json card the export step wrote.") from exc
    if not isinstance(card, dict):
        raise ModelRejectedError(f"{name} must be a JSON object, got a {type(card).__name__}.")
    return card


@dataclass(frozen=True)
class _Staged:
    sha256: str
    file: str
    detector: Detector


def _stage(source: IO[bytes], settings: ServiceSettings, name: str) -> _Staged:
    """Steps 1 to 3 of the module doc: copy, check, then keep the copy under its sha256."""
    folder = settings.data_dir / MODELS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for stale in folder.glob(".incoming-*"):
        with contextlib.suppress(OSError):  # another promotion may remove it at the same time
            if now - stale.stat().st_mtime > _STALE_INCOMING_S:
                shutil.rmtree(stale)
    # A folder of its own per candidate, so the file can carry its final name while it is checked:
    # the detector's name (the file's stem) is then the same as when a service loads the kept copy.
    workdir = Path(tempfile.mkdtemp(prefix=".incoming-", dir=folder))
    try:
        incoming = workdir / "incoming"
        digest = hashlib.sha256()
        with incoming.open("wb") as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        sha256 = digest.hexdigest()
        checked = workdir / f"{sha256}.onnx"
        incoming.rename(checked)
        detector = load_model(checked, settings, name=name)
        final = folder / checked.name
        os.replace(checked, final)
        fsync_path(folder)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return _Staged(sha256=sha256, file=f"{MODELS_DIR}/{final.name}", detector=detector)


def _record(
    sessions: sessionmaker[Session],
    staged: _Staged,
    *,
    promoted_by: str,
    comment: str | None,
    card: dict[str, Any] | None,
    replacing: str | None,
) -> Promotion:
    with write_session(sessions) as session:
        current = current_model(session)
        row = ModelPromotion(
            sha256=staged.sha256,
            file=staged.file,
            promoted_at=utcnow(),
            promoted_by=promoted_by,
            previous_sha256=current.sha256 if current is not None else replacing,
            card=card,
            comment=comment,
        )
        session.add(row)
        session.flush()
        return Promotion.of(row)


def _file_sha256(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None


def promote(
    sessions: sessionmaker[Session],
    settings: ServiceSettings,
    source: IO[bytes],
    *,
    name: str,
    promoted_by: str,
    comment: str | None = None,
    card: dict[str, Any] | None = None,
    replacing: str | None = None,
) -> tuple[Promotion, Detector]:
    """Check a candidate model, keep a copy under the data folder and record its promotion.

    Args:
        sessions: the service's database.
        settings: the data folder, thresholds and thread count.
        source: the model file's bytes, read to the end.
        name: how messages call the file (its name as given).
        promoted_by: who promotes it.
        comment: why.
        card: its model card.
        replacing: the sha256 of the model it replaces when none was promoted before (the model a
            running service loaded); default: that of ``settings.model_path``.

    Returns:
        The new promotion and its detector, loaded and warm.

    Raises:
        ModelRejectedError: the file cannot serve (nothing is kept or recorded).
    """
    staged = _stage(source, settings, name)
    if replacing is None:
        replacing = _file_sha256(settings.model_path)
    promotion = _record(sessions, staged, promoted_by=promoted_by, comment=comment, card=card, replacing=replacing)
    return promotion, staged.detector


def rollback(
    sessions: sessionmaker[Session], settings: ServiceSettings, *, promoted_by: str, comment: str | None = None
) -> tuple[Promotion, Detector]:
    """Promote again the latest earlier model that differs from the current one, as a new row.

    With a single model in the history, that is the configured ``model_path`` it replaced, when the
    file there is still the same (it is then copied under the data folder like any promoted model).

    Returns:
        The new promotion and its detector, loaded and warm.

    Raises:
        NoEarlierModelError: no model was promoted, or the one before is not available any more.
        ModelRejectedError: the earlier model's file no longer loads.
    """
    with sessions() as session:
        history = list_promotions(session)
    if not history:
        raise NoEarlierModelError(
            "No model has been promoted, so there is nothing to roll back to: the service runs its configured "
            "model (VIPARE_MODEL_PATH). Promote one with vipare models promote FILE or POST /v1/models."
        )
    current = history[0]
    note = f"rollback: {comment}" if comment else "rollback"
    target = next((p for p in history if p.sha256 != current.sha256), None)
    if target is not None:
        detector = load_model(promotion_path(settings, target), settings, name=f"model {target.sha256}")
        staged = _Staged(sha256=target.sha256, file=target.file, detector=detector)
        card = target.card
    else:
        base = history[-1].previous_sha256
        if base is None or base == current.sha256 or _file_sha256(settings.model_path) != base:
            raise NoEarlierModelError(
                f"Model {current.sha256} is the only one in the history and the model it replaced is not "
                f"available (VIPARE_MODEL_PATH {settings.model_path} is missing or holds another file): there is "
                "nothing to roll back to. Promote the model you want with vipare models promote FILE."
            )
        with settings.model_path.open("rb") as source:
            staged = _stage(source, settings, settings.model_path.name)
        card = None
    promotion = _record(sessions, staged, promoted_by=promoted_by, comment=note, card=card, replacing=None)
    return promotion, staged.detector
