"""The class sums kept per track and time bucket: class_sum_media, class_sums, filled for every recording.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-07 18:50:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0028'
down_revision: Union[str, Sequence[str], None] = '0027'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema; the sums are derived data, filled at head by ``env.py`` (``class_sums.fill_missing``)."""
    op.create_table(
        'class_sum_media',
        sa.Column('media_id', sa.Integer(), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('bounds', sa.JSON(), nullable=False),
        sa.Column('duration_s', sa.Float(), nullable=False),
        sa.Column('one_step', sa.Float(), nullable=False),
        sa.Column('longest', sa.Float(), nullable=True),
        sa.Column('run', sa.JSON(), nullable=True),
        sa.Column('classes', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['media_id'], ['media.id'], name=op.f('fk_class_sum_media_media_id_media'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_class_sum_media_study_id_studies'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('media_id', name=op.f('pk_class_sum_media')),
    )
    op.create_index(op.f('ix_class_sum_media_study_id'), 'class_sum_media', ['study_id'])
    op.create_table(
        'class_sums',
        sa.Column('media_id', sa.Integer(), nullable=False),
        sa.Column('track_id', sa.Integer(), nullable=False),
        sa.Column('bucket', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.Column('n_human', sa.Integer(), nullable=False),
        sa.Column('visible_s', sa.Float(), nullable=False),
        sa.Column('eng_sum', sa.Float(), nullable=False),
        sa.Column('eng_n', sa.Integer(), nullable=False),
        sa.Column('val_sum', sa.Float(), nullable=False),
        sa.Column('val_n', sa.Integer(), nullable=False),
        sa.Column('aro_sum', sa.Float(), nullable=False),
        sa.Column('aro_n', sa.Integer(), nullable=False),
        sa.Column('labels', sa.JSON(), nullable=False),
        sa.Column('firsts', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['media_id'], ['media.id'], name=op.f('fk_class_sums_media_id_media'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['track_id'], ['tracks.id'], name=op.f('fk_class_sums_track_id_tracks'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('media_id', 'track_id', 'bucket', name=op.f('pk_class_sums')),
    )
    op.create_index('ix_class_sums_track_id', 'class_sums', ['track_id'])


def downgrade() -> None:
    """Downgrade schema (the sums are derived: nothing is lost)."""
    op.drop_index('ix_class_sums_track_id', table_name='class_sums')
    op.drop_table('class_sums')
    op.drop_index(op.f('ix_class_sum_media_study_id'), table_name='class_sum_media')
    op.drop_table('class_sum_media')
