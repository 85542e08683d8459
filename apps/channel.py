"""Request and reply over one switch connection: xids, multipart replies, errors,
barriers and atomic bundles; and `Channels`, the one Channel of each connected
switch that every app shares.

`Channels` is the os-ken context "channels": apps/connection.py opens a switch's
Channel when it connects, closes it when that connection dies, and hands every
reply and error to `Channels.deliver`, once; the other apps look the channel up
(`current`, `get`) and send over it. A green thread that called `request()` or
`apply_bundle()` waits on its own xid. Every xid of a connection comes from one
sequence, its datapath's (`next_xid`), whichever app sends, so a reply or error
is never taken for another's. OpenFlow answers in order, so the errors of
everything sent before a barrier have arrived by the time the barrier's reply does.
"""
from __future__ import annotations

import itertools
import logging

from os_ken.lib import hub
from os_ken.ofproto import ofproto_common
from os_ken.ofproto import ofproto_v1_3 as ofp

LOG = logging.getLogger("socketnet.channel")

_bundle_ids = itertools.count(1)


class ChannelError(RuntimeError):
    """The switch refused a request (`error`: its OFPErrorMsg), or did not answer."""

    def __init__(self, message: str, error=None):
        super().__init__(message)
        self.error = error


class _Pending:
    def __init__(self):
        self.done = hub.Event()
        self.replies = []
        self.error = None


# ONF's extension errors (OpenFlow 1.3's bundles among them), by exp_type.
_ONF_ERRORS = {getattr(ofp, name): name[len("ONFERR_ET_"):].lower().replace("_", "-")
               for name in dir(ofp) if name.startswith("ONFERR_ET_")}


def describe_error(msg) -> str:
    if msg.type == ofp.OFPET_EXPERIMENTER:
        exp_type = getattr(msg, "exp_type", None)
        experimenter = getattr(msg, "experimenter", None)
        if experimenter == ofproto_common.ONF_EXPERIMENTER_ID and exp_type in _ONF_ERRORS:
            return f"onf/{_ONF_ERRORS[exp_type]}"
        return f"experimenter {experimenter if experimenter is None else hex(experimenter)}/{exp_type}"
    try:
        type_name = ofp.ofp_error_type_to_str(msg.type)
        code_name = ofp.ofp_error_code_to_str(msg.type, msg.code)
    except Exception:  # unknown codes still deserve a message
        type_name, code_name = str(msg.type), str(msg.code)
    return f"{type_name}/{code_name}"


class Channel:
    def __init__(self, datapath, timeout: float):
        self.dp = datapath
        self.timeout = timeout
        self._pending = {}   # xid -> _Pending, for requests that expect replies
        self._errors = {}    # xid -> error message, for one-way messages we track

    # --- called from the app's event handlers -----------------------------

    def deliver(self, msg) -> None:
        """A reply or error for one of our xids (others are ignored)."""
        pending = self._pending.get(msg.xid)
        is_error = isinstance(msg, self.dp.ofproto_parser.OFPErrorMsg)
        if is_error and msg.xid in self._errors:
            self._errors[msg.xid] = msg
        if pending is None:
            return
        if is_error:
            pending.error = msg
            pending.done.set()
            return
        pending.replies.append(msg)
        multipart = isinstance(msg, self.dp.ofproto_parser.OFPMultipartReply)
        if not (multipart and msg.flags & ofp.OFPMPF_REPLY_MORE):
            pending.done.set()

    # --- called from green threads ----------------------------------------

    def request(self, msg, what: str = "") -> list:
        """Send `msg` and wait for its (possibly multipart) reply."""
        self.dp.set_xid(msg)
        pending = self._pending[msg.xid] = _Pending()
        try:
            if not self.dp.send_msg(msg):
                raise ChannelError(f"{what or type(msg).__name__}: connection closed")
            if not pending.done.wait(self.timeout):
                raise ChannelError(f"{what or type(msg).__name__}: no reply in {self.timeout}s")
            if pending.error is not None:
                raise ChannelError(f"{what or type(msg).__name__}: {describe_error(pending.error)}",
                                   pending.error)
            return pending.replies
        finally:
            del self._pending[msg.xid]

    def barrier(self) -> None:
        self.request(self.dp.ofproto_parser.OFPBarrierRequest(self.dp), "barrier")

    def send_checked(self, messages, describe) -> None:
        """Send one-way messages, then a barrier; raise if the switch refused any."""
        refused = self._send_fenced(messages)
        if refused:
            raise ChannelError("switch refused " + "; ".join(
                f"{describe(i)}: {describe_error(err)}" for i, err in refused))

    def _send_fenced(self, messages, xids=None) -> list:
        """Send, barrier, and return (index, error) of the messages refused. With
        `xids` (a list), the messages' xids go there and stay tracked: the caller
        reads later errors for them and forgets them (`_forget`)."""
        keep = xids is not None
        xids = xids if keep else []
        try:
            for msg in messages:
                self.dp.set_xid(msg)
                self._errors[msg.xid] = None
                xids.append(msg.xid)
                if not self.dp.send_msg(msg):
                    raise ChannelError("connection closed")
            self.barrier()
            return self._refused(xids)
        finally:
            if not keep:
                self._forget(xids)

    def _refused(self, xids) -> list:
        return [(i, self._errors[x]) for i, x in enumerate(xids) if self._errors.get(x)]

    def _forget(self, xids) -> None:
        for x in xids:
            self._errors.pop(x, None)

    def apply_bundle(self, messages, describe) -> None:
        """Apply `messages` atomically: all of them, or none.

        ONF bundle extension (OpenFlow 1.3): open; add each message; a barrier
        so that add-time errors are in; then commit, or discard if any add was
        refused (a refused add would otherwise be dropped alone and the commit
        would succeed without it). `describe(i)` names message i in errors.
        """
        parser = self.dp.ofproto_parser
        bundle_id = next(_bundle_ids) & 0xFFFFFFFF
        flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED

        def control(kind, name):
            return self.request(parser.ONFBundleCtrlMsg(self.dp, bundle_id, kind, flags, []),
                                f"bundle {name}")

        def refusals(refused) -> str:
            return "; ".join(f"{describe(i)}: {describe_error(err)}" for i, err in refused)

        control(ofp.ONF_BCT_OPEN_REQUEST, "open")
        xids = []  # the adds' own: a message refused only at commit is named by its add's
        try:
            refused = self._send_fenced([parser.ONFBundleAddMsg(self.dp, bundle_id, flags, msg,
                                                                []) for msg in messages], xids)
            if refused:
                try:
                    control(ofp.ONF_BCT_DISCARD_REQUEST, "discard")
                except ChannelError as exc:
                    LOG.warning("%s", exc)
                raise ChannelError("switch refused " + refusals(refused))
            try:
                control(ofp.ONF_BCT_COMMIT_REQUEST, "commit")
            except ChannelError as exc:
                # Open vSwitch checks some things (a table's flow limit) only at
                # commit; it reports the message that failed before the commit's error.
                refused = self._refused(xids)
                if refused:
                    raise ChannelError(f"{exc}: switch refused {refusals(refused)}",
                                       exc.error) from None
                raise
        finally:
            self._forget(xids)


class Channels:
    """The Channel of each connected switch, for every app: one opened on connect,
    closed on disconnect (a late DEAD of a connection since replaced is ignored),
    and each reply handed to what waits for it on the connection it came on."""

    def __init__(self):
        self._by_dpid = {}
        # dpid -> {xid: (event, msgs)}: os-ken ofctl's requests (apps/rest.py), in the
        # protocol Ryu's ofctl_rest has with its app.
        self.waiters = {}

    def open(self, datapath, timeout: float) -> Channel:
        channel = self._by_dpid[datapath.id] = Channel(datapath, timeout)
        return channel

    def forget(self, datapath) -> bool:
        """Forget `datapath`'s channel; whether it was the current connection.
        (Not `close`: os-ken calls a context's close() when the process stops.)"""
        channel = self._by_dpid.get(datapath.id) if datapath.id is not None else None
        if channel is None or channel.dp is not datapath:
            return False
        del self._by_dpid[datapath.id]
        self.waiters.pop(datapath.id, None)
        return True

    def current(self, datapath):
        """The channel of this very connection, or None."""
        channel = self._by_dpid.get(datapath.id)
        return channel if channel is not None and channel.dp is datapath else None

    def deliver(self, msg) -> None:
        """A reply or error to its one taker: the ofctl request of its xid, else
        the channel of the connection it came on (which ignores xids not its own)."""
        dp = msg.datapath
        waiting = self.waiters.get(dp.id, {})
        if msg.xid in waiting:  # os-ken ofctl's protocol, as Ryu's ofctl_rest has it
            event, msgs = waiting[msg.xid]
            msgs.append(msg)
            if not getattr(msg, "flags", 0) & ofp.OFPMPF_REPLY_MORE:
                del waiting[msg.xid]
                event.set()
            return
        channel = self.current(dp)
        if channel is not None:
            channel.deliver(msg)

    def get(self, dpid: int):
        return self._by_dpid.get(dpid)

    def items(self):
        return list(self._by_dpid.items())

    def values(self):
        return list(self._by_dpid.values())


def next_xid(datapath) -> int:
    """The connection's next xid, for a message packed without os-ken (the
    classifier's): the same sequence `Datapath.set_xid` draws from for every
    Channel and for os-ken's ofctl."""
    datapath.xid = (datapath.xid + 1) & datapath.ofproto.MAX_XID
    return datapath.xid
