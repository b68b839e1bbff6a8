"""Words shown to people: counts with their noun in the right number ("1 face", "2 faces")."""

from __future__ import annotations


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``"1 face"``, ``"2 faces"``: a count with its noun in the right number.

    Args:
        n: The count.
        noun: The singular.
        nouns: The plural, when it is not ``noun + "s"``.
    """
    return f"{n} {noun if n == 1 else (nouns or noun + 's')}"
