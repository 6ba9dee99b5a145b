"""Connections the server keeps: idle ones closed after the keep-alive timeout, and a cap.

uvicorn's own keep-alive timer starts only after a first response and stops at any byte
received, so a socket that connects and sends nothing (or a header a byte at a time) is kept
for ever. Enough of them exhaust the file descriptors, and asyncio's accept loop then logs
"Too many open files" (with a traceback) in a tight loop. Here:

- a connection with no request in flight is closed ``idle_s`` after it opened or after its
  last response, whatever it sends meanwhile;
- the listening socket counts the connections it has accepted: at the cap, an idle one is
  closed to make room (never one whose request is waiting unread on its socket), one that never
  sent a request before a client's between two requests. New ones wait in the listen backlog
  for the loop's next turn while closes are pending or accepted sockets still wait for their
  protocols; only when every connection is busy is the new one refused at once. So descriptors
  never run out and real clients are not locked out by idle ones. The cap stays below the
  process's file limit.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import time
from typing import Any

FD_RESERVE = 64  # descriptors kept free beyond the process's own: the model, logs, accept's own use
SLACK = 16  # connections accepted beyond the cap while the idle ones they replace are being closed
# Connections idle for less than this are closed for room only when no older idle one is left: in the siege
# a burst of 150 connections closed, within a few loop turns, a /healthz connected 0.05 s before its request.
FRESH_S = 0.25
# Accepted sockets without a protocol make a new client wait (asyncio makes the protocols a turn later) only
# this long after the last accept: a socket asyncio failed to give a protocol and never closed must not make
# every later client wait (and the loop spin) for ever.
UNMADE_WAIT_S = 1.0


def connection_cap(wanted: int) -> int:
    """``wanted``, or less where the file limit is lower; the soft limit is raised to the hard one first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft == resource.RLIM_INFINITY:
        return wanted
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 32
    return max(8, min(wanted, soft - in_use - FD_RESERVE - SLACK))


class Guard:
    """The open connections (their protocols) and the cap, shared by the socket and the protocols."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open: set[Any] = set()
        self._sockets: list[socket.socket] = []  # accepted sockets, until closed
        self._last_accept = float("-inf")

    @property
    def accepted(self) -> int:
        """Accepted sockets not yet closed. Counted from the sockets themselves, not kept as a tally:
        a socket closed by any path (its protocol's connection_lost, or asyncio closing one it could
        not make a transport for) leaves the count, which therefore cannot drift above the truth and
        lock new clients (a /healthz) out while old keep-alive ones are still served."""
        self._sockets = [s for s in self._sockets if s.fileno() != -1]
        return len(self._sockets)

    def add(self, conn: socket.socket) -> None:
        self._sockets.append(conn)
        self._last_accept = time.monotonic()

    def unmade(self) -> int:
        """Accepted sockets that have no protocol yet (asyncio makes them on a later turn of its loop); none
        once ``UNMADE_WAIT_S`` has passed since the last accept (a socket left without one for good)."""
        if time.monotonic() - self._last_accept > UNMADE_WAIT_S:
            return 0
        return max(0, self.accepted - len(self.open))

    def closing(self) -> bool:
        """Whether a connection is being closed (its descriptor is free on the loop's next turn)."""
        return any(p.transport.is_closing() for p in self.open)

    def oldest_idle(self) -> Any | None:
        """The connection to close for room: one idle for ``FRESH_S`` or more before a fresher one (a client
        that has just connected may not have sent its request yet: a burst of connections must not close
        it before it could), then one that never sent a request before one that did (a client between
        two requests), the longest idle first. One whose request has arrived but not yet been read (the
        event loop has not reached it) is not idle: a new client is never closed mid-request."""
        now = time.monotonic()  # the clock of asyncio's loop.time(), which sets idle_since
        idle = sorted((p for p in self.open if p.idle() and not p.transport.is_closing()),
                      key=lambda p: (now - p.idle_since < FRESH_S, p.served > 0, p.idle_since))
        return next((p for p in idle if not p.pending()), None)


class GuardedSocket(socket.socket):
    """A listening socket that never accepts past the cap (see the module)."""

    guard: Guard

    def accept(self) -> tuple[socket.socket, Any]:
        guard = self.guard
        while guard.accepted >= guard.cap:
            victim = guard.oldest_idle()
            if victim is not None:
                victim.close_idle()
            elif guard.unmade() > 0:
                # asyncio accepts a whole burst in one turn and gives each socket its protocol in a task on
                # a later turn: until then they are neither idle nor busy, and refusing now reset new clients
                # (the siege's /healthz, 0.05 s after connecting). The rest wait in the backlog for that turn.
                raise BlockingIOError
            elif not guard.closing():
                conn, _ = super().accept()  # every connection busy: the new one is refused at once
                conn.close()
                continue
            if guard.accepted >= guard.cap + SLACK:
                # The closes finish on the event loop's next turn; until then the rest wait in the backlog.
                raise BlockingIOError
            break
        conn, addr = super().accept()  # BlockingIOError when none is waiting: asyncio stops there
        guard.add(conn)
        return conn, addr


def listening_socket(family: int, kind: int, proto: int, cap: int) -> GuardedSocket:
    """A GuardedSocket with a fresh Guard for ``cap`` connections."""
    sock = GuardedSocket(family, kind, proto)
    sock.guard = Guard(cap)
    return sock


def guarded_protocol(guard: Guard, idle_s: float) -> type:
    """uvicorn's h11 protocol with the idle deadline, counted in ``guard`` (see the module)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        idle_since = 0.0
        idle_timer: Any = None
        served = 0

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            guard.open.add(self)
            self._arm()

        def idle(self) -> bool:
            """No request in flight: none received yet, or the last one answered."""
            return self.cycle is None or self.cycle.response_complete

        def pending(self) -> bool:
            """Whether bytes wait unread on the socket (a request the loop has not read yet)."""
            sock = self.transport.get_extra_info("socket")
            if sock is None:
                return False
            try:
                with socket.socket(fileno=os.dup(sock.fileno())) as peek:
                    return bool(peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
            except OSError:  # BlockingIOError: nothing waiting; others: a socket already gone
                return False

        def _arm(self) -> None:
            self.idle_since = self.loop.time()
            if self.idle_timer is not None:
                self.idle_timer.cancel()
            self.idle_timer = self.loop.call_later(idle_s, self._expire)

        def _expire(self) -> None:
            self.idle_timer = None
            if self.idle():
                self.close_idle()

        def close_idle(self) -> None:
            """Close a connection that has no request in flight."""
            if self.transport.is_closing():
                return
            with contextlib.suppress(h11.LocalProtocolError):
                self.conn.send(h11.ConnectionClosed())
            self.transport.close()

        def on_response_complete(self) -> None:
            self.served += 1
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self.idle_timer is not None:
                self.idle_timer.cancel()
                self.idle_timer = None
            guard.open.discard(self)
            super().connection_lost(exc)

    return GuardedH11Protocol
