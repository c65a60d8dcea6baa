/**
 * Security (PROTOCOL.md §5): who the caller is (`createTokenVerifier`, JWTs through jose), what
 * level their session has (`grantedLevel`), and what they may do (`createPolicy`,
 * `createAuthorizer`), with revocation and an audit trail of denials. This area never sees a
 * transport: the server hands it a token string and whether the connection is TLS.
 * See docs/security.md for the threat model and configuration.
 */
export { createTokenVerifier } from "./token-verifier.js";
export type { TokenVerifier, TokenVerifierOptions, VerifiedToken } from "./token-verifier.js";
export { createMemoryRevocationStore } from "./revocation.js";
export type { Revocation, RevocationListener, RevocationStore, MemoryRevocationStoreOptions } from "./revocation.js";
export { createRedisRevocationStore } from "./redis-revocation.js";
export type { RedisRevocationStoreOptions } from "./redis-revocation.js";
export { grantedLevel, levelAtLeast, levelName, parseLevel } from "./levels.js";
export type { GrantedLevelInput, LevelName } from "./levels.js";
export { BUILTIN_ROLES, createPolicy, loadPolicyFile } from "./policy.js";
export type { Policy, PolicyDecision, PolicyDefinition, RoleTable } from "./policy.js";
export { createJsonAuditSink } from "./audit.js";
export type { AuditEntry, AuditSink, AuditWritable } from "./audit.js";
export { createAuthorizer } from "./authorizer.js";
export type { Authorizer, AuthorizerOptions, AuthSubject } from "./authorizer.js";
export { withVerificationCache } from "./verification-cache.js";
export type { VerificationCacheOptions } from "./verification-cache.js";
export { mintToken } from "./mint.js";
export type { MintTokenOptions } from "./mint.js";
export { loadOrCreateDevSecret } from "./dev-secret.js";
export type { DevSecret } from "./dev-secret.js";
