"""A grpcio bidi call written the ordinary way: a request generator that yields a Handshake, N
slow commands, an fs.list and a Ping, then returns (half-close). See test/e2e/half-close.test.ts.

Usage: PYTHONPATH=<generated> python3 half_close.py TARGET TOKEN N
Reads every ServerMessage until the stream ends and prints one JSON object: the message kinds in
order, the Responses by command id, and how the RPC ended.
"""
import json
import sys

import grpc

from mcp.v1 import command_pb2, session_pb2, session_pb2_grpc, types_pb2

TIMEOUT_S = 20


def requests(token, n):
    yield session_pb2.ClientMessage(handshake=session_pb2.Handshake(
        protocol_versions=[types_pb2.PROTOCOL_VERSION_1_0],
        client=session_pb2.PeerInfo(name="python-grpcio-half-close", version=grpc.__version__),
        token=token,
    ))
    for i in range(n):
        cmd = command_pb2.Command(id="slow-%d" % i, tool="sleep")
        cmd.arguments.update({"ms": 50 + (i * 37) % 151})
        yield session_pb2.ClientMessage(command=cmd)
    ls = command_pb2.Command(id="list", tool="fs.list")
    ls.arguments.update({"path": ".", "recursive": True})
    yield session_pb2.ClientMessage(command=ls)
    yield session_pb2.ClientMessage(ping=session_pb2.Ping(id=42))
    # Returning ends the request stream: grpcio half-closes here.


def main():
    target, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    out = {"kinds": [], "responses": {}, "seqs": []}
    with grpc.insecure_channel(target) as channel:
        stub = session_pb2_grpc.SessionServiceStub(channel)
        call = stub.Connect(requests(token, n), timeout=TIMEOUT_S)
        try:
            for m in call:
                kind = m.WhichOneof("message")
                out["kinds"].append(kind)
                out["seqs"].append(m.seq)
                if kind == "response":
                    out["responses"][m.response.command_id] = m.response.WhichOneof("result")
            out["status"] = call.code().name
        except grpc.RpcError as e:
            out["status"] = e.code().name
            out["details"] = e.details()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
