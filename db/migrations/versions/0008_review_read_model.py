"""The review read model: face_status, face_judges, queue_counts, media_totals, study_status.

The tables are derived data: they are filled from every study's faces, predictions and votes once the store is at
head (``db/migrations/env.py``, ``_fill_derived``), by today's rules over today's schema, never here.

Revision ID: 0008
Revises: 0006 (0007 once the compact layout lands)
Create Date: 2026-12-07 06:30:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema (the rows are filled at head, see the module docstring)."""
    op.create_table(
        'face_status',
        sa.Column('face_id', sa.Integer(), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('media_id', sa.Integer(), nullable=False),
        sa.Column('track_id', sa.Integer(), nullable=True),
        sa.Column('route', sa.Float(), nullable=False),
        sa.Column('model_label', sa.String(length=64), nullable=True),
        sa.Column('model_confidence', sa.Float(), nullable=True),
        sa.Column('u_key', sa.Float(), nullable=False),
        sa.Column('human_label', sa.String(length=64), nullable=True),
        sa.Column('n_votes', sa.Integer(), nullable=False),
        sa.Column('n_judges', sa.Integer(), nullable=False),
        sa.Column('v_key', sa.Float(), nullable=True),
        sa.Column('d_key', sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(['face_id'], ['faces.id'], name=op.f('fk_face_status_face_id_faces'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['media_id'], ['media.id'], name=op.f('fk_face_status_media_id_media'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_face_status_study_id_studies'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('face_id', name=op.f('pk_face_status')),
    )
    op.create_index('ix_face_status_study_queue', 'face_status', ['study_id', "u_key", 'face_id'])
    op.create_index('ix_face_status_media_queue', 'face_status', ['media_id', "u_key", 'face_id'])
    op.create_index('ix_face_status_class_queue', 'face_status',
                    ['study_id', 'model_label', "u_key", 'face_id'])
    op.create_index('ix_face_status_valence_queue', 'face_status', ['study_id', "v_key", 'face_id'],
                    sqlite_where=sa.text('v_key IS NOT NULL'), postgresql_where=sa.text('v_key IS NOT NULL'))
    op.create_index('ix_face_status_disagreement_queue', 'face_status', ['study_id', "d_key", 'face_id'],
                    sqlite_where=sa.text('d_key IS NOT NULL'), postgresql_where=sa.text('d_key IS NOT NULL'))
    op.create_index('ix_face_status_judged', 'face_status', ['study_id', 'face_id'],
                    sqlite_where=sa.text('n_judges > 0'), postgresql_where=sa.text('n_judges > 0'))
    op.create_index(op.f('ix_face_status_track_id'), 'face_status', ['track_id'])
    op.create_table(
        'face_judges',
        sa.Column('face_id', sa.Integer(), nullable=False),
        sa.Column('annotator_id', sa.Integer(), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('judged', sa.Boolean(), nullable=False),
        sa.Column('skipped', sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'],
                                name=op.f('fk_face_judges_annotator_id_annotators'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['face_id'], ['faces.id'], name=op.f('fk_face_judges_face_id_faces'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_face_judges_study_id_studies'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('face_id', 'annotator_id', name=op.f('pk_face_judges')),
    )
    op.create_index('ix_face_judges_annotator', 'face_judges', ['annotator_id', 'study_id', 'face_id'])
    op.create_table(
        'queue_counts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('annotator_id', sa.Integer(), nullable=False),
        sa.Column('media_id', sa.Integer(), nullable=False),
        sa.Column('model_label', sa.String(length=64), nullable=False),
        sa.Column('human_label', sa.String(length=64), nullable=False),
        sa.Column('faces', sa.Integer(), nullable=False),
        sa.Column('uncertainty', sa.Integer(), nullable=False),
        sa.Column('valence', sa.Integer(), nullable=False),
        sa.Column('disagreement', sa.Integer(), nullable=False),
        sa.Column('skipped', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['media_id'], ['media.id'], name=op.f('fk_queue_counts_media_id_media'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_queue_counts_study_id_studies'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_queue_counts')),
        sa.UniqueConstraint('study_id', 'annotator_id', 'media_id', 'model_label', 'human_label',
                            name=op.f('uq_queue_counts_study_id_annotator_id_media_id_model_label_human_label')),
    )
    op.create_index('ix_queue_counts_media_id', 'queue_counts', ['media_id'])
    op.create_table(
        'media_totals',
        sa.Column('media_id', sa.Integer(), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('faces', sa.Integer(), nullable=False),
        sa.Column('predictions', sa.Integer(), nullable=False),
        sa.Column('tracks', sa.Integer(), nullable=False),
        sa.Column('crops', sa.Integer(), nullable=False),
        sa.Column('features', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['media_id'], ['media.id'], name=op.f('fk_media_totals_media_id_media'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_media_totals_study_id_studies'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('media_id', name=op.f('pk_media_totals')),
    )
    op.create_index(op.f('ix_media_totals_study_id'), 'media_totals', ['study_id'])
    op.create_table(
        'study_status',
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('model', sa.String(length=200), nullable=True),
        sa.Column('weights_hash', sa.String(length=64), nullable=True),
        sa.Column('model_version', sa.String(length=100), nullable=True),
        sa.Column('classes', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_study_status_study_id_studies'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('study_id', name=op.f('pk_study_status')),
    )


def downgrade() -> None:
    """Downgrade schema (the read model is derived: nothing is lost)."""
    op.drop_table('study_status')
    op.drop_index(op.f('ix_media_totals_study_id'), table_name='media_totals')
    op.drop_table('media_totals')
    op.drop_index('ix_queue_counts_media_id', table_name='queue_counts')
    op.drop_table('queue_counts')
    op.drop_index('ix_face_judges_annotator', table_name='face_judges')
    op.drop_table('face_judges')
    op.drop_index(op.f('ix_face_status_track_id'), table_name='face_status')
    op.drop_index('ix_face_status_judged', table_name='face_status')
    op.drop_index('ix_face_status_disagreement_queue', table_name='face_status')
    op.drop_index('ix_face_status_valence_queue', table_name='face_status')
    op.drop_index('ix_face_status_class_queue', table_name='face_status')
    op.drop_index('ix_face_status_media_queue', table_name='face_status')
    op.drop_index('ix_face_status_study_queue', table_name='face_status')
    op.drop_table('face_status')
