"""mcp_client: a small Python client for the Machine Context Protocol server.

Needs grpcio and protobuf, and the Python code generated from the schema by
``buf generate --template buf.gen.python.yaml`` (into clients/python/gen/). If the generated
``mcp`` package is not importable, the sibling gen/ folder (or $MCP_PYTHON_GEN) is put on the path.
"""
import importlib.util
import os
import sys

if importlib.util.find_spec("mcp") is None or importlib.util.find_spec("mcp.v1") is None:
    _gen = os.environ.get("MCP_PYTHON_GEN") or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gen")
    if not os.path.isdir(os.path.join(_gen, "mcp", "v1")):
        raise ImportError("the generated mcp.v1 modules are missing: run `npx buf generate --template buf.gen.python.yaml` (writes %s)" % _gen)
    sys.path.insert(0, _gen)

from .errors import McpError, TransportError, error_from_rpc  # noqa: E402
from .session import Session, connect  # noqa: E402

__all__ = ["McpError", "TransportError", "Session", "connect", "error_from_rpc"]
