"""Typed errors: every failure the server reports carries an mcp.v1.Error (PROTOCOL.md §7)."""
import grpc
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

from mcp.v1 import error_pb2


class McpError(Exception):
    """An error the server reported, with its stable ``kind`` and ``code``.

    ``kind`` is the short name of mcp.v1.ErrorKind ("COMMAND", "SECURITY", "CONTEXT",
    "PROTOCOL", "TRANSPORT"); ``code`` is the machine-readable code ("unknown_tool",
    "version_conflict", ...). ``status`` is the gRPC status code of a unary call, else None.
    """

    def __init__(self, error, status=None):
        self.error = error
        self.kind = error_pb2.ErrorKind.Name(error.kind).removeprefix("ERROR_KIND_")
        self.code = error.code
        self.message = error.message
        self.retryable = error.retryable
        self.retry_after_ms = error.retry_after_ms
        self.command_id = error.command_id
        self.status = status
        super().__init__("%s/%s: %s" % (self.kind, self.code, self.message))


class TransportError(Exception):
    """The call failed without an mcp.v1.Error (connection refused, deadline, ...)."""

    def __init__(self, status, details):
        self.status = status
        self.details = details
        super().__init__("%s: %s" % (status.name if status is not None else "UNKNOWN", details))


def _status_class():
    # google.rpc.Status (code, message, details) built from a descriptor, so the client needs no
    # googleapis package beside grpcio and protobuf.
    fdp = descriptor_pb2.FileDescriptorProto(name="mcp_client/google_rpc_status.proto", package="google.rpc", syntax="proto3")
    fdp.dependency.append("google/protobuf/any.proto")
    m = fdp.message_type.add(name="Status")
    m.field.add(name="code", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32, label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    m.field.add(name="message", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    m.field.add(name="details", number=3, type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE, label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED, type_name=".google.protobuf.Any")
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(descriptor_pb2.FileDescriptorProto(name="google/protobuf/any.proto", package="google.protobuf", syntax="proto3", message_type=[descriptor_pb2.DescriptorProto(name="Any", field=[
        descriptor_pb2.FieldDescriptorProto(name="type_url", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL),
        descriptor_pb2.FieldDescriptorProto(name="value", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_BYTES, label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL),
    ])]).SerializeToString())
    pool.AddSerializedFile(fdp.SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status")) if hasattr(message_factory, "GetMessageClass") else message_factory.MessageFactory(pool).GetPrototype(pool.FindMessageTypeByName("google.rpc.Status"))


_Status = _status_class()


def error_from_rpc(e):
    """The McpError in a failed call's ``grpc-status-details-bin`` trailer, else a TransportError."""
    for key, value in e.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = _Status()
        status.ParseFromString(value)
        for detail in status.details:
            a = any_pb2.Any(type_url=detail.type_url, value=detail.value)
            err = error_pb2.Error()
            if a.Unpack(err):
                return McpError(err, status=e.code())
    return TransportError(e.code(), e.details())
