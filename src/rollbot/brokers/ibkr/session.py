"""The IBKR session: connecting as cfg.client_id or a spare id, the managed-account check,
dropping on purpose, reconnecting on its own (with backoff) when the line drops, and connecting
on first use. A layer on the wire (wire.py says why layers)."""

from __future__ import annotations

import asyncio
import itertools

from rollbot.brokers.base import VenueError, VenueEventKind, VenueUnavailable
from rollbot.brokers.ibkr.wire import IbWire, log
from rollbot.config import IbkrVenueConfig


class _ClientIdInUse(Exception):
    pass


class IbSession(IbWire):
    """One API client connection to one TWS / IB Gateway, as cfg.client_id or, when another
    process holds that id, the first free one of cfg.spare_client_ids (to read and cancel: a
    kill from the terminal while the bot is connected; closing orders need cfg.client_id)."""

    def __init__(self, cfg: IbkrVenueConfig) -> None:
        super().__init__(cfg)
        self.client_id = cfg.client_id  # the id of the open connection
        self._id_refused: asyncio.Event | None = None
        self._ib.disconnectedEvent += self._on_disconnected
        self._wanted = False  # connect() was called and close() was not, since
        # neither connect() nor close() called yet: the first request connects, as the paper
        # and crypto venues do (commands never call connect() before reading or cancelling)
        self._untouched = True
        self._reconnect_allowed = cfg.reconnect
        self._link_down = False  # TWS lost IB's servers (1100) though our socket is still up

    async def connect(self, read_only: bool = False) -> None:
        self._untouched = False
        await self._halt_reconnecting()
        if self._connected and read_only == self._read_only:
            return
        if self._connected:
            self._drop()
        self._read_only = read_only
        self._wanted = True
        try:
            await self._open()
        except VenueError:
            self._wanted = False
            raise

    async def close(self) -> None:
        self._untouched = False
        self._wanted = False
        await self._halt_reconnecting()
        self._drop()

    def set_reconnect(self, allowed: bool) -> None:
        self._reconnect_allowed = allowed
        if not allowed:
            self._stop_reconnecting()
        elif self._wanted and not self._connected and self._reconnect_task is None:
            self._start_reconnecting()

    async def _open(self) -> None:
        cfg = self.cfg
        where = f"TWS/Gateway at {cfg.host}:{cfg.port}"
        in_use: list[int] = []
        for client_id in dict.fromkeys([cfg.client_id, *cfg.spare_client_ids]):
            try:
                await self._open_as(client_id, where)
            except _ClientIdInUse:
                in_use.append(client_id)
                continue
            break
        else:
            raise VenueUnavailable(
                self.name,
                f"{where} refused client id(s) {', '.join(map(str, in_use))}: in use by another"
                " API client (another rollbot process, or a strategy); list free ids in"
                " spare_client_ids",
            )
        if in_use:
            log.warning(
                "%s: client id %s in use at %s; connected as %s",
                self.name,
                ", ".join(map(str, in_use)),
                where,
                client_id,
            )
        self.client_id = client_id

    async def _open_as(self, client_id: int, where: str) -> None:
        """Connect as `client_id`; _ClientIdInUse as soon as TWS says the id is taken (it then
        closes the socket, and ib_async would wait out the whole handshake timeout)."""
        cfg = self.cfg
        where = f"{where} (client id {client_id})"
        self._id_refused = refused = asyncio.Event()
        # a read-write connect reads this client's open orders, which a read-only API refuses:
        # said at once, not after the handshake timeout (a read-only connect reads none)
        self._read_only_api = None
        read_only_api = asyncio.Event()
        if not self._read_only:
            self._refusal_waiters.add(read_only_api)
        connecting = asyncio.ensure_future(
            self._ib.connectAsync(
                cfg.host,
                cfg.port,
                clientId=client_id,
                timeout=cfg.timeout_s,
                readonly=self._read_only,
                account=cfg.account,
                raiseSyncErrors=True,  # a half-synced session would weaken idempotency
            )
        )
        waiting = asyncio.ensure_future(refused.wait())
        api_refused = asyncio.ensure_future(read_only_api.wait())
        try:
            try:
                await asyncio.wait(
                    {connecting, waiting, api_refused}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:  # refused, or this call cancelled (kill switch stops a reconnect)
                if not connecting.done():
                    connecting.cancel()
                    await asyncio.gather(connecting, return_exceptions=True)  # ib_async tears down
            if read_only_api.is_set():
                raise self._read_only_refused(f"connecting to {where}")
            if refused.is_set():
                raise _ClientIdInUse(client_id)
            await connecting
        except TimeoutError:  # before OSError: TimeoutError is one
            raise VenueUnavailable(
                self.name,
                f"{where} did not finish the API handshake within {cfg.timeout_s:g}s "
                "(is the API enabled?)",
            ) from None
        except (OSError, ConnectionError) as e:
            raise VenueUnavailable(self.name, f"cannot connect to {where}: {e}") from None
        finally:
            waiting.cancel()
            api_refused.cancel()
            self._id_refused = None
            self._refusal_waiters.discard(read_only_api)
        managed = self._ib.managedAccounts()
        if cfg.account and cfg.account not in managed:
            self._ib.disconnect()
            raise VenueError(
                self.name,
                f"account {cfg.account!r} is not managed by this login "
                f"(it manages: {', '.join(managed) or 'none'})",
            )
        self._connected = True
        self._link_down = False

    def _drop(self) -> None:
        """Disconnect on purpose: no DISCONNECT event, no reconnect."""
        self._connected = False
        self._ib.disconnect()
        self._wake()

    def _start_reconnecting(self) -> None:
        task = asyncio.get_running_loop().create_task(self._reconnect())
        self._reconnect_task = task
        # a done callback, not a finally: a task cancelled before its first step has none
        task.add_done_callback(self._reconnect_ended)

    def _reconnect_ended(self, task: asyncio.Task[None]) -> None:
        if self._reconnect_task is task:
            self._reconnect_task = None

    def _stop_reconnecting(self) -> None:
        # the task keeps its place until it has unwound, so connect() can wait for that
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()

    async def _halt_reconnecting(self) -> None:
        """Stop a reconnect attempt and wait until it has unwound: ib_async tears a cancelled
        connect down a loop tick later, which would otherwise cut the connection we open next."""
        task = self._reconnect_task
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            self._reconnect_ended(task)

    async def _reconnect(self) -> None:
        delays = self.cfg.reconnect_backoff_s or [1.0]
        for attempt in itertools.count(1):
            await asyncio.sleep(delays[min(attempt, len(delays)) - 1])
            if not (self._reconnect_allowed and self._wanted):
                return
            try:
                await self._open()
            except VenueError as e:
                self._emit(VenueEventKind.ERROR, message=f"reconnect attempt {attempt}: {e.detail}")
                continue
            self._emit(
                VenueEventKind.RECONNECT,
                message=f"reconnected to TWS/Gateway after {attempt} attempt(s)",
            )
            return

    async def _first_use(self) -> None:
        """Connect (read-write) on the first request of a venue nobody connected; once only: a
        failure is the request's answer, and later requests report "not connected"."""
        if self._untouched:
            async with self._lock("connect"):
                if self._untouched:
                    await self.connect()

    def _on_disconnected(self) -> None:
        if not self._connected:
            return  # our own close(), or a failed connect attempt
        self._connected = False
        self._emit(VenueEventKind.DISCONNECT, message="connection to TWS/Gateway lost")
        self._wake()
        if self._reconnect_allowed and self._wanted and self._reconnect_task is None:
            self._start_reconnecting()
