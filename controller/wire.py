"""The switch connection on the wire: os-ken's receive loop reading in bulk, the
messages an app takes from their bytes, and answers written at once.

Reading. os-ken 4.2.2's `Datapath._recv_loop` reads each OpenFlow message with
two `recv` calls (its 8-byte header, then the rest) and copies what is left of
its buffer after every message. This loop does the same work with one `recv` of
up to READ_SIZE bytes for as many messages as have arrived, parses each from a
view of that buffer, and hands it to os-ken exactly as os-ken's own loop does
(the same parser, event, observers and handlers, the same dispatcher-state
checks). It yields to other green threads every YIELD_EVERY messages, where
os-ken's yields every 2,048: a taken message is decided in the loop, and 2,048
packet-ins decided back to back would hold the hub (the REST API, the metrics)
for milliseconds.

Taking. A message type an app has `take`n is not parsed by os-ken at all while
the connection is in MAIN_DISPATCHER: the loop hands its bytes to the app's
`handle(datapath, buf, at, length)`, in the loop, before the next message is
read, and calls the app's `flush(datapath)` before it waits for more bytes,
yields, or hands a message of the same read to os-ken. That is the classifier's
packet-in path: no message object, event,
queue or green-thread switch between the packet-in and its answer. `handle`
returns False to let os-ken parse the message as usual.

Writing. `write(datapath, data)` puts bytes on the connection now when nothing
else is being written to it or waits to be, and otherwise queues them behind it,
in os-ken's send queue: the order of everything sent on one connection is the order
it was written or queued in. os-ken's send loop writes one queued message per
`sendall`, after a green-thread switch; an answer written here costs one
non-blocking `send` from the loop that read its question.

`install()` puts the loop in place of os-ken's (closing the socket when it ends,
as os-ken's does); nothing else of os-ken changes.
"""
from __future__ import annotations

import logging
import ssl
import struct

LOG = logging.getLogger("socketnet.wire")

READ_SIZE = 256 * 1024
YIELD_EVERY = 64  # with the classifier, about 0.4 ms of packet-ins at a time
_HEADER = struct.Struct("!BBHI")

# msg_type -> the app that takes it: handle(datapath, buf, at, length) -> bool and
# flush(datapath). One per type: a second app taking the same type is refused.
_TAKERS: dict = {}


def take(msg_type: int, taker) -> None:
    """From now on, messages of `msg_type` on connections in MAIN_DISPATCHER go to
    `taker.handle(datapath, buf, at, length)` (the message is buf[at:at + length],
    header included; the buffer is reused once handle returns) instead of os-ken's
    parser, and `taker.flush(datapath)` is called before the loop waits, yields or
    hands a message to os-ken. handle is not to raise: an exception ends the
    connection's loop, and with it the connection."""
    held = _TAKERS.get(msg_type)
    if held is not None and held is not taker:
        raise ValueError(f"OpenFlow message type {msg_type} is taken already by {held!r}")
    _TAKERS[msg_type] = taker


def give_back(msg_type: int, taker) -> None:
    """os-ken parses `msg_type` again (if `taker` had it)."""
    if _TAKERS.get(msg_type) is taker:
        del _TAKERS[msg_type]


def _recv_loop(self):
    # Imported here: os-ken's import order is the runner's to choose.
    from socket import timeout as SocketTimeout

    from os_ken.controller import ofp_event
    from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER
    from os_ken.lib import hub
    from os_ken.ofproto import ofproto_parser

    header_size = _HEADER.size
    takers = _TAKERS
    buf = bytearray()
    count = 0
    while self.state != DEAD_DISPATCHER:
        try:
            data = self.socket.recv(READ_SIZE)
        except (SocketTimeout, ssl.SSLError):
            continue  # eventlet raises SSLError on an SSL read timeout
        except (EOFError, IOError):
            break
        if not data:
            break
        buf += data
        start, end = 0, len(buf)
        view = memoryview(buf)
        taken = False  # a taker had a message of this read not flushed yet
        try:
            while end - start >= header_size:
                version, msg_type, msg_len, xid = _HEADER.unpack_from(buf, start)
                if msg_len < header_size:
                    LOG.debug("message of invalid length %d from %s", msg_len, self.address)
                    msg_len = header_size
                if end - start < msg_len:
                    break
                taker = takers.get(msg_type) if takers else None
                handled = False
                if taker is not None and self.state == MAIN_DISPATCHER:
                    try:
                        handled = taker.handle(self, buf, start, msg_len)
                    except BaseException:
                        taken = True  # what it had goes out before the loop ends
                        raise
                    taken = taken or handled
                if not handled:
                    if taken:  # os-ken's handlers may wait: the answers go first
                        taken = _flush(self)
                    msg = ofproto_parser.msg(self, version, msg_type, msg_len, xid,
                                             bytearray(view[start:start + msg_len]))
                    if msg:
                        _dispatch(self, ofp_event.ofp_msg_to_ev(msg))
                start += msg_len
                count += 1
                if count >= YIELD_EVERY:
                    count = 0
                    taken = _flush(self) if taken else False
                    hub.sleep(0)
        finally:
            view.release()
            if taken:
                _flush(self)
        del buf[:start]


def _flush(datapath) -> bool:
    """Every taker writes what it holds for the connection; False (nothing held)."""
    for taker in list(_TAKERS.values()):
        taker.flush(datapath)
    return False


def _dispatch(datapath, ev) -> None:
    brick = datapath.ofp_brick
    if brick is None:
        return
    brick.send_event_to_observers(ev, datapath.state)
    state = datapath.state  # as os-ken's loop: handlers chosen after the observers
    handlers = [h for h in brick.get_handlers(ev)
                if state in h.callers[ev.__class__].dispatchers]
    for handler in handlers:
        handler(ev)


def _plain_socket(datapath):
    """The connection's own non-blocking socket under eventlet's, or None where
    bytes cannot be written to it directly (TLS: a record may not be cut short)."""
    sock = getattr(datapath.socket, "fd", None)
    if sock is None or isinstance(sock, ssl.SSLSocket) or isinstance(datapath.socket,
                                                                    ssl.SSLSocket):
        return None
    return sock


def _idle(datapath, queue) -> bool:
    """Nothing is being written or waits to be: the send loop waits in `get` on an
    empty queue, and no green thread waits for room in it (os-ken's `send` takes
    the queue's semaphore first; one that waited for it since the queue was full
    may not have been woken yet, and must not be overtaken)."""
    sem = getattr(datapath, "_send_q_sem", None)
    return (sem is not None and sem.balance == queue.maxsize and not queue.qsize()
            and queue.getting() > 0)


def write(datapath, data: bytes) -> bool:
    """Send `data` (whole OpenFlow messages) on the switch connection, after
    everything written or queued on it before. Written at once, without blocking,
    when os-ken's send loop is idle with nothing queued; what the socket does not
    take then, and everything while the send loop is busy, goes to os-ken's send
    queue. False if the connection is closing (the data is discarded, as os-ken's
    `send` does)."""
    queue = datapath.send_q
    if queue is None:
        return datapath.send(data)
    if _idle(datapath, queue):
        sock = _plain_socket(datapath)
        if sock is not None:
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                # The send loop meets the same error with what is queued, and ends
                # the connection as os-ken does.
                LOG.debug("writing to %s: %s", datapath.address, exc)
                sent = 0
            if sent == len(data):
                return True
            data = data[sent:]
    return datapath.send(data)


def install() -> None:
    """Make every switch connection of this process use this loop, closing its
    socket when the loop ends as os-ken's own does (its `_deactivate`)."""
    from os_ken.controller import controller
    controller.Datapath._recv_loop = controller._deactivate(_recv_loop)
