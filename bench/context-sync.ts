/**
 * What a SyncContext answer costs on the wire for a 10,000-entry context after one key changed:
 * the delta a client with the previous version gets, against the full snapshot (PROTOCOL.md §4
 * step 3). Prints the toBinary sizes; run with `node --import tsx bench/context-sync.ts`.
 */
import { fromJson, toBinary } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { ContextSyncSchema } from "../gen/mcp/v1/context_pb.js";
import { createContextManager, createMemoryContextStore } from "../src/context/index.js";

const ENTRIES = 10_000;

const store = createMemoryContextStore();
const contexts = createContextManager({ store });
const ops = Array.from({ length: ENTRIES }, (_, i) => ({
  op: {
    case: "put" as const,
    value: {
      key: `src/module-${i}.ts`,
      value: fromJson(ValueSchema, { path: `src/module-${i}.ts`, lines: 100 + i, dirty: false, owner: "agent-1" }),
    },
  },
}));
const { version: before } = await contexts.update({ contextId: "bench", ops }, "bench");
const changed = ops[4242];
if (changed === undefined) throw new Error("no op 4242");
await contexts.update(
  {
    contextId: "bench",
    ops: [{ op: { case: "put", value: { key: changed.op.value.key, value: fromJson(ValueSchema, { dirty: true }) } } }],
  },
  "bench",
);

const delta = await contexts.sync("bench", before);
const full = await contexts.sync("bench", 0n);
const deltaBytes = toBinary(ContextSyncSchema, delta).length;
const fullBytes = toBinary(ContextSyncSchema, full).length;

console.log(`context of ${ENTRIES} entries, 1 key changed (version ${before} -> ${delta.toVersion})`);
console.log(`  delta (known_version=${before}): ${deltaBytes} bytes, ${delta.entries.length} entry`);
console.log(`  full snapshot:               ${fullBytes} bytes, ${full.entries.length} entries`);
console.log(`  full / delta: ${(fullBytes / deltaBytes).toFixed(0)}x`);

await contexts.close();
await store.close();
