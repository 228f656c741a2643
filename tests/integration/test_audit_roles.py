"""The audit log on PostgreSQL as a bank runs it: the application connects as a role that may
only read and append to the audit tables, erases keys only through the erasure role's function,
and the append-only triggers refuse changes even from the tables' owner."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from consent.stores.audit.log import AuditLog
from consent.stores.audit.writes import erase_customer_key
from consent.stores.roles import RoleError, set_up_roles
from consent.stores.store import connect
from service.entrypoints.cli import main
from tests.integration.conftest import fresh_schema
from tests.integration.test_audit import record, rich

pytestmark = pytest.mark.postgres

CHANGES = [
    "UPDATE audit_log SET body = body || ' '",
    "DELETE FROM audit_log WHERE seq = 1",
    "TRUNCATE audit_log",
    "UPDATE audit_checkpoints SET head_hash = 'x'",
    "DELETE FROM audit_checkpoints",
    "TRUNCATE audit_checkpoints",
    "UPDATE customer_keys SET key = key",
    "DELETE FROM customer_keys",
    "TRUNCATE customer_keys",
]


@pytest.fixture
def owner(postgres_url: str) -> Iterator[Engine]:
    with fresh_schema(postgres_url) as engine:
        yield engine


@pytest.fixture
def roles(owner: Engine) -> Iterator[tuple[str, str]]:
    run = uuid.uuid4().hex[:8]
    app, erasure = f"nb_app_{run}", f"nb_erasure_{run}"
    with owner.begin() as connection:
        connection.execute(text(f"CREATE ROLE {app} LOGIN PASSWORD 'app'"))
    try:
        yield app, erasure
    finally:
        with owner.begin() as connection:
            schema = connection.execute(text("select current_schema()")).scalar_one()
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            connection.execute(text(f"CREATE SCHEMA {schema}"))  # fresh_schema drops it again
            for role in (app, erasure):
                connection.execute(text(f"DROP ROLE IF EXISTS {role}"))


def _as(owner: Engine, role: str) -> Engine:
    url = owner.url.set(username=role, password="app")
    return connect(url.render_as_string(hide_password=False))


def test_the_application_role_can_append_and_erase_but_change_nothing(
    owner: Engine, roles: tuple[str, str]
) -> None:
    app_role, erasure_role = roles
    AuditLog(owner).append(record("C0"))  # a record from before the migration
    statements = set_up_roles(owner, app_role, erasure_role)
    assert f"CREATE ROLE {erasure_role} NOLOGIN" in statements
    assert set_up_roles(owner, app_role, erasure_role)  # idempotent: again after an upgrade
    app = _as(owner, app_role)
    try:
        log = AuditLog(app)
        for i in range(5):
            log.append(rich(f"C{i % 2}"))
        log.append_many([record("C1"), record("C2")])
        assert log.verify().ok and log.verify().records == 8
        for statement in CHANGES:
            with (
                pytest.raises(DBAPIError, match=r"permission denied|append-only"),
                app.begin() as c,
            ):
                c.exec_driver_sql(statement)
        # Erasure: through the erasure role's function, in the application's transaction.
        with app.begin() as connection:
            assert erase_customer_key(connection, "C1") is True
            assert erase_customer_key(connection, "C1") is False
        assert log.pseudonym_of("C1") is None and log.pseudonym_of("C0") is not None
        assert log.verify().ok  # the records stay, tied to nobody
    finally:
        app.dispose()


@pytest.mark.parametrize("statement", CHANGES[:6])
def test_the_triggers_refuse_changes_even_from_the_owner(owner: Engine, statement: str) -> None:
    AuditLog(owner).append(record("C0"))
    AuditLog(owner).checkpoint()
    with pytest.raises(DBAPIError, match="append-only"), owner.begin() as connection:
        connection.exec_driver_sql(statement)


def test_roles_are_refused_when_they_cannot_be_set_up(owner: Engine) -> None:
    with pytest.raises(RoleError, match="does not exist"):
        set_up_roles(owner, f"nb_missing_{uuid.uuid4().hex[:8]}", "nb_erasure_x")
    with pytest.raises(RoleError, match="plain lower-case"):
        set_up_roles(owner, "app; drop table audit_log", "nb_erasure_x")
    with pytest.raises(RoleError, match="two roles"):
        set_up_roles(owner, "nb_same", "nb_same")
    with pytest.raises(RoleError, match="PostgreSQL"):
        set_up_roles(create_engine("sqlite://"), "a", "b")


def test_the_migration_command_sets_the_roles_up(
    owner: Engine, roles: tuple[str, str], tmp_path
) -> None:
    app_role, erasure_role = roles
    env = {
        "NEXTBEST_HOME": str(tmp_path),
        "NEXTBEST_DATABASE_URL": owner.url.render_as_string(hide_password=False),
    }
    done = CliRunner().invoke(
        main, ["db", "migrate", "--app-role", app_role, "--erasure-role", erasure_role], env=env
    )
    assert done.exit_code == 0, done.output
    with owner.connect() as connection:
        rights = connection.execute(
            text(
                "select privilege_type from information_schema.role_table_grants "
                "where grantee = :role and table_name = 'audit_log' order by 1"
            ),
            {"role": app_role},
        ).scalars()
        assert list(rights) == ["INSERT", "SELECT"]
