/**
 * The schema files whose services the server answers, as compiled into gen/: what reflection
 * describes (with their imports) and what health reports per service. A service added to the
 * server adds its file here.
 */
import type { DescFile } from "@bufbuild/protobuf";
import { file_grpc_health_v1_health } from "../../gen/grpc/health/v1/health_pb.js";
import { file_grpc_reflection_v1_reflection } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { file_grpc_reflection_v1alpha_reflection } from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { file_mcp_tools_v1_tools } from "../../gen/mcp/tools/v1/tools_pb.js";
import { file_mcp_v1_admin } from "../../gen/mcp/v1/admin_pb.js";
import { file_mcp_v1_command } from "../../gen/mcp/v1/command_pb.js";
import { file_mcp_v1_context } from "../../gen/mcp/v1/context_pb.js";
import { file_mcp_v1_event } from "../../gen/mcp/v1/event_pb.js";
import { file_mcp_v1_session } from "../../gen/mcp/v1/session_pb.js";

export const reflectionFiles: readonly DescFile[] = [
  file_mcp_v1_session,
  file_mcp_v1_command,
  file_mcp_v1_context,
  file_mcp_v1_event,
  file_mcp_v1_admin,
  // Not imported by the services, but the typed tool messages clients decode outputs with.
  file_mcp_tools_v1_tools,
  file_grpc_health_v1_health,
  file_grpc_reflection_v1_reflection,
  file_grpc_reflection_v1alpha_reflection,
];
