/**
 * The ConcordKV Raft core: a pure, deterministic consensus state machine (`RaftNode`), its log
 * storages (`MemoryStorage`, the on-disk `RaftLogStore`), the binary codec and the simulator.
 *
 * @example
 * ```ts
 * import { MemoryStorage, RaftNode } from "./mod.ts";
 * const storage = new MemoryStorage({ confState: { voters: [1], learners: [] } });
 * const node = new RaftNode({ id: 1, storage, random: Math.random });
 * console.log(node.role); // "follower"
 * ```
 *
 * @module
 */
export * from "./types.ts";
export * from "./errors.ts";
export * from "./codec.ts";
export { committedIndex, hasQuorum, type VoteResult, voteResult } from "./quorum.ts";
export { Inflights, Progress, type ProgressState } from "./progress.ts";
export { MemoryStorage, type MemoryStorageOptions } from "./memory_storage.ts";
export {
  DEFAULT_SEGMENT_BYTES,
  RaftLogStore,
  type RaftLogStoreOptions,
  RaftRecordType,
} from "./log_store.ts";
export {
  CAMPAIGN_TRANSFER,
  RaftNode,
  type RaftNodeOptions,
  type UnsafeTestingKnobs,
} from "./node.ts";
