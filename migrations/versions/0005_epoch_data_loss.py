"""epoch data loss: the loss without the regularization penalty, per epoch

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 01:20:00

Types are rendered as plain SQLAlchemy types, so a revision never imports the live models. Run
it on SQLite and PostgreSQL before committing.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hps_trial_epochs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("data_loss", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("val_data_loss", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hps_trial_epochs", schema=None) as batch_op:
        batch_op.drop_column("val_data_loss")
        batch_op.drop_column("data_loss")
