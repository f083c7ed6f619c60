"""issued API tokens with scopes and limits; the token that submitted each study

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 05:20:00

Types are rendered as plain SQLAlchemy types, so a revision never imports the live models. Run
it on SQLite and PostgreSQL before committing.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "hps_api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=8), nullable=False),
        sa.Column("max_priority", sa.Integer(), nullable=True),
        sa.Column("max_queued_trials", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hps_api_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_hps_api_tokens_name")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_hps_api_tokens_token_sha256")),
    )
    with op.batch_alter_table("hps_studies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_token_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_hps_studies_owner_token_id_hps_api_tokens"),
            "hps_api_tokens",
            ["owner_token_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("hps_studies", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_hps_studies_owner_token_id_hps_api_tokens"), type_="foreignkey"
        )
        batch_op.drop_column("owner_token_id")
    op.drop_table("hps_api_tokens")
