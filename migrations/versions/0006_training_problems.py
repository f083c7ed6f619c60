"""training problems: per-epoch gradient norms and dead units, per-trial problems

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 02:10:00

Types are rendered as plain SQLAlchemy types, so a revision never imports the live models. Run
it on SQLite and PostgreSQL before committing.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hps_trial_epochs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kernel_grad_norms", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("bias_grad_norms", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("dead_units", sa.Float(), nullable=True))
    with op.batch_alter_table("hps_trials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("problems", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("problem_labels", sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hps_trials", schema=None) as batch_op:
        batch_op.drop_column("problem_labels")
        batch_op.drop_column("problems")
    with op.batch_alter_table("hps_trial_epochs", schema=None) as batch_op:
        batch_op.drop_column("dead_units")
        batch_op.drop_column("bias_grad_norms")
        batch_op.drop_column("kernel_grad_norms")
