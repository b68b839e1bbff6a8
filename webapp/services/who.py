"""Who may act: the checks that actions run first (an owner for owner-only actions, a name for recorded changes).

The owner flag comes from the app's sign-in (:meth:`webapp.access.AccessConfig.is_owner`), never from session state;
a refusal is a :class:`db.errors.NotAllowedError` whose message names the action. Changes recorded with who made them
(corrections, skips, persons) need the annotator's name: without one, :class:`AnnotatorMissingError`.
"""

from __future__ import annotations

import logging

from db.errors import NotAllowedError
from models.errors import AffectLabError

log = logging.getLogger(__name__)


class AnnotatorMissingError(AffectLabError):
    """A change that is recorded with who made it was asked for before the annotator's name was known."""

    def __init__(self, action: str) -> None:
        super().__init__(f"enter your name in the sidebar (Your name) before {action}: it is recorded with who made it")
        self.action = action


def require_owner(owner: bool, action: str) -> None:
    """Raises unless the caller is an owner (the flag the app computed from the sign-in, never session state).

    Raises:
        NotAllowedError: For anyone but an owner.
    """
    if not owner:
        log.warning("refused %s: not an owner", action)
        raise NotAllowedError(action)


def require_annotator(annotator: str | None, action: str) -> str:
    """The annotator's name, stripped.

    Raises:
        AnnotatorMissingError: Without a name.
    """
    name = (annotator or "").strip()
    if not name:
        raise AnnotatorMissingError(action)
    return name
