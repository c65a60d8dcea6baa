/** A stock decoder for grpc-status-details-bin (google/rpc/status.proto), independent of our code. */
import protobuf from "protobufjs";

const rpcStatus = protobuf
  .parse(
    `syntax = "proto3"; package google.rpc;
     message Any { string type_url = 1; bytes value = 2; }
     message Status { int32 code = 1; string message = 2; repeated Any details = 3; }`,
  )
  .root.lookupType("google.rpc.Status");

export interface RpcStatus {
  code: number;
  message: string;
  details: { typeUrl: string; value: number[] }[];
}

/** Decodes a google.rpc.Status (as carried, binary, in grpc-status-details-bin). */
export function decodeRpcStatus(bin: Uint8Array): RpcStatus {
  return rpcStatus.toObject(rpcStatus.decode(bin), { bytes: Array, defaults: true }) as RpcStatus;
}
