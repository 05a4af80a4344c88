"""expand: add nullable trades.fee

Revision ID: 0002_trade_fee
Revises: 0001_initial
Create Date: 2024-02-01 00:00:00

Additive only: release 1.0.0, which does not know the column, still runs on this schema
(its inserts leave fee NULL).
"""
from alembic import op

revision = "0002_trade_fee"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

botops_kind = "expand"


def upgrade() -> None:
    op.execute("ALTER TABLE trades ADD COLUMN fee numeric NULL")


def downgrade() -> None:
    op.execute("ALTER TABLE trades DROP COLUMN fee")
