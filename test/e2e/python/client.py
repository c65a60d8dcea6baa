"""The clients/python package (mcp_client) against a real server (see test/e2e/python.test.ts).

Usage: PYTHONPATH=clients/python python3 client.py TARGET TOKEN
Prints one JSON object with what each step returned or raised.
"""
import json
import sys

import mcp_client


def error(e):
    return {"type": type(e).__name__, "kind": e.kind, "code": e.code, "status": e.status.name if e.status else None, "command_id": e.command_id, "message": e.message}


def main():
    target, token = sys.argv[1], sys.argv[2]
    out = {}
    with mcp_client.connect(target, token, client_name="python-e2e") as s:
        h = s.handshake
        out["handshake"] = {"session_id": h.session_id, "subject": h.principal.subject, "level": mcp_client.session.types_pb2.SecurityLevel.Name(h.security_level)}
        out["echo"] = s.call("echo", {"text": "hello from python"}, command_id="py-1")
        out["update"] = s.update("py-ctx", put={"lang": "python", "n": 2})
        out["sync"] = list(s.sync("py-ctx"))
        out["update2"] = s.update("py-ctx", put={"n": 3}, delete=["lang"], expected_version=1)
        out["delta"] = list(s.sync("py-ctx", known_version=1))
        try:
            s.update("py-ctx", put={"n": 4}, expected_version=1)
        except mcp_client.McpError as e:
            out["conflict"] = error(e)
        try:
            s.call("no.such.tool", command_id="py-2")
        except mcp_client.McpError as e:
            out["stream_error"] = error(e)
        try:
            s.execute("no.such.tool")
        except mcp_client.McpError as e:
            out["unary_error"] = error(e)
        out["unary_echo"] = s.execute("echo", {"text": "unary"})
    try:
        mcp_client.connect(target, "not-a-token")
    except mcp_client.McpError as e:
        out["bad_token"] = error(e)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
