/**
 * Refuses Deno versions known to break ConcordKV.
 *
 * Deno 2.9.4–2.9.6 abort inside nghttp2 (`node:http2`, upstream denoland/deno#36788) when a gRPC
 * client that made a few hundred calls closes its connection: a node would crash under normal
 * client traffic. Deno older than 2.7 cannot run `@grpc/grpc-js` 1.14 at all
 * (`http2.getDefaultSettings` is not implemented).
 *
 * @module
 */

/** The Deno version ConcordKV is pinned to. */
export const PINNED_DENO = "2.9.3";

const BAD_HTTP2 = new Set(["2.9.4", "2.9.5", "2.9.6"]);

/**
 * Returns why `version` cannot run a node, or `undefined` when it can.
 *
 * @example
 * ```ts
 * console.log(denoVersionProblem("2.9.6")); // names the node:http2 crash
 * console.log(denoVersionProblem("2.9.3")); // undefined
 * ```
 */
export function denoVersionProblem(version: string): string | undefined {
  if (BAD_HTTP2.has(version)) {
    return `Deno ${version} has a node:http2 bug that crashes gRPC servers (nghttp2 assertion ` +
      `find_stream_on_goaway_func / free(): invalid pointer when a client closes its connection; ` +
      `denoland/deno#36788). Use Deno ${PINNED_DENO}: npx -y deno@${PINNED_DENO} task …`;
  }
  const [major = 0, minor = 0] = version.split(".").map((p) => Number.parseInt(p, 10));
  if (major < 2 || (major === 2 && minor < 7)) {
    return `Deno ${version} is too old for @grpc/grpc-js 1.14 (node:http2 getDefaultSettings is ` +
      `missing). Use Deno ${PINNED_DENO}: npx -y deno@${PINNED_DENO} task …`;
  }
  return undefined;
}
