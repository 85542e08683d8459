"""controller/wire.py: the bulk receive loop gives os-ken the same messages, in the
same order, with the same dispatcher-state rules, however the bytes arrive; a taken
message type goes to its taker instead, in MAIN_DISPATCHER only, with a flush before
every wait and yield; `write` keeps the connection's order whoever writes."""
import socket
import types

import pytest

pytest.importorskip("os_ken")

from os_ken.controller import ofp_event  # noqa: E402
from os_ken.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER,  # noqa: E402
                                       MAIN_DISPATCHER)
from os_ken.ofproto import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser  # noqa: E402

from controller import wire  # noqa: E402


def _message(cls, *args, xid=0, **kwargs) -> bytes:
    msg = cls(types.SimpleNamespace(ofproto=ofp, ofproto_parser=parser), *args, **kwargs)
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


def _stream(count: int) -> bytes:
    """Echo requests with xid 1..count, each with a payload of its own length."""
    return b"".join(_message(parser.OFPEchoRequest, data=bytes([i % 256]) * (i % 37), xid=i)
                    for i in range(1, count + 1))


class _Socket:
    def __init__(self, chunks):
        self.chunks = list(chunks)

    def recv(self, size):
        assert size == wire.READ_SIZE
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        if isinstance(chunk, BaseException):
            raise chunk
        return chunk


class _Handler:
    def __init__(self, seen, dispatchers):
        self.seen = seen
        self.callers = {ofp_event.EventOFPEchoRequest:
                        types.SimpleNamespace(dispatchers=dispatchers)}

    def __call__(self, ev):
        self.seen.append(ev.msg.xid)


class _Brick:
    def __init__(self, dispatchers=(MAIN_DISPATCHER,)):
        self.observed, self.handled = [], []
        self.handler = _Handler(self.handled, list(dispatchers))

    def send_event_to_observers(self, ev, state):
        self.observed.append((ev.msg.xid, bytes(ev.msg.data), state))

    def get_handlers(self, ev):
        return [self.handler] if isinstance(ev, ofp_event.EventOFPEchoRequest) else []


def _datapath(chunks, brick=None, state=MAIN_DISPATCHER):
    return types.SimpleNamespace(socket=_Socket(chunks), state=state, address=("x", 1),
                                 ofp_brick=brick if brick is not None else _Brick())


def _run(dp):
    wire._recv_loop(dp)
    return dp.ofp_brick


def _split(data: bytes, sizes):
    out, at = [], 0
    for size in sizes:
        out.append(data[at:at + size])
        at += size
    return out + ([data[at:]] if at < len(data) else [])


@pytest.mark.parametrize("sizes", [
    [10 ** 9],                  # everything in one read
    [1] * 400,                  # a byte at a time, headers split too
    [7, 8, 9, 500, 3, 4000],    # cuts inside headers and bodies, several messages per read
], ids=["one-read", "bytewise", "ragged"])
def test_every_message_arrives_once_in_order_however_the_bytes_are_cut(sizes):
    stream = _stream(60)
    brick = _run(_datapath(_split(stream, sizes)))
    assert [x for x, _, _ in brick.observed] == list(range(1, 61))
    assert [data for _, data, _ in brick.observed] == [
        bytes([i % 256]) * (i % 37) for i in range(1, 61)]
    assert brick.handled == list(range(1, 61))


def test_handlers_of_another_state_are_not_called_but_observers_still_see_it():
    brick = _run(_datapath([_stream(3)], _Brick(dispatchers=[CONFIG_DISPATCHER])))
    assert [x for x, _, _ in brick.observed] == [1, 2, 3]
    assert brick.handled == []


def test_the_state_after_the_observers_chooses_the_handlers():
    class Closing(_Brick):
        def send_event_to_observers(self, ev, state):
            super().send_event_to_observers(ev, state)
            dp.state = CONFIG_DISPATCHER  # an observer moved the connection on
    brick = Closing(dispatchers=[MAIN_DISPATCHER])
    dp = _datapath([_stream(1)], brick)
    _run(dp)
    assert brick.observed == [(1, b"\x01", MAIN_DISPATCHER)] and brick.handled == []


def test_a_read_timeout_is_retried_and_a_reset_ends_the_loop():
    stream = _stream(4)
    brick = _run(_datapath([stream[:20], socket.timeout(), stream[20:],
                            ConnectionResetError(), _stream(1)]))
    assert brick.handled == [1, 2, 3, 4]  # the message after the reset is never read


def test_a_dead_connection_reads_nothing_and_a_partial_tail_is_not_delivered():
    dp = _datapath([_stream(2)], state=DEAD_DISPATCHER)
    assert _run(dp).observed == [] and dp.socket.chunks  # not even read
    stream = _stream(3)
    assert _run(_datapath([stream[:-1]])).handled == [1, 2]


def test_a_header_claiming_less_than_a_header_is_skipped_as_one_header():
    bogus = bytes([ofp.OFP_VERSION, ofp.OFPT_ECHO_REQUEST]) + (2).to_bytes(2, "big") + bytes(4)
    brick = _run(_datapath([bogus + _stream(2)]))
    assert brick.handled == [0, 1, 2]  # the short one parsed as a bare echo, then the rest


def test_the_loop_yields_to_other_green_threads_every_so_many_messages(monkeypatch):
    from os_ken.lib import hub
    yields = []
    monkeypatch.setattr(hub, "sleep", lambda seconds: yields.append(seconds))
    monkeypatch.setattr(wire, "YIELD_EVERY", 10)
    brick = _run(_datapath([_stream(35)]))
    assert len(brick.handled) == 35 and yields == [0, 0, 0]


def test_install_replaces_os_kens_loop_and_the_socket_is_closed_when_it_ends(monkeypatch):
    from os_ken.base import app_manager  # noqa: F401  (os-ken's import order)
    from os_ken.controller import controller
    monkeypatch.setattr(controller.Datapath, "_recv_loop", controller.Datapath._recv_loop)
    wire.install()
    closed = []

    class Closing(_Socket):
        def close(self):
            closed.append(True)
    dp = _datapath([])
    dp.socket = Closing([_stream(2)])
    controller.Datapath._recv_loop(dp)  # as os-ken's serve() calls it
    assert dp.ofp_brick.handled == [1, 2] and closed == [True]


# --- a taken message type -----------------------------------------------------------


class _Taker:
    """Takes echo requests of odd xid, leaves the even ones to os-ken."""

    def __init__(self):
        self.events = []  # ("handle", xid) and ("flush",), in order

    def handle(self, datapath, buf, at, length):
        xid = int.from_bytes(buf[at + 4:at + 8], "big")
        assert len(bytes(buf[at:at + length])) == length
        if xid % 2 == 0:
            return False
        self.events.append(("handle", xid))
        return True

    def flush(self, datapath):
        self.events.append(("flush",))


@pytest.fixture
def taker():
    taker = _Taker()
    wire.take(ofp.OFPT_ECHO_REQUEST, taker)
    yield taker
    wire.give_back(ofp.OFPT_ECHO_REQUEST, taker)


def test_a_taken_type_goes_to_its_taker_and_what_it_leaves_to_os_ken(taker):
    stream = _stream(6)
    brick = _run(_datapath([stream[:40], stream[40:]]))
    handled = [e[1] for e in taker.events if e[0] == "handle"]
    assert handled == [1, 3, 5]
    assert brick.handled == [2, 4, 6] and [x for x, _, _ in brick.observed] == [2, 4, 6]


def test_the_taker_flushes_after_each_read_it_had_messages_of(taker):
    first, second = (b"".join(_message(parser.OFPEchoRequest, data=b"", xid=x) for x in xids)
                     for xids in ((1, 3), (5,)))  # all of them the taker's
    _run(_datapath([first, second]))
    assert taker.events == [("handle", 1), ("handle", 3), ("flush",), ("handle", 5), ("flush",)]


def test_a_read_with_nothing_taken_calls_no_flush(taker):
    _run(_datapath([_message(parser.OFPEchoRequest, data=b"", xid=2)]))
    assert taker.events == []


def test_the_taker_flushes_before_the_loop_yields(taker, monkeypatch):
    from os_ken.lib import hub
    monkeypatch.setattr(hub, "sleep", lambda seconds: taker.events.append(("yield",)))
    monkeypatch.setattr(wire, "YIELD_EVERY", 2)
    _run(_datapath([_stream(3)]))
    assert taker.events == [("handle", 1), ("flush",), ("yield",), ("handle", 3), ("flush",)]


def test_nothing_is_taken_outside_main_dispatcher(taker):
    brick = _run(_datapath([_stream(3)], _Brick(dispatchers=[CONFIG_DISPATCHER]),
                           state=CONFIG_DISPATCHER))
    assert taker.events == [] and [x for x, _, _ in brick.observed] == [1, 2, 3]


def test_the_taker_flushes_before_os_ken_gets_a_message_of_the_same_read(taker):
    class Recording(_Brick):
        def send_event_to_observers(self, ev, state):
            taker.events.append(("os-ken", ev.msg.xid))
            super().send_event_to_observers(ev, state)
    _run(_datapath([_stream(3)], Recording()))
    assert taker.events == [("handle", 1), ("flush",), ("os-ken", 2), ("handle", 3),
                            ("flush",)]


def test_a_taker_that_raises_ends_the_loop_but_what_it_had_is_flushed(taker):
    def handle(datapath, buf, at, length):
        raise RuntimeError("a bug")
    taker.handle = handle
    with pytest.raises(RuntimeError):
        _run(_datapath([_stream(1)]))
    assert taker.events == [("flush",)]


def test_a_type_has_one_taker_and_given_back_it_is_os_kens_again(taker):
    with pytest.raises(ValueError, match="taken already"):
        wire.take(ofp.OFPT_ECHO_REQUEST, _Taker())
    wire.take(ofp.OFPT_ECHO_REQUEST, taker)  # the same one again: no change
    wire.give_back(ofp.OFPT_ECHO_REQUEST, _Taker())  # not its taker: no change
    wire.give_back(ofp.OFPT_ECHO_REQUEST, taker)
    brick = _run(_datapath([_stream(2)]))
    assert taker.events == [] and brick.handled == [1, 2]


# --- writing ---------------------------------------------------------------------------


class _Plain:
    """The non-blocking socket under eventlet's: takes at most `room` bytes a send."""

    def __init__(self, room=1 << 20, error=None):
        self.room, self.error, self.wrote = room, error, []

    def send(self, data):
        if self.error is not None:
            raise self.error
        if self.room == 0:
            raise BlockingIOError()
        self.wrote.append(bytes(data[:self.room]))
        return min(len(data), self.room)


class _Queue:
    maxsize = 16

    def __init__(self, items=0, getters=1):
        self.items, self.getters = items, getters

    def qsize(self):
        return self.items

    def getting(self):
        return self.getters


class _Writer:
    def __init__(self, plain, queue, waiting_for_room=0):
        self.socket = types.SimpleNamespace(fd=plain)
        self.send_q = queue
        # os-ken's semaphore in front of the queue: its balance counts free slots,
        # less the green threads waiting for one.
        self._send_q_sem = types.SimpleNamespace(
            balance=(queue.maxsize - queue.items - waiting_for_room) if queue else 0)
        self.queued = []
        self.address = ("x", 1)

    def send(self, buf, close_socket=False):
        if self.send_q is None:
            return False
        self.queued.append(bytes(buf))
        return True


def test_written_at_once_when_the_send_loop_waits_with_nothing_queued():
    dp = _Writer(_Plain(), _Queue())
    assert wire.write(dp, b"abc") is True
    assert dp.socket.fd.wrote == [b"abc"] and dp.queued == []


@pytest.mark.parametrize("queue", [_Queue(items=1), _Queue(getters=0)],
                         ids=["something-queued", "send-loop-writing"])
def test_queued_behind_whatever_is_queued_or_being_written(queue):
    dp = _Writer(_Plain(), queue)
    assert wire.write(dp, b"abc") is True
    assert dp.socket.fd.wrote == [] and dp.queued == [b"abc"]


def test_never_ahead_of_a_sender_still_waiting_for_room_in_the_queue():
    """The queue drained and its send loop waits again, but a sender that waited
    while it was full has not run yet: it goes first."""
    dp = _Writer(_Plain(), _Queue(), waiting_for_room=1)
    assert wire.write(dp, b"abc") is True
    assert dp.socket.fd.wrote == [] and dp.queued == [b"abc"]


def test_what_the_socket_does_not_take_is_queued_in_order():
    dp = _Writer(_Plain(room=2), _Queue())
    wire.write(dp, b"abcde")
    assert dp.socket.fd.wrote == [b"ab"] and dp.queued == [b"cde"]
    dp = _Writer(_Plain(room=0), _Queue())
    wire.write(dp, b"abcde")
    assert dp.queued == [b"abcde"]


def test_a_socket_error_leaves_the_bytes_to_the_send_loop_which_ends_the_connection():
    dp = _Writer(_Plain(error=ConnectionResetError()), _Queue())
    assert wire.write(dp, b"abc") is True and dp.queued == [b"abc"]


def test_a_closing_connection_discards_as_os_ken_does():
    dp = _Writer(_Plain(), None)
    assert wire.write(dp, b"abc") is False and dp.socket.fd.wrote == []


def test_tls_is_never_written_past_its_socket():
    import ssl

    class Tls(ssl.SSLSocket):
        def __init__(self):  # never connected: only its type matters
            pass
    dp = _Writer(_Plain(), _Queue())
    dp.socket = Tls()
    assert wire.write(dp, b"abc") is True and dp.queued == [b"abc"]


def test_on_eventlets_own_socket_and_queue_the_bytes_go_out_at_once_or_behind_the_queue():
    """The same rules with what os-ken's Datapath really holds: eventlet's green
    socket (its plain socket under `fd`) and hub queue, a green thread waiting in
    `get` as os-ken's send loop does."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eventlet's notice that it is deprecated
        import eventlet
    from eventlet.green import socket as green_socket
    from eventlet.queue import LightQueue

    ours, switch = green_socket.socketpair()
    switch.settimeout(5)
    from eventlet.semaphore import BoundedSemaphore

    queue, taken = LightQueue(16), []
    dp = types.SimpleNamespace(socket=ours, send_q=queue, _send_q_sem=BoundedSemaphore(16),
                               address=("x", 1),
                               send=lambda buf, close_socket=False: queue.put(buf) or True)
    sender = eventlet.spawn(lambda: taken.append(queue.get()))
    eventlet.sleep(0)  # the sender now waits for work
    assert queue.getting() == 1
    assert wire.write(dp, b"at once") is True
    assert switch.recv(64) == b"at once" and taken == [] and queue.getting() == 1
    sender.kill()
    assert wire.write(dp, b"behind") is True  # nobody waits: the send loop is busy
    assert queue.get(block=False) == b"behind"
    ours.close()
    switch.close()
