"""The one seam between a model's JSON and the ``data`` value stored in its SQL row.

Every ``data`` the SQL stores write passes through :meth:`Blobs.seal` and every one they read
through :meth:`Blobs.open`, with the row it belongs to: the table (``threads``, ``items`` or
``attachments``, without the table prefix), the tenant and the row's ids (a thread's id; an
item's thread id and id; an attachment's id). Plain JSON is stored as it is.
"""

from __future__ import annotations

THREADS = "threads"
ITEMS = "items"
ATTACHMENTS = "attachments"


class Blobs:
    """Turns the JSON of a thread, item or attachment into its stored ``data``, and back."""

    def seal(self, json: str, table: str, tenant: str, *ids: str) -> str:
        """The ``data`` to store for the JSON of the row ``(table, tenant, *ids)``."""
        return json

    def open(self, blob: str, table: str, tenant: str, *ids: str) -> str:
        """The JSON of a ``data`` value read from the row ``(table, tenant, *ids)``."""
        return blob


PLAIN = Blobs()
"""What a store uses by default: JSON stored as it is."""
