"""Analysis claims: one analysis per media item at a time (owner and heartbeat per study and sha256).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 12:20:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'analysis_claims',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('owner', sa.String(length=200), nullable=False),
        sa.Column('host', sa.String(length=200), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_analysis_claims_study_id_studies'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_analysis_claims')),
        sa.UniqueConstraint('study_id', 'sha256', name=op.f('uq_analysis_claims_study_id_sha256')),
    )
    with op.batch_alter_table('analysis_claims', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_analysis_claims_study_id'), ['study_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('analysis_claims', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_analysis_claims_study_id'))
    op.drop_table('analysis_claims')
