"""Service settings: the library's settings plus where data lives, how to listen and how incidents group.

Read once, from ``VIPARE_*`` environment variables (or passed explicitly), like the library's own
:class:`vipare.Settings`, which this class extends: one object carries the model, intake limits and
thresholds as well as the service's options.

CPU budget (STYLE point 13). Each analysis runs one onnxruntime ``session.run`` with
``intra_op_threads`` threads; each worker process runs up to ``analysis_slots`` analyses at once;
uvicorn runs ``workers`` processes. Keep::

    workers x analysis_slots x intra_op_threads <= CPU cores

The service defaults to one thread per analysis and as many slots as cores per worker, which keeps
every core busy under concurrent uploads. For the lowest latency of a single upload on an idle
machine, use ``analysis_slots=1`` and ``intra_op_threads=cores`` instead.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from vipare.settings import Settings

__all__ = ["S3_SCHEME", "ServiceSettings", "UnsafeConfigurationError", "check_exposure", "is_loopback"]

SQLITE_FILE = "vipare.db"
S3_SCHEME = "s3://"
"""How ``photo_store`` names a bucket: ``s3://bucket/prefix``."""
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
"""The names of this machine a request on a loopback interface may carry as its ``Host``."""


PLAN_IGN_TILES = (
    "https://data.geopf.fr/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0&LAYER=GEOGRAPHICALGRIDSYSTEMS.PLANIGNV2"
    "&STYLE=normal&TILEMATRIXSET=PM&FORMAT=image/png&TILEMATRIX={z}&TILEROW={y}&TILECOL={x}"
)
"""The Géoplateforme's Plan IGN as a Web Mercator WMTS tile template: streets of every French commune."""
PLAN_IGN_ATTRIBUTION = '&copy; <a href="https://www.ign.fr/">IGN</a> &ndash; Géoplateforme, Plan IGN'

class UnsafeConfigurationError(RuntimeError):
    """The service would start in a state that exposes data or cannot work; the message says what to do."""


class ServiceSettings(Settings):
    """Settings of the HTTP service; every field reads ``VIPARE_<NAME>`` from the environment.

    As for :class:`vipare.Settings`, a keyword argument that names no field is an error, while
    ``VIPARE_*`` environment variables that name no field are not read.
    """

    model_config = SettingsConfigDict(env_prefix="VIPARE_", extra="forbid")

    # -- where data lives
    data_dir: Path = Field(
        Path("vipare-data"), description="Folder for the SQLite database and the photo store (created)."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/vipare; default: an SQLite file "
        "in data_dir.",
    )
    photo_store: str = Field(
        "",
        description="Where photos are kept: empty for the folder photos/ under data_dir, or s3://bucket/prefix for "
        "a bucket of an S3-compatible store several hosts can share (the [s3] extra; credentials and region from "
        "the standard AWS environment variables and files, as boto3 reads them).",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="The S3 API's URL for a store other than AWS (MinIO, Garage, Scaleway, OVH...), "
        "e.g. https://s3.fr-par.scw.cloud; default: AWS.",
    )
    sqlite_busy_timeout_ms: int = Field(
        10_000, ge=0, description="How long an SQLite writer waits for another one before failing."
    )
    db_pool_size: int = Field(
        5,
        ge=1,
        description="PostgreSQL: connections each worker keeps open. Keep workers x (db_pool_size + "
        "db_max_overflow), plus batch jobs and other clients, under the server's max_connections.",
    )
    db_max_overflow: int = Field(
        10,
        ge=0,
        description="PostgreSQL: connections a worker may open beyond db_pool_size at busy times (closed after).",
    )
    db_pool_timeout_s: float = Field(
        30.0,
        gt=0,
        description="PostgreSQL: how long a request waits for a free connection of its worker's pool before failing.",
    )

    # -- how to listen
    host: str = Field("127.0.0.1", description="Interface to bind; the trial mode is refused beyond loopback.")
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, description="uvicorn worker processes (see the CPU budget above).")
    intra_op_threads: int = Field(
        1, ge=0, description="onnxruntime threads per analysis (0: all cores); see the CPU budget above."
    )
    analysis_slots: int = Field(
        0, ge=0, description="Photos analysed at once per worker; 0: cores // (workers x intra_op_threads)."
    )
    log_level: str = Field("INFO", description="Level of the service's JSON log lines.")
    model_check_s: float = Field(
        5.0,
        gt=0,
        description="How often each worker looks for a newly promoted model (vipare models, POST /v1/models) "
        "and switches to it, in seconds.",
    )
    header_timeout_s: int = Field(
        10,
        ge=1,
        description="A connection that has not sent a whole request's headers this long after it opened or after "
        "the previous answer is closed (also uvicorn's keep-alive timeout).",
    )

    # -- who may call: keys, trial mode, trusted hosts and origins, the public URL (see serving/README.md)
    trial_mode: bool = Field(
        False,
        description="Until the first API key is created, serve callers without one (a local trial); loopback only.",
    )
    public_url: str | None = Field(
        None,
        description="The service's address as clients reach it, e.g. https://vipare.example.org; absolute links "
        "(Open311 media_url, GeoJSON paging) are built from it. None: links are relative.",
    )
    trusted_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names requests may be addressed to (comma-separated; '*.example.org' and '*' allowed). "
        "Default: the public URL's host, and the loopback names when listening on loopback.",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Other origins whose pages may send state-changing requests (comma-separated, e.g. "
        "https://intranet.example.org); the service's own origin always may.",
    )

    # -- incidents: when does a report join an existing incident?
    incident_radius_m: float = Field(
        30.0, gt=0, description="A deposit joins an open incident of its class family within this distance."
    )
    incident_window_days: float = Field(
        7.0,
        gt=0,
        description="...and only if that incident was last seen at most this long before the photo was taken.",
    )
    depot_lat: float | None = Field(
        None, ge=-90, le=90, description="Where the crews' rounds start and end (the depot), latitude; "
        "a round may also give its own."
    )
    depot_lon: float | None = Field(None, ge=-180, le=180, description="The depot's longitude.")
    timezone: str = Field(
        "Europe/Paris",
        description="The city's time zone (IANA name): a round's day runs from midnight to midnight there.",
    )
    after_photo_max_m: float = Field(
        100.0, gt=0,
        description="A photo sent as taken after an incident's cleaning must be taken at most this far from it.",
    )
    merge_max_distance_m: float = Field(
        100.0,
        gt=0,
        description="A duplicate merges only into an open incident at most this far away, unless the manager "
        "sends force (recorded in the history).",
    )

    # -- retention: a photo is kept while its deposit is handled and reviewed (serving.retention)
    photo_retention_days: int = Field(
        90,
        ge=1,
        description="Photos of cleaned, rejected and duplicate incidents, and of reports that reached none, are "
        "deleted this many days after the incident's last change and the report's reception (vipare photos "
        "purge, and a daily pass of the service).",
    )
    keep_originals_days: int = Field(
        0,
        ge=0,
        le=30,
        description="Keep each upload's unblurred original this many days, readable only by a privacy_officer "
        "key, every read logged with its reason (serving.originals); 0: never kept (the default).",
    )

    # -- addresses: the nearest address of each incident, offline (serving.addresses)
    addresses_path: Path | None = Field(
        None,
        description="Address index made from the Base Adresse Nationale's export of the city's département "
        "(vipare addresses import adresses-XX.csv.gz --out PATH); the list, the detail, the exports and "
        "Open311 then carry each incident's nearest address. None: no addresses.",
    )
    address_max_distance_m: float = Field(
        100.0,
        gt=0,
        description="An incident farther than this from every address of the index has none, in metres.",
    )

    # -- queries
    page_size: int = Field(100, ge=1, description="Default number of items per page.")
    max_page_size: int = Field(1000, ge=1, description="Largest page a client may ask for.")
    max_batch_frames: int = Field(
        100, ge=1, description="Most frames in one POST /v1/batches (its body has the byte limit of one upload)."
    )
    orphan_grace_s: float = Field(
        3600.0,
        ge=0,
        description="While other workers run, unreferenced photo files younger than this are kept at start-up "
        "(they may belong to an upload in flight).",
    )

    # -- pages: the maps' background (the national Plan IGN by default); "none": a plain background
    tile_url: str | None = Field(
        PLAN_IGN_TILES,
        description="Map tile URL template for the pages ({z}, {x}, {y}), e.g. a self-hosted "
        "https://tiles.example.fr/{z}/{x}/{y}.png. Default: the Géoplateforme's Plan IGN (WMTS, open licence). "
        "'none' or empty: markers on a plain background and no tile request at all.",
    )
    tile_attribution: str | None = Field(
        None,
        description="Attribution shown with the tiles (HTML, as the provider asks). Default: IGN's for Plan IGN, "
        "none for another tile server.",
    )
    export_keep_hours: int = Field(
        24, ge=1, le=24 * 30,
        description="Keep an export job's file this many hours after it is done (serving.export_jobs).",
    )
    upload_long_side: int = Field(
        2048, ge=0, le=20000,
        description="The agent's page resizes a photo to at most this many pixels on its long side before it sends "
        "it (0: it sends the original). The model reads far fewer; a manager zooming in needs about this.",
    )
    upload_jpeg_quality: float = Field(
        0.85, gt=0.0, le=1.0, description="JPEG quality of the agent page's resized photos (0-1]."
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone name (IANA, e.g. Europe/Paris)") from None
        return value

    @field_validator("tile_url", mode="before")
    @classmethod
    def _no_tiles(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("", "none") else value

    @field_validator("tile_attribution")
    @classmethod
    def _attribution(cls, value: str | None, info: ValidationInfo) -> str:
        if value is not None:
            return value
        return PLAN_IGN_ATTRIBUTION if info.data.get("tile_url") == PLAN_IGN_TILES else ""

    @field_validator("trusted_hosts", "allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("photo_store")
    @classmethod
    def _photo_store(cls, value: str) -> str:
        if not value:
            return ""
        bucket = value.removeprefix(S3_SCHEME).split("/", 1)[0]
        if not value.startswith(S3_SCHEME) or not bucket:
            raise ValueError(
                f"photo_store is s3://bucket/prefix (or empty for the folder under data_dir), not {value!r}"
            )
        return value.rstrip("/")

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"s3_endpoint_url must be an http(s) URL, not {value!r}")
        return value.rstrip("/")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"public_url must be an http(s) URL without query or fragment, not {value!r}")
        return value.rstrip("/")

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                raise ValueError(f"an allowed origin is scheme://host[:port], not {origin!r}")
        return [origin.rstrip("/").lower() for origin in value]

    @model_validator(mode="after")
    def _page_sizes(self) -> ServiceSettings:
        if self.page_size > self.max_page_size:
            raise ValueError(f"page_size ({self.page_size}) must not exceed max_page_size ({self.max_page_size})")
        return self

    @property
    def resolved_database_url(self) -> str:
        """``database_url``, or the SQLite file under ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / SQLITE_FILE).resolve()}"

    @property
    def host_names(self) -> tuple[str, ...]:
        """The names requests may be addressed to (``Host`` without its port); ``("*",)``: any.

        ``trusted_hosts`` when set; else the public URL's host, plus the loopback names when listening
        on loopback; any host when neither applies (listening beyond loopback with no public URL).
        """
        if self.trusted_hosts:
            return tuple(name.lower() for name in self.trusted_hosts)
        names: list[str] = []
        if self.public_url:
            names.append(str(urlsplit(self.public_url).hostname))
        if is_loopback(self.host):
            names.extend(LOOPBACK_NAMES)
        return tuple(names) or ("*",)

    def link(self, path_and_query: str) -> str:
        """A link to this service for other systems: under ``public_url`` when set, else relative.

        Never built from a request's ``Host``, which the client chooses.

        Args:
            path_and_query: the target, from the root, e.g. ``/v1/reports/3/image``.
        """
        return f"{self.public_url}{path_and_query}" if self.public_url else path_and_query

    @property
    def photo_dir(self) -> Path:
        """Folder of the photo store, when ``photo_store`` names no bucket."""
        return self.data_dir / "photos"

    @property
    def export_dir(self) -> Path:
        """Folder of the export jobs' files."""
        return self.data_dir / "exports"

    @property
    def effective_analysis_slots(self) -> int:
        """``analysis_slots``, or what fits the CPU budget when it is 0."""
        if self.analysis_slots:
            return self.analysis_slots
        cores = os.cpu_count() or 1
        threads = self.intra_op_threads or cores
        return max(1, cores // (self.workers * threads))


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_exposure(settings: ServiceSettings) -> None:
    """Refuse the trial mode beyond this machine.

    The trial mode (``trial_mode``) serves callers without a key while no key exists (see
    :mod:`serving.auth`), which is only acceptable on loopback. Without it, a service with no key
    answers every API call 401, wherever it listens.

    Raises:
        UnsafeConfigurationError: ``trial_mode`` is set and ``settings.host`` is not loopback.
    """
    if settings.trial_mode and not is_loopback(settings.host):
        raise UnsafeConfigurationError(
            f"refusing to listen on {settings.host} in trial mode: anyone who reaches it could read and change "
            "incidents without a key. Unset VIPARE_TRIAL_MODE and create a key (vipare keys create --role admin), "
            "or bind to 127.0.0.1."
        )
