"""A Python grpcio client built only from code generated from proto/ (see test/e2e/python.test.ts).

Usage: PYTHONPATH=<generated> python3 client.py TARGET TOKEN
Runs: a SessionService.Connect handshake, an echo command, a context update and a sync on the
stream, and a unary CommandService.Execute that fails. Prints one JSON object with the results.
"""
import json
import queue
import sys

import grpc
from google.protobuf import json_format

from mcp.v1 import command_pb2, command_pb2_grpc, context_pb2, error_pb2, session_pb2, session_pb2_grpc, types_pb2

TIMEOUT_S = 10


def run_stream(channel, token):
    outbox = queue.Queue()

    def requests():
        while True:
            m = outbox.get()
            if m is None:
                return
            yield m

    stub = session_pb2_grpc.SessionServiceStub(channel)
    responses = stub.Connect(requests(), timeout=TIMEOUT_S * 3)
    out = {}

    outbox.put(session_pb2.ClientMessage(handshake=session_pb2.Handshake(
        protocol_versions=[types_pb2.PROTOCOL_VERSION_1_0],
        client=session_pb2.PeerInfo(name="python-grpcio", version=grpc.__version__),
        token=token,
    )))
    hr = next(responses)
    out["handshake"] = {
        "seq": hr.seq,
        "kind": hr.WhichOneof("message"),
        "session_id": hr.handshake_result.session_id,
        "subject": hr.handshake_result.principal.subject,
        "level": types_pb2.SecurityLevel.Name(hr.handshake_result.security_level),
    }

    cmd = command_pb2.Command(id="py-1", tool="echo")
    cmd.arguments.update({"text": "hello from python"})
    outbox.put(session_pb2.ClientMessage(command=cmd))
    r = next(responses)
    out["echo"] = {
        "seq": r.seq,
        "kind": r.WhichOneof("message"),
        "command_id": r.response.command_id,
        "result": r.response.WhichOneof("result"),
        "output": json_format.MessageToDict(r.response.output),
    }

    update = context_pb2.ContextUpdate(id="u-1", context_id="py-ctx")
    op = update.ops.add()
    op.put.key = "lang"
    op.put.value.string_value = "python"
    outbox.put(session_pb2.ClientMessage(update=update))
    u = next(responses)
    out["update"] = {
        "kind": u.WhichOneof("message"),
        "id": u.update_result.id,
        "version": u.update_result.version,
        "has_error": u.update_result.HasField("error"),
    }

    outbox.put(session_pb2.ClientMessage(sync=context_pb2.StateSync(context_id="py-ctx", known_version=0)))
    s = next(responses)
    out["sync"] = {
        "kind": s.WhichOneof("message"),
        "context_id": s.context_sync.context_id,
        "to_version": s.context_sync.to_version,
        "entries": {e.key: json_format.MessageToDict(e.value) for e in s.context_sync.entries},
        "updated_by": [e.updated_by for e in s.context_sync.entries],
    }
    outbox.put(None)
    out["rest"] = [m.WhichOneof("message") for m in responses]
    return out


def run_unary_error(channel, token):
    stub = command_pb2_grpc.CommandServiceStub(channel)
    cmd = command_pb2.Command(id="py-2", tool="no.such.tool")
    try:
        stub.Execute(cmd, metadata=[("authorization", "Bearer " + token)], timeout=TIMEOUT_S)
    except grpc.RpcError as e:
        details = {}
        for key, value in e.trailing_metadata() or ():
            if key == "grpc-status-details-bin":
                # google.rpc.Status, decoded with a hand-written message to need no googleapis package.
                details = decode_status(value)
        return {"status": e.code().name, "detail": details}
    return {"status": "OK"}


def decode_status(raw):
    from google.protobuf import any_pb2
    from google.protobuf.internal.decoder import _DecodeVarint

    code, message, anys = 0, "", []
    pos = 0
    while pos < len(raw):
        tag, pos = _DecodeVarint(raw, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            v, pos = _DecodeVarint(raw, pos)
            if field == 1:
                code = v
        elif wire == 2:
            n, pos = _DecodeVarint(raw, pos)
            chunk = raw[pos:pos + n]
            pos += n
            if field == 2:
                message = chunk.decode("utf-8")
            elif field == 3:
                a = any_pb2.Any()
                a.ParseFromString(chunk)
                anys.append(a)
        else:
            raise ValueError("unexpected wire type %d" % wire)
    out = {"code": code, "message": message, "types": [a.type_url for a in anys]}
    for a in anys:
        err = error_pb2.Error()
        if a.Unpack(err):
            out["error"] = {"kind": error_pb2.ErrorKind.Name(err.kind), "code": err.code, "command_id": err.command_id}
    return out


def main():
    target, token = sys.argv[1], sys.argv[2]
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT_S)
        result = run_stream(channel, token)
        result["unary_error"] = run_unary_error(channel, token)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
