"""results per training step (intermediate checkpoints) and per-run device usage

Revision ID: 0002
Revises: 0001

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column('runs', sa.Column('usage', JSON, nullable=True))
    op.add_column('results', sa.Column('train_step', sa.Integer(), nullable=True))
    # every result recorded so far was of the final checkpoint
    op.execute("UPDATE results SET train_step = (SELECT runs.total_steps FROM runs WHERE runs.id = results.run_id)")
    with op.batch_alter_table('results') as batch:
        batch.alter_column('train_step', existing_type=sa.Integer(), nullable=False)
        batch.drop_constraint('uq_results_cell', type_='unique')
        batch.create_unique_constraint('uq_results_cell', ['run_id', 'train_step', 'num_steps', 'sampler', 'metric'])


def downgrade() -> None:
    # keeps the final-checkpoint results only: the old schema has no place for the others
    op.execute("DELETE FROM results WHERE train_step <> (SELECT runs.total_steps FROM runs WHERE runs.id = results.run_id)")
    with op.batch_alter_table('results') as batch:
        batch.drop_constraint('uq_results_cell', type_='unique')
        batch.create_unique_constraint('uq_results_cell', ['run_id', 'num_steps', 'sampler', 'metric'])
        batch.drop_column('train_step')
    op.drop_column('runs', 'usage')
