"""trials: whether a trial is a confirmation (it retrains one of the study's best configurations)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 23:55:00

Types are rendered as plain SQLAlchemy types, so a revision never imports the live models. Run
it on SQLite and PostgreSQL before committing.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hps_trials", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("confirmation", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("hps_trials", schema=None) as batch_op:
        batch_op.drop_column("confirmation")
