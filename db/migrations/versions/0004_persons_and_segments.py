"""Persons of a recording with their append-only corrections, lecture segments, and the study's blur setting.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 07:25:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('persons',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('media_id', sa.Integer(), nullable=False),
    sa.Column('person_index', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['media_id'], ['media.id'], name=op.f('fk_persons_media_id_media'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_persons')),
    sa.UniqueConstraint('media_id', 'person_index', name=op.f('uq_persons_media_id_person_index'))
    )
    with op.batch_alter_table('persons', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_persons_media_id'), ['media_id'], unique=False)

    op.create_table('person_tracks',
    sa.Column('track_id', sa.Integer(), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_person_tracks_person_id_persons'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['track_id'], ['tracks.id'], name=op.f('fk_person_tracks_track_id_tracks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('track_id', name=op.f('pk_person_tracks'))
    )
    with op.batch_alter_table('person_tracks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_person_tracks_person_id'), ['person_id'], unique=False)

    op.create_table('person_corrections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('media_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('person_id', sa.Integer(), nullable=False),
    sa.Column('other_person_id', sa.Integer(), nullable=True),
    sa.Column('track_id', sa.Integer(), nullable=True),
    sa.Column('participant', sa.String(length=200), nullable=True),
    sa.Column('annotator_id', sa.Integer(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('rename', 'merge', 'split')", name=op.f('ck_person_corrections_kind')),
    sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'], name=op.f('fk_person_corrections_annotator_id_annotators'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['media_id'], ['media.id'], name=op.f('fk_person_corrections_media_id_media'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['other_person_id'], ['persons.id'], name=op.f('fk_person_corrections_other_person_id_persons'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_person_corrections_person_id_persons'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['track_id'], ['tracks.id'], name=op.f('fk_person_corrections_track_id_tracks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_person_corrections'))
    )
    with op.batch_alter_table('person_corrections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_person_corrections_annotator_id'), ['annotator_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_person_corrections_media_id'), ['media_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_person_corrections_person_id'), ['person_id'], unique=False)

    op.create_table('lecture_segments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('media_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('start_s', sa.Float(), nullable=False),
    sa.Column('end_s', sa.Float(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('start_s >= 0 AND end_s > start_s', name=op.f('ck_lecture_segments_times')),
    sa.ForeignKeyConstraint(['media_id'], ['media.id'], name=op.f('fk_lecture_segments_media_id_media'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lecture_segments')),
    sa.UniqueConstraint('media_id', 'name', name=op.f('uq_lecture_segments_media_id_name'))
    )
    with op.batch_alter_table('lecture_segments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lecture_segments_media_id'), ['media_id'], unique=False)

    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('blur_faces', sa.Boolean(), server_default='0', nullable=False))

    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(
            "CREATE TRIGGER trg_person_corrections_append_only BEFORE UPDATE ON person_corrections "
            "BEGIN SELECT RAISE(ABORT, 'person_corrections are append-only: add a new row instead'); END"
        )
    elif dialect == "postgresql":  # affectlab_append_only() comes from revision 0001
        op.execute(
            "CREATE TRIGGER trg_person_corrections_append_only BEFORE UPDATE ON person_corrections "
            "FOR EACH ROW EXECUTE FUNCTION affectlab_append_only()"
        )


def downgrade() -> None:
    """Downgrade schema."""
    dialect = op.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        on = " ON person_corrections" if dialect == "postgresql" else ""
        op.execute(f"DROP TRIGGER IF EXISTS trg_person_corrections_append_only{on}")
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_column('blur_faces')
    with op.batch_alter_table('lecture_segments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lecture_segments_media_id'))
    op.drop_table('lecture_segments')
    with op.batch_alter_table('person_corrections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_person_corrections_person_id'))
        batch_op.drop_index(batch_op.f('ix_person_corrections_media_id'))
        batch_op.drop_index(batch_op.f('ix_person_corrections_annotator_id'))
    op.drop_table('person_corrections')
    with op.batch_alter_table('person_tracks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_person_tracks_person_id'))
    op.drop_table('person_tracks')
    with op.batch_alter_table('persons', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_persons_media_id'))
    op.drop_table('persons')
