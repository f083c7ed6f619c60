"""uploaded data sets: the token that uploaded each (a write token deletes only its own)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 21:40:00

Types are rendered as plain SQLAlchemy types, so a revision never imports the live models. Run
it on SQLite and PostgreSQL before committing.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hps_datasets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_token_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_hps_datasets_owner_token_id_hps_api_tokens"),
            "hps_api_tokens",
            ["owner_token_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("hps_datasets", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_hps_datasets_owner_token_id_hps_api_tokens"), type_="foreignkey"
        )
        batch_op.drop_column("owner_token_id")
