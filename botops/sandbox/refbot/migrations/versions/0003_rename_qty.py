"""contract: rename trades.qty to trades.quantity

Revision ID: 0003_rename_qty
Revises: 0002_trade_fee
Create Date: 2024-03-01 00:00:00

Not backward compatible: 1.x releases insert into trades.qty and cannot write trades
on this schema. Rolling back code across this revision requires downgrading the schema
(or restoring the pre-migration backup) first.
"""
from alembic import op

revision = "0003_rename_qty"
down_revision = "0002_trade_fee"
branch_labels = None
depends_on = None

botops_kind = "contract"

# How rows written on this schema map back onto the one before it: a rollback that restores the
# pre-migration backup carries the trades made since through this map (botops_ledger).
botops_ledger_map = {"trades": {"qty": "quantity"}}


def upgrade() -> None:
    op.execute("ALTER TABLE trades RENAME COLUMN qty TO quantity")


def downgrade() -> None:
    op.execute("ALTER TABLE trades RENAME COLUMN quantity TO qty")
