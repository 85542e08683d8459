"""controller/receive.py: the bulk receive loop gives os-ken the same messages, in the
same order, with the same dispatcher-state rules, however the bytes arrive."""
import socket
import types

import pytest

pytest.importorskip("os_ken")

from os_ken.controller import ofp_event  # noqa: E402
from os_ken.controller.handler import (CONFIG_DISPATCHER, DEAD_DISPATCHER,  # noqa: E402
                                       MAIN_DISPATCHER)
from os_ken.ofproto import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser  # noqa: E402

from controller import receive  # noqa: E402


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
        assert size == receive.READ_SIZE
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
    receive._recv_loop(dp)
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
    monkeypatch.setattr(receive, "YIELD_EVERY", 10)
    brick = _run(_datapath([_stream(35)]))
    assert len(brick.handled) == 35 and yields == [0, 0, 0]


def test_install_replaces_os_kens_loop_for_every_connection(monkeypatch):
    from os_ken.base import app_manager  # noqa: F401  (os-ken's import order)
    from os_ken.controller import controller
    monkeypatch.setattr(controller.Datapath, "_recv_loop", controller.Datapath._recv_loop)
    receive.install()
    assert controller.Datapath._recv_loop is receive._recv_loop
