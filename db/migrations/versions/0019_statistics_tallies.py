"""The statistics' running totals: face_tallies, study_tallies.

Derived data: filled from every study's judged faces once the store is at head (``db/migrations/env.py``,
``_fill_derived``), never here.

Revision ID: 0019
Revises: 0008
Create Date: 2026-12-07 12:40:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0019'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema (the tallies are filled at head, see the module docstring)."""
    op.create_table(
        'face_tallies',
        sa.Column('face_id', sa.Integer(), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('media_id', sa.Integer(), nullable=False),
        sa.Column('items', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['face_id'], ['faces.id'], name=op.f('fk_face_tallies_face_id_faces'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['media_id'], ['media.id'], name=op.f('fk_face_tallies_media_id_media'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_face_tallies_study_id_studies'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('face_id', name=op.f('pk_face_tallies')),
    )
    op.create_index(op.f('ix_face_tallies_media_id'), 'face_tallies', ['media_id'])
    op.create_index(op.f('ix_face_tallies_study_id'), 'face_tallies', ['study_id'])
    op.create_table(
        'study_tallies',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('media_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('k1', sa.String(length=200), nullable=False),
        sa.Column('k2', sa.String(length=200), nullable=False),
        sa.Column('k3', sa.String(length=200), nullable=False),
        sa.Column('k4', sa.String(length=200), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.Column('s1', sa.Float(), nullable=False),
        sa.Column('s2', sa.Float(), nullable=False),
        sa.Column('s3', sa.Float(), nullable=False),
        sa.Column('s4', sa.Float(), nullable=False),
        sa.Column('s5', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['media_id'], ['media.id'], name=op.f('fk_study_tallies_media_id_media'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_study_tallies_study_id_studies'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_study_tallies')),
        sa.UniqueConstraint('study_id', 'media_id', 'kind', 'k1', 'k2', 'k3', 'k4',
                            name=op.f('uq_study_tallies_study_id_media_id_kind_k1_k2_k3_k4')),
    )
    op.create_index('ix_study_tallies_media_id', 'study_tallies', ['media_id'])


def downgrade() -> None:
    """Downgrade schema (the tallies are derived: nothing is lost)."""
    op.drop_index('ix_study_tallies_media_id', table_name='study_tallies')
    op.drop_table('study_tallies')
    op.drop_index(op.f('ix_face_tallies_study_id'), table_name='face_tallies')
    op.drop_index(op.f('ix_face_tallies_media_id'), table_name='face_tallies')
    op.drop_table('face_tallies')
