"""The service's tables (SQLAlchemy 2 typed ORM).

Optuna's RDB storage lives in the same database and owns tables named `studies`, `trials`,
`alembic_version`, ...; ours are all prefixed `hps_` and our Alembic keeps its own version table
(`hps_alembic_version`), so the two schemas never collide.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from service.states import StudyStatus as StudyStatus  # re-exported: the tables' states
from service.states import TrialState as TrialState

TABLE_PREFIX = "hps_"

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use datetime.now(UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: UTCDateTime}


class Study(Base):
    __tablename__ = "hps_studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default=StudyStatus.QUEUED)
    priority: Mapped[int] = mapped_column(default=0)
    direction: Mapped[str] = mapped_column(String(8))
    objective_metric: Mapped[str] = mapped_column(String(32))
    n_trials: Mapped[int]
    max_parallel_trials: Mapped[int] = mapped_column(default=1)
    timeout_s: Mapped[float | None] = mapped_column(Float)
    optuna_study_name: Mapped[str] = mapped_column(String(100), unique=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    best_trial_id: Mapped[int | None] = mapped_column(
        ForeignKey("hps_trials.id", ondelete="SET NULL", use_alter=True)
    )
    best_value: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    owner_token_id: Mapped[int | None] = mapped_column(
        ForeignKey("hps_api_tokens.id", ondelete="SET NULL")
    )
    """The issued token that submitted the study (None: a server token, HPS_API_TOKEN)."""

    trials: Mapped[list[Trial]] = relationship(
        back_populates="study",
        foreign_keys="Trial.study_id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    __table_args__ = (
        # the queue's claim: status, then priority (desc), then age
        Index("ix_hps_studies_queue", "status", "priority", "created_at"),
    )


class Trial(Base):
    __tablename__ = "hps_trials"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("hps_studies.id", ondelete="CASCADE"))
    number: Mapped[int]
    optuna_trial_id: Mapped[int | None]
    state: Mapped[str] = mapped_column(String(16), default=TrialState.RUNNING)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    value: Mapped[float | None] = mapped_column(Float)
    objective_values: Mapped[list[float | None] | None] = mapped_column(JSON)
    """A multi-objective study's values, one per objective (the first is `value`)."""
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    best_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    epochs_run: Mapped[int] = mapped_column(default=0)
    best_epoch: Mapped[int | None]
    stopped_early: Mapped[bool] = mapped_column(Boolean, default=False)
    diagnosis: Mapped[str | None] = mapped_column(String(40))
    diagnosis_detail: Mapped[str | None] = mapped_column(Text)
    device: Mapped[str | None] = mapped_column(String(32))
    worker_id: Mapped[int | None] = mapped_column(
        ForeignKey("hps_workers.id", ondelete="SET NULL", use_alter=True)
    )
    duration_s: Mapped[float | None] = mapped_column(Float)
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    last_checkpoint_path: Mapped[str | None] = mapped_column(Text)
    retry_of_id: Mapped[int | None] = mapped_column(
        ForeignKey("hps_trials.id", ondelete="SET NULL")
    )
    confirmation: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """A confirmation: it retrains one of the study's best configurations with its own seed
    (`service.queue.confirmation`), never pruned."""
    resumed_from_epoch: Mapped[int | None]
    plugin_versions: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    problems: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    """Training problems found (label, epoch, evidence, hint), `trainer.problems`."""
    problem_labels: Mapped[str | None] = mapped_column(String(300))
    """The problems' labels as `,a,b,`: what the trial list filters on (LIKE '%,a,%'), the
    same SQL on SQLite and PostgreSQL."""
    """Distribution → version of the installed plugins the trial used."""
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]

    study: Mapped[Study] = relationship(back_populates="trials", foreign_keys=[study_id])
    epochs: Mapped[list[TrialEpoch]] = relationship(
        back_populates="trial",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="TrialEpoch.epoch",
    )

    __table_args__ = (
        UniqueConstraint("study_id", "number"),
        Index("ix_hps_trials_study_state", "study_id", "state"),
        Index("ix_hps_trials_study_value", "study_id", "value"),
        # A study's retries, counted at every claim and every trial's end (see
        # `service.queue.claim.slots_taken`): only the few rows that are retries. Unique, as
        # that count relies on: a trial is retried at most once.
        Index(
            "ix_hps_trials_study_retries",
            "study_id",
            "retry_of_id",
            unique=True,
            postgresql_where=text("retry_of_id IS NOT NULL"),
            sqlite_where=text("retry_of_id IS NOT NULL"),
        ),
    )


class TrialEpoch(Base):
    __tablename__ = "hps_trial_epochs"

    trial_id: Mapped[int] = mapped_column(
        ForeignKey("hps_trials.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(primary_key=True)
    loss: Mapped[float | None] = mapped_column(Float)
    accuracy: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    val_accuracy: Mapped[float | None] = mapped_column(Float)
    lr: Mapped[float | None] = mapped_column(Float)
    mae: Mapped[float | None] = mapped_column(Float)
    val_mae: Mapped[float | None] = mapped_column(Float)
    data_loss: Mapped[float | None] = mapped_column(Float)
    val_data_loss: Mapped[float | None] = mapped_column(Float)
    kernel_grad_norms: Mapped[list[float] | None] = mapped_column(JSON)
    bias_grad_norms: Mapped[list[float | None] | None] = mapped_column(JSON)
    dead_units: Mapped[float | None] = mapped_column(Float)

    trial: Mapped[Trial] = relationship(back_populates="epochs")


class Worker(Base):
    __tablename__ = "hps_workers"

    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="idle")
    current_trial_id: Mapped[int | None] = mapped_column(
        ForeignKey("hps_trials.id", ondelete="SET NULL", use_alter=True)
    )
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_hps_workers_heartbeat", "heartbeat_at"),)


class ApiToken(Base):
    """A token issued through the API (`POST /tokens`), with its scope and limits. Only its
    SHA-256 is stored; revoking it takes effect without a restart."""

    __tablename__ = "hps_api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(8))
    max_priority: Mapped[int | None]
    max_queued_trials: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Dataset(Base):
    __tablename__ = "hps_datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(255))
    n_rows: Mapped[int]
    n_features: Mapped[int]
    n_classes: Mapped[int | None]
    """None for a regression data set."""
    task: Mapped[str] = mapped_column(
        String(16), default="classification", server_default="classification"
    )
    n_targets: Mapped[int | None]
    """Regression: target columns (None for classification)."""
    owner_token_id: Mapped[int | None] = mapped_column(
        ForeignKey("hps_api_tokens.id", ondelete="SET NULL")
    )
    """The issued token that uploaded it (None: a server token, HPS_API_TOKEN)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
