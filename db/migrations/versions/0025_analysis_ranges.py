"""Analysis ranges: a long video cut into time ranges over worker processes, a resume point per range.

Revision ID: 0025
Revises: 0022
Create Date: 2026-12-07 15:20:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0025'
down_revision: Union[str, Sequence[str], None] = '0022'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'analysis_ranges',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('media_id', sa.Integer(), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('start_s', sa.Float(), nullable=True),
        sa.Column('start_frame', sa.Integer(), nullable=True),
        sa.Column('start_sample', sa.Integer(), nullable=True),
        sa.Column('stop_frame', sa.Integer(), nullable=True),
        sa.Column('until_s', sa.Float(), nullable=True),
        sa.Column('until_frame', sa.Integer(), nullable=True),
        sa.Column('until_sample', sa.Integer(), nullable=True),
        sa.Column('done', sa.Boolean(), server_default='0', nullable=False),
        sa.ForeignKeyConstraint(['media_id'], ['media.id'], name=op.f('fk_analysis_ranges_media_id_media'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_analysis_ranges')),
        sa.UniqueConstraint('media_id', 'number', name=op.f('uq_analysis_ranges_media_id_number')),
    )
    with op.batch_alter_table('analysis_ranges', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_analysis_ranges_media_id'), ['media_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('analysis_ranges', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_analysis_ranges_media_id'))
    op.drop_table('analysis_ranges')
