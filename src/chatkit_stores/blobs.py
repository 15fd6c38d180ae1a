"""The one seam between a model's JSON and the ``data`` value a store keeps for its row.

Every ``data`` the SQL stores write (and, with ``encryption=``, every model ``MemoryStore``
keeps) passes through :meth:`Blobs.seal` and every one they read through :meth:`Blobs.open`,
with the row it belongs to: the table (``threads``, ``items`` or ``attachments``, without the
table prefix), the tenant and the row's ids (a thread's id; an item's thread id and id; an
attachment's id). Plain JSON is stored as it is; with ``encryption=`` a store seals it
(``chatkit_stores.encryption``). A store without keys refuses an encrypted row rather than hand
its envelope to pydantic.
"""

from __future__ import annotations

from .encryption import KeyRing, open_plain

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
        return open_plain(blob, table, tenant, *ids)


class Encrypted(Blobs):
    """JSON sealed with AES-256-GCM under a key ring, bound to its row."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    def seal(self, json: str, table: str, tenant: str, *ids: str) -> str:
        """The envelope of the JSON under the ring's current key."""
        return self.keys.seal(json, table, tenant, *ids)

    def open(self, blob: str, table: str, tenant: str, *ids: str) -> str:
        """The JSON of an envelope (any key of the ring), or of a plaintext row."""
        return self.keys.open(blob, table, tenant, *ids)


PLAIN = Blobs()
"""What a store uses by default: JSON stored as it is."""
