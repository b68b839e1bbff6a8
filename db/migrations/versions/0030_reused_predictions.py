"""``predictions.reused``: a video face's prediction reused from the face it follows (the classifier's stride).

With ``VideoConfig.classify_every > 1`` a face between two classified frames whose crop barely changed reuses the
prediction of the face it follows (models/classify_reuse.py); its row says so, so that Review does not show the
probabilities as made of this face's own crop. Existing rows were all classified: false.

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-08 01:00:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0030'
down_revision: Union[str, Sequence[str], None] = '0029'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    # a plain ADD COLUMN (SQLite supports it): a batch copy of the append-only ``predictions`` would drop its triggers
    op.add_column('predictions', sa.Column('reused', sa.Boolean(), server_default='0', nullable=False))


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column('predictions', 'reused')
