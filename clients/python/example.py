"""Example: python3 clients/python/example.py [HOST:PORT]  (token from $MCP_TOKEN).

Opens a session, runs echo, writes and reads a context, and shows a typed error.
"""
import os
import sys

import mcp_client

target = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9000"
with mcp_client.connect(target, os.environ.get("MCP_TOKEN")) as s:
    print("session", s.handshake.session_id, "as", s.handshake.principal.subject)
    print("echo:", s.call("echo", {"text": "hi from python"}))
    version = s.update("py-demo", put={"lang": "python"})
    print("context py-demo at version", version, "=", s.sync("py-demo")[1])
    try:
        s.execute("no.such.tool")
    except mcp_client.McpError as e:
        print("error:", e.kind, e.code)
