"""The owner check that every owner-only action runs first (exports, deletions, rules, weights).

The flag comes from the app's sign-in (:meth:`webapp.access.AccessConfig.is_owner`), never from session state; a
refusal is a :class:`db.errors.NotAllowedError` whose message names the action.
"""

from __future__ import annotations

import logging

from db.errors import NotAllowedError

log = logging.getLogger(__name__)


def require_owner(owner: bool, action: str) -> None:
    """Raises unless the caller is an owner (the flag the app computed from the sign-in, never session state).

    Raises:
        NotAllowedError: For anyone but an owner.
    """
    if not owner:
        log.warning("refused %s: not an owner", action)
        raise NotAllowedError(action)
