"""The roster: participants, each recording's expected list, append-only person assignments; persons_by_annotators.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-07 15:10:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0027'
down_revision: Union[str, Sequence[str], None] = '0026'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # a plain ADD COLUMN (SQLite supports it): a batch copy of ``studies`` would cascade-delete what refers to it
    op.add_column('studies', sa.Column('persons_by_annotators', sa.Boolean(), server_default='0', nullable=False))
    op.create_table(
        'participants',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('study_id', sa.Integer(), nullable=False),
        sa.Column('code', sa.String(length=200), nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('group_name', sa.String(length=200), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['study_id'], ['studies.id'], name=op.f('fk_participants_study_id_studies'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_participants')),
        sa.UniqueConstraint('study_id', 'code', name=op.f('uq_participants_study_id_code')),
    )
    op.create_index(op.f('ix_participants_study_id'), 'participants', ['study_id'])
    op.create_table(
        'roster_expected',
        sa.Column('media_id', sa.Integer(), nullable=False),
        sa.Column('participant_id', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['media_id'], ['media.id'], name=op.f('fk_roster_expected_media_id_media'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['participant_id'], ['participants.id'],
                                name=op.f('fk_roster_expected_participant_id_participants'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('media_id', 'participant_id', name=op.f('pk_roster_expected')),
    )
    op.create_table(
        'person_assignments',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('media_id', sa.Integer(), nullable=False),
        sa.Column('person_id', sa.Integer(), nullable=False),
        sa.Column('participant_id', sa.Integer(), nullable=True),
        sa.Column('source', sa.String(length=10), nullable=False),
        sa.Column('annotator_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("source IN ('app', 'csv', 'cli', 'remembered')", name=op.f('ck_person_assignments_source')),
        sa.ForeignKeyConstraint(['annotator_id'], ['annotators.id'],
                                name=op.f('fk_person_assignments_annotator_id_annotators'), ondelete='RESTRICT'),
        sa.ForeignKeyConstraint(['media_id'], ['media.id'], name=op.f('fk_person_assignments_media_id_media'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['participant_id'], ['participants.id'],
                                name=op.f('fk_person_assignments_participant_id_participants'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['person_id'], ['persons.id'], name=op.f('fk_person_assignments_person_id_persons'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_person_assignments')),
    )
    op.create_index(op.f('ix_person_assignments_annotator_id'), 'person_assignments', ['annotator_id'])
    op.create_index(op.f('ix_person_assignments_media_id'), 'person_assignments', ['media_id'])
    op.create_index(op.f('ix_person_assignments_person_id'), 'person_assignments', ['person_id'])
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(
            "CREATE TRIGGER trg_person_assignments_append_only BEFORE UPDATE ON person_assignments "
            "BEGIN SELECT RAISE(ABORT, 'person_assignments are append-only: add a new row instead'); END"
        )
    elif dialect == "postgresql":  # affectlab_append_only() comes from revision 0001
        op.execute(
            "CREATE TRIGGER trg_person_assignments_append_only BEFORE UPDATE ON person_assignments "
            "FOR EACH ROW EXECUTE FUNCTION affectlab_append_only()"
        )


def downgrade() -> None:
    """Downgrade schema."""
    dialect = op.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        on = " ON person_assignments" if dialect == "postgresql" else ""
        op.execute(f"DROP TRIGGER IF EXISTS trg_person_assignments_append_only{on}")
    op.drop_table('person_assignments')
    op.drop_table('roster_expected')
    op.drop_table('participants')
    op.drop_column('studies', 'persons_by_annotators')  # plain DROP COLUMN (SQLite >= 3.35): no cascading copy
