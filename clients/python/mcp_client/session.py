"""A session on SessionService/Connect: handshake with a token, then commands, context updates
and syncs on the one stream, each answered by id (PROTOCOL.md §3–§4)."""
import itertools
import queue
import threading
import uuid

import grpc
from google.protobuf import json_format, struct_pb2

from mcp.v1 import command_pb2, command_pb2_grpc, context_pb2, session_pb2, session_pb2_grpc, types_pb2

from .errors import McpError, TransportError, error_from_rpc

_END = object()


class Session:
    """One authenticated session. Use ``connect()`` to open it; it is a context manager."""

    def __init__(self, channel, token, *, client_name="mcp-client-python", client_version="0.1.0", timeout=10.0, owns_channel=False):
        self.timeout = timeout
        self._channel = channel
        self._owns_channel = owns_channel
        self._token = token
        self._outbox = queue.Queue()
        self._lock = threading.Lock()
        # (kind, id) -> a one-slot queue the reader thread fills with the answer.
        self._waiting = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._failure = None
        self._commands = command_pb2_grpc.CommandServiceStub(channel)
        stream = session_pb2_grpc.SessionServiceStub(channel).Connect(self._requests())
        self._stream = stream
        self._outbox.put(session_pb2.ClientMessage(handshake=session_pb2.Handshake(
            protocol_versions=[types_pb2.PROTOCOL_VERSION_1_0],
            client=session_pb2.PeerInfo(name=client_name, version=client_version),
            token=token or "",
        )))
        try:
            first = next(stream)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None
        if first.WhichOneof("message") == "error":
            raise McpError(first.error)
        #: The mcp.v1.HandshakeResult: session_id, principal, security_level, ...
        self.handshake = first.handshake_result
        self._reader = threading.Thread(target=self._read, name="mcp-session-reader", daemon=True)
        self._reader.start()

    # -- the stream ------------------------------------------------------------------------

    def _requests(self):
        while True:
            m = self._outbox.get()
            if m is _END:
                return
            yield m

    def _read(self):
        try:
            for m in self._stream:
                kind = m.WhichOneof("message")
                if kind == "response":
                    self._deliver(("response", m.response.command_id), m.response)
                elif kind == "update_result":
                    self._deliver(("update", m.update_result.id), m.update_result)
                elif kind == "context_sync":
                    self._deliver(("sync", m.context_sync.context_id), m.context_sync)
                elif kind == "error":
                    # A session-level error ends the session; every waiter hears it.
                    self._fail(McpError(m.error))
                    return
            self._fail(TransportError(None, "the server ended the session stream"))
        except grpc.RpcError as e:
            self._fail(error_from_rpc(e) if e.code() != grpc.StatusCode.CANCELLED or not self._closed else TransportError(e.code(), "closed"))

    def _deliver(self, key, value):
        with self._lock:
            slot = self._waiting.pop(key, None)
        if slot is not None:
            slot.put(value)

    def _fail(self, err):
        with self._lock:
            self._failure = self._failure or err
            slots = list(self._waiting.values())
            self._waiting.clear()
        for s in slots:
            s.put(err)

    def _ask(self, key, message, timeout):
        slot = queue.Queue(1)
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if key in self._waiting:
                raise ValueError("%s %r is already waiting for an answer" % key)
            self._waiting[key] = slot
        self._outbox.put(message)
        try:
            answer = slot.get(timeout=timeout if timeout is not None else self.timeout)
        except queue.Empty:
            with self._lock:
                self._waiting.pop(key, None)
            raise TransportError(grpc.StatusCode.DEADLINE_EXCEEDED, "no answer to %s %r in time" % key) from None
        if isinstance(answer, Exception):
            raise answer
        return answer

    # -- the API ---------------------------------------------------------------------------

    def call(self, tool, arguments=None, *, timeout=None, command_id=None):
        """Runs ``tool`` on the session; returns its output as a dict, or raises McpError."""
        cmd = command_pb2.Command(id=command_id or "py-%d" % next(self._ids), tool=tool)
        if arguments:
            cmd.arguments.update(arguments)
        if timeout is not None:
            cmd.timeout_ms = int(timeout * 1000)
        r = self._ask(("response", cmd.id), session_pb2.ClientMessage(command=cmd), None if timeout is None else timeout + self.timeout)
        if r.WhichOneof("result") == "error":
            raise McpError(r.error)
        return json_format.MessageToDict(r.output)

    def update(self, context_id, put=None, delete=(), *, expected_version=0):
        """Applies one update (``put``: key → JSON value, ``delete``: keys); returns the new version."""
        u = context_pb2.ContextUpdate(id="u-%s" % uuid.uuid4(), context_id=context_id, expected_version=expected_version)
        for key, value in (put or {}).items():
            op = u.ops.add()
            op.put.key = key
            json_format.ParseDict(value, op.put.value)
        for key in delete:
            u.ops.add().delete.key = key
        r = self._ask(("update", u.id), session_pb2.ClientMessage(update=u), None)
        if r.HasField("error"):
            raise McpError(r.error)
        return r.version

    def sync(self, context_id, known_version=0):
        """The context's entries (a dict key → JSON value) and version after ``known_version``.

        Returns ``(version, entries, deleted_keys, full)``; with ``known_version=0``, a full snapshot.
        """
        s = self._ask(("sync", context_id), session_pb2.ClientMessage(sync=context_pb2.StateSync(context_id=context_id, known_version=known_version)), None)
        entries = {e.key: json_format.MessageToDict(e.value) for e in s.entries}
        return s.to_version, entries, list(s.deleted_keys), s.full

    def execute(self, tool, arguments=None, *, timeout=None):
        """Runs ``tool`` as a unary CommandService/Execute call (not on the stream); raises McpError
        decoded from the status details when it fails."""
        cmd = command_pb2.Command(id="py-unary-%d" % next(self._ids), tool=tool)
        if arguments:
            cmd.arguments.update(arguments)
        metadata = [("authorization", "Bearer " + self._token)] if self._token else []
        try:
            r = self._commands.Execute(cmd, metadata=metadata, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None
        return json_format.MessageToDict(r.output)

    def close(self):
        """Half-closes the stream, waits (bounded) for the server to end it, and releases the channel."""
        if self._closed:
            return
        self._closed = True
        self._outbox.put(_END)
        self._reader.join(self.timeout)
        if self._reader.is_alive():
            self._stream.cancel()
        if self._owns_channel:
            self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def connect(target, token=None, *, credentials=None, timeout=10.0, **kwargs):
    """Opens a channel to ``target`` ("host:port") and a session on it, handshaking with ``token``.

    ``credentials``: ``grpc.ssl_channel_credentials(...)`` for TLS; cleartext HTTP/2 when None.
    """
    channel = grpc.secure_channel(target, credentials) if credentials is not None else grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        return Session(channel, token, timeout=timeout, owns_channel=True, **kwargs)
    except grpc.FutureTimeoutError:
        channel.close()
        raise TransportError(grpc.StatusCode.UNAVAILABLE, "could not reach %s within %ss" % (target, timeout)) from None
    except BaseException:
        channel.close()
        raise
