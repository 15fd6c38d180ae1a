"""Operations on a whole database, behind the ``chatkit-stores`` command.

- :mod:`.doctor`: check that every stored JSON blob still parses with the installed ChatKit.
- :mod:`.transfer`: copy every tenant's rows between databases (``copy``, ``import``).
- :mod:`.jsonl`: the versioned JSON Lines export format (``export``, ``import``).
- :mod:`.prune`: delete threads inactive since a cutoff.
- :mod:`.erase`: delete everything one tenant stored, rows and attachment files.
- :mod:`.database`: opening a database for an operation; :mod:`.progress`: the progress line.
- :mod:`.urls`: database URLs checked before anything connects; :mod:`.wording`: counts and
  durations as the command prints them.

This module imports nothing heavy, so the command stays quick to start.
"""

from __future__ import annotations


class OperationError(RuntimeError):
    """An operation cannot go on; the message is one line meant for the operator."""


class UsageError(ValueError):
    """The command line or the configuration is wrong (a bad URL, a missing driver); one line."""


__all__ = ["OperationError", "UsageError"]
