"""regression metrics, dataset task, trial plugin versions

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 13:40:00

Types are rendered as plain SQLAlchemy types, so a revision never imports the live models. Run
it on SQLite and PostgreSQL before committing.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hps_trial_epochs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mae", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("val_mae", sa.Float(), nullable=True))
    with op.batch_alter_table("hps_trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("plugin_versions", sa.JSON(), nullable=True))
    with op.batch_alter_table("hps_datasets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "task", sa.String(length=16), nullable=False, server_default="classification"
            )
        )
        batch_op.add_column(sa.Column("n_targets", sa.Integer(), nullable=True))
        batch_op.alter_column("n_classes", existing_type=sa.Integer(), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("hps_datasets", schema=None) as batch_op:
        batch_op.alter_column("n_classes", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("n_targets")
        batch_op.drop_column("task")
    with op.batch_alter_table("hps_trials", schema=None) as batch_op:
        batch_op.drop_column("plugin_versions")
    with op.batch_alter_table("hps_trial_epochs", schema=None) as batch_op:
        batch_op.drop_column("val_mae")
        batch_op.drop_column("mae")
