"""Service settings from `HPS_*` environment variables, built by a function, never at import."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HPS_", extra="ignore")

    data_dir: Path = Field(default=Path("hpsearch-data"), description="checkpoints, uploads, DB")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: SQLite file in data_dir. PostgreSQL: "
        "postgresql+psycopg://user@host/db",
    )
    artifact_url: str | None = Field(
        default=None,
        description="where checkpoints and uploads go: s3://bucket/prefix (an S3-compatible "
        "object store, so workers on many hosts need no shared file system; credentials from "
        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or a role); default: files under data_dir",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="the S3 API's address when it is not AWS's (MinIO: http://minio:9000)",
    )
    api_token: str | None = Field(default=None, description="bearer token(s), comma-separated")
    public_read: bool = Field(default=False, description="allow reads without a token")
    host: str = "127.0.0.1"
    allowed_hosts: str | None = Field(
        default=None,
        description="Host header names the server answers, comma-separated ('*.example.com' "
        "matches subdomains, '*' any); default: the loopback names when it listens on "
        "loopback (a web page's DNS rebinding cannot reach it), any name otherwise",
    )
    port: int = Field(default=8000, ge=1, le=65_535)
    max_upload_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    max_trials_per_study: int = Field(default=10_000, ge=1)
    max_epochs_per_trial: int = Field(default=1_000, ge=1)
    max_parallel_trials: int = Field(default=64, ge=1)
    max_timeout_s: float = Field(default=7 * 24 * 3600, gt=0)
    heartbeat_interval_s: float = Field(default=10.0, gt=0, description="worker and trial beat")
    worker_grace_s: float = Field(
        default=60.0, gt=0, description="a running trial silent this long is lost and retried"
    )
    max_dataset_bytes: int = Field(
        default=2 * 1024**3,
        ge=1,
        description="an uploaded NPZ's arrays, unpacked (a small compressed file can unpack to "
        "gigabytes; sizes are read from the headers first)",
    )
    max_model_parameters: int = Field(
        default=100_000_000,
        ge=1,
        description="the largest built-in model a spec's search space allows, in parameters "
        "(a worker holds about 16 bytes each with Adam; 100 M: 1.6 GB)",
    )
    max_retries: int = Field(default=2, ge=0, description="retries of one lost trial")
    epoch_flush_s: float = Field(
        default=1.0,
        ge=0,
        description="a running trial's epochs are written at most this often (0: every epoch)",
    )
    db_retry_s: float = Field(
        default=300.0,
        gt=0,
        description="how long a worker rides out an unreachable database (a restart) before "
        "giving up the write in hand",
    )
    db_prepared_statements: bool = Field(
        default=True,
        description="PostgreSQL: let psycopg prepare statements it runs often; false behind "
        "PgBouncer in transaction pooling before 1.21 (a prepared statement lives on one "
        "server connection, the next transaction may get another)",
    )

    plugins: str | None = Field(
        default=None,
        description="allow-list of plugin entry-point names, comma-separated (unset: every "
        "installed plugin; empty: none)",
    )
    migrate_on_start: bool = Field(
        default=False,
        description="the server migrates its database at start (`hpsearch serve --migrate`); "
        "the embedded SQLite default always is",
    )

    @property
    def host_names(self) -> list[str]:
        """`allowed_hosts` as a list, its default resolved against the bound `host`."""
        if self.allowed_hosts is not None:
            return [name.strip() for name in self.allowed_hosts.split(",") if name.strip()]
        if self.host in LOOPBACK_HOSTS:
            return ["localhost", "127.0.0.1", "[::1]"]
        return ["*"]

    @field_validator("database_url", "s3_endpoint_url")
    @classmethod
    def _blank_is_default(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("artifact_url")
    @classmethod
    def _an_s3_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith("s3://") or len(value) <= len("s3://"):
            raise ValueError(f"must look like s3://bucket or s3://bucket/prefix, got {value!r}")
        return value

    @property
    def plugin_allow_list(self) -> frozenset[str] | None:
        """The plugins the server and its workers load; None: every installed one."""
        if self.plugins is None:
            return None
        return frozenset(name.strip() for name in self.plugins.split(",") if name.strip())

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'hpsearch.db').resolve()}"

    @property
    def is_embedded_sqlite(self) -> bool:
        return self.database_url is None

    @property
    def checkpoint_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def upload_dir(self) -> Path:
        return self.data_dir / "uploads"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (tests override the FastAPI dependency instead)."""
    return Settings()
