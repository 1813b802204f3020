"""a team on one database: users with quotas, token owners, scopes and expiry, experiment and
sweep owners, experiment priorities, the dispatcher's lease and the replicas' heartbeats.

Existing tokens become admin tokens of a user named after the token; existing experiments are
owned by the user whose token submitted them where an idempotency key recorded it, and by no one
otherwise (only admins act on those).

Revision ID: 0006
Revises: 0005

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('users',
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('max_runs', sa.Integer(), nullable=True),
    sa.Column('max_cpus', sa.Float(), nullable=True),
    sa.Column('max_gpus', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('leases',
    sa.Column('name', sa.String(length=40), nullable=False),
    sa.Column('holder', sa.String(length=200), nullable=True),
    sa.Column('token', sa.BigInteger(), nullable=False),
    sa.Column('acquired_at', sa.Float(), nullable=False),
    sa.Column('expires_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.execute("INSERT INTO leases (name, holder, token, acquired_at, expires_at) VALUES ('dispatcher', NULL, 0, 0, 0)")
    op.create_table('replicas',
    sa.Column('id', sa.String(length=200), nullable=False),
    sa.Column('host', sa.String(length=200), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('version', sa.String(length=100), nullable=False),
    sa.Column('started_at', sa.Float(), nullable=False),
    sa.Column('seen_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    # Plain ADD COLUMN (no batch rebuild: on SQLite a rebuild of a parent table cascade-deletes
    # its children, see 0003). NOT NULL columns carry a server default for the rows already there.
    op.add_column('api_tokens', sa.Column('user', sa.String(length=100), nullable=False, server_default=''))
    op.add_column('api_tokens', sa.Column('scopes', sa.String(length=100), nullable=False, server_default='admin'))
    op.add_column('api_tokens', sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('experiments', sa.Column('owner', sa.String(length=100), nullable=True))
    op.add_column('experiments', sa.Column('priority', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('sweeps', sa.Column('owner', sa.String(length=100), nullable=True))
    op.execute('UPDATE api_tokens SET "user" = name')
    op.execute("INSERT INTO users (name, created_at) SELECT DISTINCT name, CURRENT_TIMESTAMP FROM api_tokens")
    op.execute('UPDATE experiments SET owner = (SELECT t."user" FROM idempotency_keys k JOIN api_tokens t ON t.id = k.scope '
               'WHERE k.experiment_id = experiments.id LIMIT 1)')
    op.execute("UPDATE sweeps SET owner = (SELECT e.owner FROM experiments e WHERE e.id = sweeps.experiment_id)")


def downgrade() -> None:
    op.drop_column('sweeps', 'owner')  # SQLite >= 3.35: ALTER TABLE DROP COLUMN, no rebuild
    op.drop_column('experiments', 'priority')
    op.drop_column('experiments', 'owner')
    op.drop_column('api_tokens', 'expires_at')
    op.drop_column('api_tokens', 'scopes')
    op.drop_column('api_tokens', 'user')
    op.drop_table('replicas')
    op.drop_table('leases')
    op.drop_table('users')
