"""results_version: one counter that every change the leaderboard can see moves (a result
inserted, changed or deleted; a run's status changed; a run deleted), kept by the database
itself with triggers, so a cached leaderboard is valid exactly while the counter stands.

Revision ID: 0005
Revises: 0003

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BUMP = "UPDATE results_version SET version = version + 1 WHERE id = 1"
# (trigger name, table, event)
TRIGGERS = [
    ("results_version_results_ins", "results", "INSERT"),
    ("results_version_results_upd", "results", "UPDATE"),
    ("results_version_results_del", "results", "DELETE"),
    ("results_version_runs_status", "runs", "UPDATE OF status"),
    ("results_version_runs_del", "runs", "DELETE"),
]


def upgrade() -> None:
    op.create_table('results_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_results_version'))
    )
    op.execute("INSERT INTO results_version (id, version) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE FUNCTION results_version_bump() RETURNS trigger AS $$ BEGIN {BUMP}; RETURN NULL; END $$ "
                   "LANGUAGE plpgsql")
        for name, table, event in TRIGGERS:
            op.execute(f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH STATEMENT "
                       "EXECUTE FUNCTION results_version_bump()")
    else:
        for name, table, event in TRIGGERS:
            op.execute(f"CREATE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW BEGIN {BUMP}; END")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for name, table, _ in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (f" ON {table}" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS results_version_bump()")
    op.drop_table('results_version')
