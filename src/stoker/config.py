"""Typed configuration: one settings object per process, read from ``STOKER_*`` variables.

Unknown ``STOKER_`` keys passed explicitly are errors, and :meth:`validate` fails fast on
values that cannot work together.
"""

from __future__ import annotations

import base64
import json
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from stoker.errors import ConfigError, DurationError

DEFAULT_MAX_PAYLOAD_BYTES = 4 * 1024 * 1024


def data_dir() -> Path:
    """Where ``stoker lite`` keeps its Postgres data and profile (``STOKER_HOME`` overrides)."""
    home = os.environ.get("STOKER_HOME")
    return Path(home) if home else Path(platformdirs.user_data_dir("stoker"))


def profile_path() -> Path:
    """The lite profile file the SDK reads when no address/token is configured."""
    explicit = os.environ.get("STOKER_PROFILE")
    return Path(explicit) if explicit else data_dir() / "profile.json"


_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: str | float | timedelta | None, what: str) -> timedelta | None:
    """``"30s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"250ms"``, seconds as a number, or timedelta.

    Anything else raises :class:`~stoker.errors.DurationError` naming ``what``: a
    DeclarationError (durations mostly come from task options) that is also a ConfigError.
    """
    if value is None:
        return None
    try:
        if isinstance(value, timedelta):
            result = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            result = timedelta(seconds=value)
        elif isinstance(value, str) and (m := _DURATION.match(value.lower())):
            result = timedelta(seconds=float(m["n"]) * _UNIT_SECONDS[m["unit"]])
        else:
            raise DurationError(f"{what}: {value!r} is not a duration such as '30s', '5m' or '2h'")
    except (OverflowError, ValueError):  # past timedelta's range, or not a number (nan)
        raise DurationError(f"{what}: {value!r} is out of range for a duration") from None
    if result < timedelta(0):
        raise DurationError(f"{what}: {value!r} is negative")
    return result


class EngineSettings(BaseSettings):
    """Settings of an engine process (``STOKER_`` + field name, upper case)."""

    model_config = SettingsConfigDict(env_prefix="STOKER_", extra="forbid", frozen=True)

    database_url: str = Field(
        default="", validation_alias="DATABASE_URL", description="Postgres connection URL."
    )
    schema_name: str = Field(default="stoker", description="Postgres schema for Stoker's tables.")
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 7077
    http_host: str = "127.0.0.1"
    http_port: int = 7078
    http_enabled: bool = True
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    # Run the engine's event loop on uvloop when it is installed (docs/performance.md).
    uvloop: bool = True
    pool_size: int = 10
    # 0: group commit (flush at once; what arrives during a flush forms the next batch).
    flush_interval_ms: float = 0.0
    flush_max_items: int = 1000
    scheduler_batch: int = 1000
    scheduler_poll_s: float = 1.0
    scheduler_defer_ms: int = 250
    heartbeat_interval_s: float = 2.0
    worker_dead_after_s: float = 10.0
    controller_interval_s: float = 1.0
    # How often each replica checks that attempts in flight on its workers have not ended
    # elsewhere (a cancel signal from another replica that was lost).
    reconcile_interval_s: float = 5.0
    # Run history (docs/storage.md): finished runs move out of the live tables after
    # history_after_s; history and events are kept retention_days, in day partitions
    # created partitions_ahead_days ahead; archive_interval_s paces the moving.
    history_after_s: float = 60.0
    retention_days: int = 30
    partitions_ahead_days: int = 7
    archive_interval_s: float = 5.0
    # Statistics upkeep that does not wait for autovacuum: the queue is analyzed after
    # queue_analyze_after_runs runs were enqueued, the live run tables vacuumed after
    # vacuum_after_moved_runs runs moved to history (or a minute after any move).
    queue_analyze_after_runs: int = 10_000
    vacuum_after_moved_runs: int = 20_000
    max_requeues: int = 20
    # How long the request key of a trigger call is remembered, so that a retry of the
    # call returns its runs instead of making new ones (docs/idempotency.md).
    request_key_ttl_s: float = 600.0
    lease_ttl_s: float = 10.0
    engine_id: str = ""
    # Security (README "Security"): how long a replica trusts a verified token before
    # checking it again (bounds how late a revocation can take effect if its notification is
    # lost), and how often last-used times are written.
    auth_cache_ttl_s: float = 0.5
    token_last_used_interval_s: float = 60.0
    # TLS for gRPC and HTTP: a PEM certificate (chain) and its key; with a client CA, clients
    # must present a certificate it signed (mutual TLS).
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    # Concurrent calls (HTTP/2 streams) one connection may have open.
    grpc_max_concurrent_streams: int = 1000
    # The event-loop watchdog (engine/watchdog.py): a loop blocked this long gets the stacks
    # of every thread written to stderr; 0 turns it off.
    loop_stall_s: float = 10.0
    # Metrics (docs/metrics.md): how long a scrape reuses the queue state read from
    # Postgres, and how many (tenant, task) label pairs the engine reports before summing
    # the rest under task="_other".
    metrics_cache_s: float = 1.0
    metrics_max_series: int = 20_000
    # Additional-metadata keys that label the runs_created/finished_by_metadata counters
    # (comma-separated; none by default), and how many distinct values of one key are
    # labelled before the rest count as "_other".
    metrics_metadata_labels: str = ""
    metrics_metadata_max_values: int = 100
    # Live streams (README "Logs, streams and run events"): how long stored chunks are kept
    # for late readers, and how many bytes of one attempt's stream the engine stores
    # (chunks past it are dropped, whatever the worker's own bound says).
    stream_retention_s: float = 3600.0
    stream_attempt_max_bytes: int = 64 * 1024 * 1024
    # Incoming webhooks (README "Webhooks"): the key their secrets are encrypted with
    # (AES-256-GCM; 32 bytes, base64), and earlier keys still accepted for reading, comma-
    # separated, while a rotation is under way (the engine re-encrypts under the current key
    # at start). Without a key, webhooks cannot be created; `stoker lite` makes one.
    webhook_secret_key: str = ""
    webhook_old_secret_keys: str = ""
    # Bulk cancel and replay by filter (README "Acting on runs"): a filter matching more
    # runs than this needs an explicit confirm=true.
    bulk_cap: int = 1_000
    # The Hatchet front door (docs/hatchet.md): Hatchet's SDK served on a port of its own.
    hatchet_enabled: bool = False
    hatchet_port: int = 7079

    def validate_settings(self) -> EngineSettings:
        """Fails fast with ConfigError on values that cannot work."""
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set: the engine needs a Postgres to run on")
        if not self.database_url.startswith(("postgres://", "postgresql://")):
            raise ConfigError(
                f"DATABASE_URL must be a postgresql:// URL, got {self.database_url!r}"
            )
        from stoker.db.connect import check_schema

        check_schema(self.schema_name)
        if self.worker_dead_after_s <= self.heartbeat_interval_s:
            raise ConfigError(
                "STOKER_WORKER_DEAD_AFTER_S must exceed STOKER_HEARTBEAT_INTERVAL_S "
                f"({self.worker_dead_after_s} <= {self.heartbeat_interval_s})"
            )
        if self.retention_days < 1 or self.partitions_ahead_days < 1:
            raise ConfigError(
                "STOKER_RETENTION_DAYS and STOKER_PARTITIONS_AHEAD_DAYS must be at least 1"
            )
        if self.history_after_s < 0 or self.archive_interval_s <= 0:
            raise ConfigError(
                "STOKER_HISTORY_AFTER_S must be >= 0 and STOKER_ARCHIVE_INTERVAL_S positive"
            )
        if self.queue_analyze_after_runs < 1 or self.vacuum_after_moved_runs < 1:
            raise ConfigError(
                "STOKER_QUEUE_ANALYZE_AFTER_RUNS and STOKER_VACUUM_AFTER_MOVED_RUNS must be "
                "at least 1"
            )
        if self.request_key_ttl_s <= 0:
            raise ConfigError("STOKER_REQUEST_KEY_TTL_S must be positive")
        if not 1 <= self.bulk_cap <= 100_000:
            raise ConfigError(f"STOKER_BULK_CAP must be 1..100000, not {self.bulk_cap}")
        if self.max_payload_bytes <= 0 or self.flush_max_items <= 0 or self.scheduler_batch <= 0:
            raise ConfigError("payload limit, flush size and scheduler batch must be positive")
        if not 0 < self.grpc_port < 65536 or not 0 < self.http_port < 65536:
            raise ConfigError("ports must be between 1 and 65535")
        if self.hatchet_enabled and not 0 < self.hatchet_port < 65536:
            raise ConfigError("STOKER_HATCHET_PORT must be between 1 and 65535")
        if self.hatchet_enabled and self.worker_dead_after_s < 8:
            raise ConfigError(
                "Hatchet workers heartbeat every 4 s: with STOKER_HATCHET_ENABLED, "
                f"STOKER_WORKER_DEAD_AFTER_S must be at least 8 (it is {self.worker_dead_after_s})"
            )
        if self.hatchet_enabled and self.tls:
            raise ConfigError(
                "the Hatchet front door does not serve TLS yet: unset STOKER_HATCHET_ENABLED "
                "or the STOKER_TLS_* files (docs/hatchet.md)"
            )
        if not 0 < self.auth_cache_ttl_s <= 1.0:
            raise ConfigError(
                "STOKER_AUTH_CACHE_TTL_S must be in (0, 1]: revocation must take effect within "
                f"a second, got {self.auth_cache_ttl_s}"
            )
        if self.token_last_used_interval_s <= 0 or self.grpc_max_concurrent_streams <= 0:
            raise ConfigError(
                "STOKER_TOKEN_LAST_USED_INTERVAL_S and STOKER_GRPC_MAX_CONCURRENT_STREAMS "
                "must be positive"
            )
        if self.metrics_cache_s < 0 or self.metrics_max_series < 1:
            raise ConfigError(
                "STOKER_METRICS_CACHE_S must be >= 0 and STOKER_METRICS_MAX_SERIES at least 1"
            )
        self.metadata_label_keys()
        if self.metrics_metadata_max_values < 1:
            raise ConfigError("STOKER_METRICS_METADATA_MAX_VALUES must be at least 1")
        if self.stream_retention_s <= 0 or self.stream_attempt_max_bytes < 1:
            raise ConfigError(
                "STOKER_STREAM_RETENTION_S must be positive and STOKER_STREAM_ATTEMPT_MAX_BYTES "
                "at least 1"
            )
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError(
                "TLS needs both STOKER_TLS_CERT_FILE and STOKER_TLS_KEY_FILE (one is missing)"
            )
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError(
                "STOKER_TLS_CLIENT_CA_FILE (mutual TLS) needs STOKER_TLS_CERT_FILE and "
                "STOKER_TLS_KEY_FILE too"
            )
        for what, path in (
            ("STOKER_TLS_CERT_FILE", self.tls_cert_file),
            ("STOKER_TLS_KEY_FILE", self.tls_key_file),
            ("STOKER_TLS_CLIENT_CA_FILE", self.tls_client_ca_file),
        ):
            if path:
                read_pem(path, what)
        self.webhook_keys()
        return self

    def metadata_label_keys(self) -> list[str]:
        """The metadata keys of STOKER_METRICS_METADATA_LABELS (ConfigError for one that
        cannot be a Prometheus label name, or a label the counters have already)."""
        keys = [k.strip() for k in self.metrics_metadata_labels.split(",") if k.strip()]
        for key in keys:
            if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]{0,63}", key) or key.startswith("__"):
                raise ConfigError(
                    f"STOKER_METRICS_METADATA_LABELS: {key!r} cannot be a label name (letters, "
                    "digits and _, not starting with a digit or __)"
                )
            if key in ("tenant", "task", "status"):
                raise ConfigError(
                    f"STOKER_METRICS_METADATA_LABELS: {key!r} is a label the counters have"
                )
        if len(set(keys)) != len(keys) or len(keys) > 10:
            raise ConfigError("STOKER_METRICS_METADATA_LABELS: at most 10 distinct keys")
        return keys

    def webhook_keys(self) -> list[bytes]:
        """The webhook secret keys, current first (empty: none configured); ConfigError for
        one that is not 32 bytes in base64, or old keys without a current one."""
        old = [k.strip() for k in self.webhook_old_secret_keys.split(",") if k.strip()]
        if old and not self.webhook_secret_key:
            raise ConfigError(
                "STOKER_WEBHOOK_OLD_SECRET_KEYS needs STOKER_WEBHOOK_SECRET_KEY: the old keys "
                "only decrypt, secrets are re-encrypted under the current one"
            )
        keys = [self.webhook_secret_key.strip()] if self.webhook_secret_key.strip() else []
        return [_webhook_key(k, n) for n, k in enumerate(keys + old)]

    @property
    def tls(self) -> bool:
        """Whether the engine serves gRPC and HTTP over TLS."""
        return bool(self.tls_cert_file)

    @classmethod
    def load(cls, **overrides: Any) -> EngineSettings:
        """Reads the environment, applies ``overrides``, validates; ConfigError on nonsense."""
        try:
            settings = cls(**overrides)
        except ValidationError as exc:
            raise ConfigError(f"invalid engine settings: {exc}") from None
        return settings.validate_settings()


class ClientSettings(BaseSettings):
    """Settings of an SDK client or worker process.

    ``address`` and ``token`` come from ``STOKER_ADDRESS``/``STOKER_TOKEN``, else from the
    profile that ``stoker lite`` writes. ``address`` may list several engine replicas,
    comma-separated (``host1:7077,host2:7077``): clients and workers use the first that
    answers and move on to the next when it goes away.
    """

    model_config = SettingsConfigDict(env_prefix="STOKER_", extra="ignore", frozen=True)

    address: str = ""
    token: str = ""
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    connect_timeout_s: float = 30.0
    # Run a worker's event loop (Worker.start) on uvloop when it is installed.
    uvloop: bool = True
    heartbeat_interval_s: float = 2.0
    # TLS to the engine (README "Security"): on with STOKER_TLS=1 or when any file is given.
    # The engine's certificate is checked against the system's roots, or tls_ca_file; a
    # client certificate and key are presented when the engine asks for one (mutual TLS).
    tls: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # The name the engine's certificate must carry, when it is not the address' host.
    tls_server_name: str = ""
    # The Postgres schema of the engine's tables, for transactional enqueue
    # (run_no_wait(..., connection=conn) calls <schema_name>.enqueue_runs()).
    schema_name: str = "stoker"
    # Workers (README "Logs, streams and run events"): what one attempt may log (lines,
    # bytes, bytes a line) and stream (bytes), unless app.worker(...) or `stoker worker`
    # options say otherwise.
    log_max_lines: int = 1000
    log_max_bytes: int = 1024 * 1024
    log_line_max_bytes: int = 16 * 1024
    stream_max_bytes: int = 64 * 1024 * 1024

    @property
    def use_tls(self) -> bool:
        """Whether to connect over TLS."""
        return self.tls or bool(self.tls_ca_file or self.tls_cert_file)

    def check_tls(self) -> None:
        """ConfigError when the TLS files cannot work together or cannot be read."""
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError(
                "a client certificate needs both STOKER_TLS_CERT_FILE and STOKER_TLS_KEY_FILE"
            )
        for what, path in (
            ("STOKER_TLS_CA_FILE", self.tls_ca_file),
            ("STOKER_TLS_CERT_FILE", self.tls_cert_file),
            ("STOKER_TLS_KEY_FILE", self.tls_key_file),
        ):
            if path:
                read_pem(path, what)

    @classmethod
    def load(cls, **overrides: Any) -> ClientSettings:
        given = {k: v for k, v in overrides.items() if v is not None}
        try:
            settings = cls(**given)
        except ValidationError as exc:
            raise ConfigError(f"invalid client settings: {exc}") from None
        if not settings.address or not settings.token:
            profile = read_profile()
            settings = settings.model_copy(
                update={
                    "address": settings.address or profile.get("address", ""),
                    "token": settings.token or profile.get("token", ""),
                }
            )
        settings.check_tls()
        if not settings.address:
            raise ConfigError(
                "no engine address: set STOKER_ADDRESS (and STOKER_TOKEN), pass "
                "Stoker(address=..., token=...), or start `stoker lite` on this machine"
            )
        for part in settings.address.split(","):
            if not part.strip():
                raise ConfigError(
                    f"STOKER_ADDRESS {settings.address!r} has an empty entry: list engine "
                    "addresses separated by single commas, e.g. host1:7077,host2:7077"
                )
        return settings

    @property
    def addresses(self) -> list[str]:
        """The engine addresses to use, in order of preference."""
        return [a.strip() for a in self.address.split(",") if a.strip()]


def _webhook_key(text: str, n: int) -> bytes:
    what = "STOKER_WEBHOOK_SECRET_KEY" if n == 0 else "STOKER_WEBHOOK_OLD_SECRET_KEYS"
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(
            f"{what} must be 32 random bytes in base64 (make one with "
            '`python -c "import os, base64; print(base64.b64encode(os.urandom(32)).decode())"`)'
        )
    return key


def new_webhook_key() -> str:
    """A fresh webhook secret key, as STOKER_WEBHOOK_SECRET_KEY takes it."""
    return base64.b64encode(os.urandom(32)).decode()


def lite_webhook_key() -> str:
    """The webhook secret key of ``stoker lite``: made once and kept (mode 0600) in the data
    directory, so secrets stored by one lite run are readable by the next."""
    path = data_dir() / "webhook-secret.key"
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(new_webhook_key())
    tmp.chmod(0o600)
    tmp.replace(path)
    return path.read_text(encoding="utf-8").strip()


def read_pem(path: str, what: str) -> bytes:
    """The contents of a PEM file; ConfigError naming the setting when it cannot be used."""
    try:
        data = Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{what}: {path} is not a PEM file (no '-----BEGIN' line)")
    return data


def read_profile() -> dict[str, str]:
    """The lite profile (``{"address": ..., "token": ...}``), or {} when there is none."""
    path = profile_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the Stoker profile {path}: {exc}") from None
    return {k: str(v) for k, v in data.items() if k in ("address", "token", "http")}


def write_profile(address: str, token: str, http: str) -> Path:
    """Writes the lite profile (mode 0600) and returns its path."""
    path = profile_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"address": address, "token": token, "http": http}, indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path
