"""sweeps (Ray Tune searches over a spec) and runs.sweep_trial

Revision ID: 0003
Revises: 0002

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('sweeps',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('experiment_id', sa.String(length=40), nullable=False),
    sa.Column('spec', JSON, nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('max_concurrent_trials', sa.Integer(), nullable=True),
    sa.Column('best', JSON, nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('experiment_id')
    )
    # No batch_alter_table here: on SQLite it rebuilds `runs` (copy, DROP, rename), and with
    # foreign keys on, the DROP cascade-deletes every attempt, metric point and result. A nullable
    # column and a unique index are plain ALTER TABLE / CREATE INDEX on both backends.
    op.add_column('runs', sa.Column('sweep_trial', sa.String(length=100), nullable=True))
    op.create_index('uq_runs_experiment_sweep_trial', 'runs', ['experiment_id', 'sweep_trial'], unique=True)


def downgrade() -> None:
    op.drop_table('sweeps')
    op.drop_index('uq_runs_experiment_sweep_trial', table_name='runs')
    op.drop_column('runs', 'sweep_trial')  # SQLite >= 3.35: ALTER TABLE DROP COLUMN, no rebuild
