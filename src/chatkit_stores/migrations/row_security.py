"""PostgreSQL Row-Level Security on the chatkit-stores tables: defence in depth for tenancy.

Every store query already filters by tenant. With these policies the database filters too: a
row is visible, and may be written, only when its ``tenant`` equals the session setting
``chatkit_stores.tenant``, which a store built with ``row_level_security=True`` sets at the start
of each call's transaction. A query that forgot its tenant filter, or any connection that did not
set the setting, sees no rows. ``FORCE`` makes the policies apply to the tables' owner too;
superusers and roles with ``BYPASSRLS`` are exempt (use such a role for migrations and for
cross-tenant maintenance: ``orphans``, ``prune``, ``copy``, ``export``).
"""

from __future__ import annotations

import sqlalchemy as sa

from ..sql.schema import make_tables
from ..tenancy import TENANT_SETTING


def set_row_security(connection: sa.Connection, prefix: str, enabled: bool) -> None:
    """Create (``enabled``) or drop the tenant policies on the tables with ``prefix``."""
    if connection.dialect.name != "postgresql":
        raise ValueError("Row-Level Security is a PostgreSQL feature")
    tables = make_tables(prefix)
    same_tenant = f"tenant = current_setting('{TENANT_SETTING}', true)"
    for table in (tables.threads, tables.items, tables.attachments):
        name = connection.dialect.identifier_preparer.quote(table.name)
        policy = connection.dialect.identifier_preparer.quote(f"{table.name}_tenant")
        connection.exec_driver_sql(f"DROP POLICY IF EXISTS {policy} ON {name}")
        if enabled:
            connection.exec_driver_sql(
                f"CREATE POLICY {policy} ON {name} USING ({same_tenant}) WITH CHECK ({same_tenant})"
            )
            connection.exec_driver_sql(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY")
            connection.exec_driver_sql(f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY")
        else:
            connection.exec_driver_sql(f"ALTER TABLE {name} NO FORCE ROW LEVEL SECURITY")
            connection.exec_driver_sql(f"ALTER TABLE {name} DISABLE ROW LEVEL SECURITY")
