"""multi-objective studies: a trial's value per objective

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 20:40:00

Types are rendered as plain SQLAlchemy types, so a revision never imports the live models. Run
it on SQLite and PostgreSQL before committing.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hps_trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("objective_values", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hps_trials", schema=None) as batch_op:
        batch_op.drop_column("objective_values")
