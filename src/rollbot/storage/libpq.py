"""PostgreSQL through libpq itself (ctypes), for the break-glass kill's one transaction.

`rollbot kill trigger` must store its hold within 150 ms of exec (issue 18.4); importing
psycopg alone took 130-160 ms of that, to run a dozen statements. libpq is the same client
library psycopg runs on (its binary wheel ships it, `psycopg_binary.libs/libpq-*.so*`; else the
system's libpq.so.5), so the connection string, the password, TLS and authentication behave
exactly as on the full path. Only what the hold needs: text parameters, `?` placeholders as in
the rest of storage/, integers read back as int, everything else as text. Where libpq cannot be
loaded, `connect` answers None and the caller takes psycopg's path.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib.util
import os
from typing import Any

from rollbot.storage.pg_common import Result, connect_options, positional, with_returning_id

CONNECTION_OK = 0
PGRES_COMMAND_OK, PGRES_TUPLES_OK = 1, 2
PG_DIAG_SQLSTATE = ord("C")
_INTEGERS = {20, 21, 23, 26}  # int8, int2, int4, oid: read back as int
# another writer held on (lock_timeout), a statement cancelled, a deadlock, a serialization
# failure: what storage/postgres.py calls DatabaseBusy
BUSY_SQLSTATES = frozenset({"55P03", "57014", "40P01", "40001"})
_lib: Any = None


class LibpqError(Exception):
    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def _candidates() -> list[str]:
    found = []
    spec = importlib.util.find_spec("psycopg_binary")  # found, not imported
    if spec is not None and spec.origin:
        site = os.path.dirname(os.path.dirname(spec.origin))
        found += sorted(glob.glob(os.path.join(site, "psycopg_binary.libs", "libpq-*.so*")))
    return [*found, "libpq.so.5", "libpq.dylib"]


def load() -> Any:
    """libpq with the signatures used here, or None."""
    global _lib
    if _lib is not None:
        return _lib or None
    for name in _candidates():
        try:
            lib = ctypes.CDLL(name)
            _declare(lib)
        except (OSError, AttributeError):  # not there, or a libpq without a function used here
            continue
        _lib = lib
        return lib
    _lib = False
    return None


def _declare(lib: Any) -> None:
    p, c, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    lib.PQconnectdbParams.restype = p
    lib.PQconnectdbParams.argtypes = [ctypes.POINTER(c), ctypes.POINTER(c), i]
    lib.PQstatus.argtypes = [p]
    lib.PQerrorMessage.restype = c
    lib.PQerrorMessage.argtypes = [p]
    lib.PQfinish.argtypes = [p]
    lib.PQexec.restype = p
    lib.PQexec.argtypes = [p, c]
    lib.PQexecParams.restype = p
    lib.PQexecParams.argtypes = [p, c, i, p, ctypes.POINTER(c), p, p, i]
    lib.PQresultStatus.argtypes = [p]
    lib.PQresultErrorMessage.restype = c
    lib.PQresultErrorMessage.argtypes = [p]
    lib.PQresultErrorField.restype = c
    lib.PQresultErrorField.argtypes = [p, i]
    lib.PQntuples.argtypes = [p]
    lib.PQnfields.argtypes = [p]
    lib.PQfname.restype = c
    lib.PQfname.argtypes = [p, i]
    lib.PQftype.restype = ctypes.c_uint
    lib.PQftype.argtypes = [p, i]
    lib.PQgetvalue.restype = c
    lib.PQgetvalue.argtypes = [p, i, i]
    lib.PQgetisnull.argtypes = [p, i, i]
    lib.PQcmdTuples.restype = c
    lib.PQcmdTuples.argtypes = [p]
    lib.PQclear.argtypes = [p]


class LibpqConnection:
    """One libpq connection in autocommit: BEGIN and COMMIT are the caller's."""

    def __init__(self, lib: Any, handle: int) -> None:
        self._lib = lib
        self._conn = handle
        self.identity_tables: set[str] = set()

    def script(self, sql: str) -> None:
        """Statements without parameters, in one round trip (the simple protocol)."""
        self._result(self._lib.PQexec(self._conn, sql.encode()))

    def execute(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> Result:
        """`sql` with `?` placeholders; an INSERT into one of `identity_tables` gives its row's
        id as `lastrowid`, as sqlite3's cursor (and PostgresDatabase) do."""
        sql, table = with_returning_id(sql, self.identity_tables)
        texts = [None if v is None else str(v).encode() for v in params]
        if any(t is not None and b"\0" in t for t in texts):  # C strings would cut it there
            raise LibpqError("a NUL character cannot be stored in PostgreSQL text")
        values = (ctypes.c_char_p * max(1, len(params)))(*texts)
        res = self._lib.PQexecParams(
            self._conn, positional(sql).encode(), len(params), None, values, None, None, 0
        )
        count, rows = self._result(res)
        if table is not None:  # the caller asked for no rows: the id is its lastrowid only
            return Result(count, [], rows[-1]["id"] if rows else None)
        return Result(count, rows, None)

    def _result(self, res: int | None) -> tuple[int, list[dict[str, Any]]]:
        """(rows affected, rows returned), or LibpqError with the server's SQLSTATE."""
        lib = self._lib
        if not res:
            raise LibpqError(_text(lib.PQerrorMessage(self._conn)))
        try:
            status = lib.PQresultStatus(res)
            if status not in (PGRES_COMMAND_OK, PGRES_TUPLES_OK):
                state = lib.PQresultErrorField(res, PG_DIAG_SQLSTATE)
                raise LibpqError(
                    _text(lib.PQresultErrorMessage(res)), state.decode() if state else None
                )
            out: list[dict[str, Any]] = []
            if status == PGRES_TUPLES_OK:
                fields = [
                    (_text(lib.PQfname(res, f)), lib.PQftype(res, f) in _INTEGERS)
                    for f in range(lib.PQnfields(res))
                ]
                for r in range(lib.PQntuples(res)):
                    row = {}
                    for f, (name, integer) in enumerate(fields):
                        if lib.PQgetisnull(res, r, f):
                            row[name] = None
                        else:
                            value = lib.PQgetvalue(res, r, f).decode()
                            row[name] = int(value) if integer else value
                    out.append(row)
            count = lib.PQcmdTuples(res)
            return (int(count) if count else -1), out
        finally:
            lib.PQclear(res)

    def close(self) -> None:
        if self._conn:
            self._lib.PQfinish(self._conn)
            self._conn = 0


def connect(url: str) -> LibpqConnection | None:
    """A connection as storage/postgres.py opens one (same URL, password variable, timeouts);
    None when libpq cannot be loaded. A server that refuses is LibpqError."""
    lib = load()
    if lib is None:
        return None
    params = {
        "dbname": url,  # expanded: the URL's own parameters count, as with psycopg
        "client_encoding": "UTF8",  # what execute() sends, whatever the database's own encoding
        **{k: str(v) for k, v in connect_options().items()},
    }
    keys = (ctypes.c_char_p * (len(params) + 1))(*[k.encode() for k in params], None)
    values = (ctypes.c_char_p * (len(params) + 1))(*[v.encode() for v in params.values()], None)
    handle = lib.PQconnectdbParams(keys, values, 1)
    if not handle:
        raise LibpqError("libpq could not allocate a connection")
    if lib.PQstatus(handle) != CONNECTION_OK:
        message = _text(lib.PQerrorMessage(handle))
        with contextlib.suppress(Exception):
            lib.PQfinish(handle)
        raise LibpqError(message)
    return LibpqConnection(lib, handle)


def _text(raw: bytes | None) -> str:
    return (raw or b"").decode("utf-8", "replace").strip()
