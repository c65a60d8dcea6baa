/**
 * gRPC server reflection (`grpc.reflection.v1` and the older `v1alpha`, which many tools still
 * call first) answered from the protobuf-es file descriptors compiled into gen/, so `buf curl`,
 * grpcurl and Postman can call the server with no .proto files at hand. Served through
 * connect-node, so every protocol it speaks reaches it. Public, like the schema itself: see
 * docs/security.md "Reflection and health".
 */
import { toBinary, type DescFile } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";

/** A reflection request's oneof, as both versions' generated types spell it. */
type ReflectionQuery =
  | { case: "fileByFilename" | "fileContainingSymbol" | "allExtensionNumbersOfType" | "listServices"; value: string }
  | { case: "fileContainingExtension"; value: { containingType: string; extensionNumber: number } }
  | { case: undefined; value?: undefined };

/** A reflection response's oneof, as plain init objects both versions accept. */
type ReflectionAnswer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "allExtensionNumbersResponse"; value: { baseTypeName: string; extensionNumber: number[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

/** What reflection knows: files by name and by the symbols they define, and the services. */
export interface ReflectionIndex {
  /** Every service's fully-qualified name, sorted. */
  readonly services: readonly string[];
  /** The answer to one request. */
  answer(query: ReflectionQuery): ReflectionAnswer;
}

/**
 * Indexes `files` and everything they import (google/protobuf/*.proto included). Each file's
 * FileDescriptorProto is encoded once, here, so answering a request allocates nothing but the reply.
 */
export function createReflectionIndex(files: readonly DescFile[]): ReflectionIndex {
  const byName = new Map<string, DescFile>();
  const bySymbol = new Map<string, DescFile>();
  const extensions = new Map<string, Map<number, DescFile>>();
  const encoded = new Map<DescFile, Uint8Array>();
  const services: string[] = [];
  const visit = (f: DescFile): void => {
    if (byName.has(f.name + ".proto")) return;
    byName.set(f.name + ".proto", f);
    encoded.set(f, toBinary(FileDescriptorProtoSchema, f.proto));
    for (const t of nestedTypes(f)) {
      bySymbol.set(t.typeName, f);
      if (t.kind === "service") {
        services.push(t.typeName);
        for (const m of t.methods) bySymbol.set(`${t.typeName}.${m.name}`, f);
      } else if (t.kind === "extension") {
        let numbers = extensions.get(t.extendee.typeName);
        if (numbers === undefined) extensions.set(t.extendee.typeName, (numbers = new Map()));
        numbers.set(t.number, f);
      }
    }
    for (const d of f.dependencies) visit(d);
  };
  for (const f of files) visit(f);
  services.sort();

  /** The file and, transitively, every file it imports: clients resolve types across them. */
  const withDependencies = (f: DescFile): ReflectionAnswer => {
    const out: Uint8Array[] = [];
    const seen = new Set<DescFile>();
    const add = (g: DescFile): void => {
      if (seen.has(g)) return;
      seen.add(g);
      out.push(encoded.get(g)!);
      for (const d of g.dependencies) add(d);
    };
    add(f);
    return { case: "fileDescriptorResponse", value: { fileDescriptorProto: out } };
  };
  const notFound = (what: string): ReflectionAnswer => ({ case: "errorResponse", value: { errorCode: Code.NotFound, errorMessage: `${what} not found` } });
  const listServices: ReflectionAnswer = { case: "listServicesResponse", value: { service: services.map((name) => ({ name })) } };

  return {
    services,
    answer(query) {
      switch (query.case) {
        case "listServices":
          return listServices;
        case "fileByFilename": {
          const f = byName.get(query.value);
          return f === undefined ? notFound(`file ${JSON.stringify(query.value)}`) : withDependencies(f);
        }
        case "fileContainingSymbol": {
          // Tools ask with or without the leading dot of a fully-qualified name.
          const name = query.value.startsWith(".") ? query.value.slice(1) : query.value;
          const f = bySymbol.get(name);
          return f === undefined ? notFound(`symbol ${JSON.stringify(name)}`) : withDependencies(f);
        }
        case "fileContainingExtension": {
          const f = extensions.get(query.value.containingType)?.get(query.value.extensionNumber);
          return f === undefined ? notFound(`extension ${query.value.extensionNumber} of ${JSON.stringify(query.value.containingType)}`) : withDependencies(f);
        }
        case "allExtensionNumbersOfType": {
          if (!bySymbol.has(query.value)) return notFound(`type ${JSON.stringify(query.value)}`);
          const numbers = [...(extensions.get(query.value)?.keys() ?? [])].sort((a, b) => a - b);
          return { case: "allExtensionNumbersResponse", value: { baseTypeName: query.value, extensionNumber: numbers } };
        }
        default:
          return { case: "errorResponse", value: { errorCode: Code.InvalidArgument, errorMessage: "the request names no reflection query" } };
      }
    },
  };
}

/** Registers both reflection services on a Connect router, answering from `index`. */
export function registerReflection(router: ConnectRouter, index: ReflectionIndex): void {
  router.service(v1.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const r of requests) {
        yield { validHost: r.host, originalRequest: r, messageResponse: index.answer(r.messageRequest) };
      }
    },
  });
  router.service(v1alpha.ServerReflection, {
    async *serverReflectionInfo(requests) {
      for await (const r of requests) {
        yield { validHost: r.host, originalRequest: r, messageResponse: index.answer(r.messageRequest) };
      }
    },
  });
}
