"""PostgreSQL Row-Level Security: the database itself keeps tenants apart.

The tables get the tenant policies (``migrate(..., row_level_security=True)``) and the store
runs as an ordinary role, since superusers bypass RLS. The whole conformance suite runs on a
store with ``row_level_security=True``; raw queries show what the policies alone enforce.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import pytest_asyncio
from chatkit.store import NotFoundError, Store
from chatkit.types import ThreadMetadata
from sqlalchemy import exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from chatkit_stores import PostgresStore, SQLStore, TenantError
from chatkit_stores.cli import main as cli
from chatkit_stores.migrations import migrate, run_sync
from chatkit_stores.operations.distribute import distribute_tables
from chatkit_stores.sql.dialects import async_url
from chatkit_stores.testing import StoreTests
from conftest import admin, drop_tables

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module", params=["postgres", "citus"])
def rls(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str]]:
    """(admin URL, app-role URL, prefix) of tables with the tenant policies on.

    On PostgreSQL, and on Citus with the tables distributed by tenant (where the tenant setting
    must reach the workers: tests/test_citus.py). The role is ordinary (no superuser, no
    BYPASSRLS) and this module's own: roles are cluster-wide, so it is dropped afterwards with
    everything granted to it.
    """
    postgres_url = str(request.getfixturevalue(f"{request.param}_url"))
    prefix = f"rls{uuid.uuid4().hex[:8]}_"
    role = f"{prefix}app"
    tables = ", ".join(f"{prefix}{name}" for name in ("threads", "items", "attachments"))

    async def setup() -> None:
        await migrate(postgres_url, prefix=prefix, row_level_security=True)
        if request.param == "citus":
            await run_sync(postgres_url, lambda conn: distribute_tables(conn, prefix))
        await admin(
            postgres_url,
            f"CREATE ROLE {role} LOGIN",
            f"GRANT USAGE ON SCHEMA public TO {role}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {role}",
            f"GRANT SELECT ON {prefix}stores_alembic_version TO {role}",
            f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}",
        )

    async def teardown() -> None:
        await drop_tables(postgres_url, prefix)
        # DROP OWNED BY revokes what was granted to the role in this database.
        await admin(
            postgres_url,
            f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"
            f" DROP OWNED BY {role}; DROP ROLE {role}; END IF; END $$",
        )

    app_url = make_url(postgres_url).set(username=role).render_as_string(hide_password=False)
    try:
        asyncio.run(setup())
        yield postgres_url, app_url, prefix
    finally:
        asyncio.run(teardown())


class TestPostgresStoreWithRowLevelSecurity(StoreTests):
    """The conformance suite, unchanged, as an ordinary role under the tenant policies."""

    @pytest_asyncio.fixture
    async def store(self, rls: tuple[str, str, str]) -> AsyncIterator[PostgresStore[Any]]:
        _, app_url, prefix = rls
        async with PostgresStore(app_url, table_prefix=prefix, row_level_security=True) as store:
            yield store

    @pytest_asyncio.fixture
    async def reopen(self) -> AsyncIterator[Any]:
        opened: list[SQLStore[Any]] = []

        async def reopen(store: Store[Any]) -> Store[Any]:
            assert isinstance(store, PostgresStore)
            await store.close()
            url = store.engine.url.render_as_string(hide_password=False)
            prefix = store.table_prefix
            opened.append(PostgresStore(url, table_prefix=prefix, row_level_security=True))
            return opened[-1]

        yield reopen
        for store in opened:
            await store.close()


async def _count(url: str, table: str, tenant: str | None) -> int:
    """Rows of ``table`` a raw query with no tenant filter sees (setting ``tenant`` first)."""
    engine = create_async_engine(async_url(url))
    try:
        async with engine.begin() as conn:
            if tenant is not None:  # as the store sets it (set_config does not reach Citus workers)
                assert tenant.replace("_", "").isalnum()
                await conn.exec_driver_sql("SET LOCAL citus.propagate_set_commands = 'local'")
                await conn.exec_driver_sql(f"SET LOCAL chatkit_stores.tenant = '{tenant}'")
            return int((await conn.exec_driver_sql(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        await engine.dispose()


async def test_a_query_without_the_tenant_setting_sees_no_rows(rls: tuple[str, str, str]) -> None:
    admin_url, app_url, prefix = rls
    tenants = [f"t_{uuid.uuid4().hex}" for _ in range(2)]
    async with PostgresStore(app_url, table_prefix=prefix, row_level_security=True) as store:
        for n, tenant in enumerate(tenants):
            for _ in range(n + 1):
                thread = ThreadMetadata(
                    id=f"thr_{uuid.uuid4().hex}", created_at=datetime.now(timezone.utc)
                )
                await store.save_thread(thread, {"tenant_id": tenant})
    table = f"{prefix}threads"
    assert await _count(app_url, table, None) == 0, "no setting, no rows"
    assert await _count(app_url, table, tenants[0]) == 1
    assert await _count(app_url, table, tenants[1]) == 2
    assert await _count(admin_url, table, None) >= 3, "the superuser bypasses the policies"


async def test_a_store_without_the_setting_can_neither_read_nor_write(
    rls: tuple[str, str, str],
) -> None:
    """What a store that forgot its tenant would get: nothing, and writes refused."""
    _, app_url, prefix = rls
    context = {"tenant_id": f"t_{uuid.uuid4().hex}"}
    thread = ThreadMetadata(id=f"thr_{uuid.uuid4().hex}", created_at=datetime.now(timezone.utc))
    async with PostgresStore(app_url, table_prefix=prefix, row_level_security=True) as store:
        await store.save_thread(thread, context)
    async with PostgresStore(app_url, table_prefix=prefix) as unset:
        with pytest.raises(NotFoundError):
            await unset.load_thread(thread.id, context)
        with pytest.raises(exc.DBAPIError, match="row-level security policy"):
            await unset.save_thread(thread.model_copy(update={"id": "thr_other"}), context)


async def test_the_setting_is_scoped_to_one_call(rls: tuple[str, str, str]) -> None:
    """A pooled connection carries no tenant from one call into the next."""
    _, app_url, prefix = rls
    context = {"tenant_id": f"t_{uuid.uuid4().hex}"}
    async with PostgresStore(
        app_url, table_prefix=prefix, row_level_security=True, engine_options={"pool_size": 1}
    ) as store:
        await store.save_thread(
            ThreadMetadata(id=f"thr_{uuid.uuid4().hex}", created_at=datetime.now(timezone.utc)),
            context,
        )
        async with store.engine.connect() as conn:  # the same, single pooled connection
            seen = (await conn.exec_driver_sql(f"SELECT count(*) FROM {prefix}threads")).scalar()
        assert seen == 0


def test_the_migrate_command_turns_the_policies_off_and_on(
    rls: tuple[str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    admin_url, app_url, prefix = rls
    table = f"{prefix}threads"
    args = ["migrate", admin_url, "--table-prefix", prefix, "--row-level-security"]
    asyncio.run(
        admin(
            admin_url,
            f"INSERT INTO {table} (tenant, id, created_at, data)"
            " VALUES ('x', 'thr_cli', now(), '{}')",
        )
    )
    try:
        assert cli([*args, "off"]) == 0
        assert asyncio.run(_count(app_url, table, None)) >= 1
        assert cli([*args, "on"]) == 0
        assert asyncio.run(_count(app_url, table, None)) == 0
    finally:
        asyncio.run(admin(admin_url, f"DELETE FROM {table} WHERE id = 'thr_cli'"))


def test_row_level_security_needs_postgresql(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="needs PostgreSQL"):
        SQLStore.from_url(f"sqlite:///{tmp_path / 'x.db'}", row_level_security=True)


@pytest.mark.parametrize(
    "tenant",
    ["a'; DROP TABLE x; --", "b\\'x", "c\\", "d\\\\'' OR true --", "ünï 😀", "$$x$$", "e\n"],
)
async def test_hostile_tenants_are_one_tenant_each(rls: tuple[str, str, str], tenant: str) -> None:
    """The tenant reaches the server in ``SET LOCAL`` (no bound parameter there): quoting
    keeps it one value, and it sees its own thread and no other tenant's."""
    _, app_url, prefix = rls
    ids = {name: f"thr_{uuid.uuid4().hex}" for name in ("hostile", "other")}
    async with PostgresStore(app_url, table_prefix=prefix, row_level_security=True) as store:
        for name, thread_id in ids.items():
            thread = ThreadMetadata(id=thread_id, created_at=datetime.now(timezone.utc))
            context = {"tenant_id": tenant if name == "hostile" else f"{tenant}x"}
            await store.save_thread(thread, context)
        page = await store.load_threads(100, None, "asc", {"tenant_id": tenant})
        assert [thread.id for thread in page.data] == [ids["hostile"]]
        with pytest.raises(NotFoundError):
            await store.load_thread(ids["other"], {"tenant_id": tenant})


async def test_a_tenant_with_nul_is_refused(rls: tuple[str, str, str]) -> None:
    _, app_url, prefix = rls
    thread = ThreadMetadata(id=f"thr_{uuid.uuid4().hex}", created_at=datetime.now(timezone.utc))
    async with PostgresStore(app_url, table_prefix=prefix, row_level_security=True) as store:
        with pytest.raises(TenantError, match="NUL"):  # before any SQL is built
            await store.save_thread(thread, {"tenant_id": "a\x00b"})
