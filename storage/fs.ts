/**
 * The file-system interface of the storage engine. Every file access of the engine goes through
 * a {@link FileSystem}, so tests can swap in {@link MemFs}, which keeps only what was synced when
 * it "crashes" (LevelDB's fault-injection Env, in a few lines).
 *
 * Reads are synchronous (`readAt`): lookups and iterators read 4 KiB blocks from the page cache,
 * where a synchronous read costs a few microseconds and an async one tens. Writes, syncs and
 * directory operations are asynchronous.
 *
 * @module
 */

/** An open file. Writers only append; readers only read at offsets. */
export interface StorageFile {
  /** Path the file was opened with. */
  readonly path: string;
  /** Reads up to `buf.length` bytes at `pos`; returns the count read (less only at the end). */
  readAt(buf: Uint8Array, pos: number): number;
  /** Appends `data` at the end of the file. */
  append(data: Uint8Array): Promise<void>;
  /** Makes every appended byte durable (fdatasync). */
  sync(): Promise<void>;
  /** Current size in bytes. */
  size(): number;
  /** Shrinks the file to `len` bytes. */
  truncate(len: number): Promise<void>;
  /** Closes the handle. */
  close(): void;
}

/** A held directory lock. */
export interface FileLock {
  /** Releases the lock. */
  release(): void;
}

/** The file-system operations the engine needs. Paths are joined with "/". */
export interface FileSystem {
  /** Opens `path` for appending, creating it; `truncate` empties it first. */
  openAppend(path: string, options?: { truncate?: boolean }): Promise<StorageFile>;
  /** Opens an existing file for reading. */
  openRead(path: string): Promise<StorageFile>;
  /**
   * Opens an existing file for reading, synchronously (tables opened lazily on their first
   * lookup, which is synchronous); throws `Deno.errors.NotFound` when it is missing.
   */
  openReadSync(path: string): StorageFile;
  /** Reads a whole file. */
  readFile(path: string): Promise<Uint8Array>;
  /** Renames `from` to `to`, replacing `to`. */
  rename(from: string, to: string): Promise<void>;
  /** Removes a file; a missing file is not an error. */
  remove(path: string): Promise<void>;
  /** Names (not paths) of the entries of `dir`. */
  list(dir: string): Promise<string[]>;
  /** Creates `dir` and its parents. */
  mkdir(dir: string): Promise<void>;
  /** Makes creations, renames and removals in `dir` durable (fsync of the directory). */
  syncDir(dir: string): Promise<void>;
  /** True when `path` exists. */
  exists(path: string): Promise<boolean>;
  /** Takes an exclusive lock on `path` (created if missing) without waiting; `null` if held. */
  tryLock(path: string): Promise<FileLock | null>;
}

class _DenoFile implements StorageFile {
  #file: Deno.FsFile;
  #size: number;
  #pos = -1;
  constructor(readonly path: string, file: Deno.FsFile, size: number) {
    this.#file = file;
    this.#size = size;
  }
  readAt(buf: Uint8Array, pos: number): number {
    // Sequential reads (scans, compactions) skip the seek: it costs as much as the read.
    if (pos !== this.#pos) this.#file.seekSync(pos, Deno.SeekMode.Start);
    this.#pos = -1;
    let done = 0;
    while (done < buf.length) {
      const n = this.#file.readSync(done === 0 ? buf : buf.subarray(done));
      if (n === null || n === 0) break;
      done += n;
    }
    this.#pos = pos + done;
    return done;
  }
  async append(data: Uint8Array): Promise<void> {
    let done = 0;
    if (data.length <= 256 * 1024) {
      // A small append is a page-cache copy: cheaper done synchronously than as an async op.
      while (done < data.length) {
        done += this.#file.writeSync(done === 0 ? data : data.subarray(done));
      }
    } else {
      while (done < data.length) {
        done += await this.#file.write(done === 0 ? data : data.subarray(done));
      }
    }
    this.#size += data.length;
  }
  async sync(): Promise<void> {
    await this.#file.syncData();
  }
  size(): number {
    return this.#size;
  }
  async truncate(len: number): Promise<void> {
    await this.#file.truncate(len);
    this.#size = len;
  }
  close(): void {
    try {
      this.#file.close();
    } catch (e) {
      if (!(e instanceof Deno.errors.BadResource)) throw e;
    }
  }
}

/**
 * The real file system, on `Deno.FsFile`.
 *
 * @example
 * ```ts
 * const fs = new DenoFs();
 * await fs.mkdir("/tmp/concordkv-doc");
 * ```
 */
export class DenoFs implements FileSystem {
  /** Implements {@link FileSystem.openAppend}. */
  async openAppend(path: string, options?: { truncate?: boolean }): Promise<StorageFile> {
    // Writers never read or seek: without truncation, O_APPEND keeps them at the end.
    const file = await Deno.open(
      path,
      options?.truncate
        ? { create: true, write: true, truncate: true }
        : { create: true, append: true },
    );
    const size = (await file.stat()).size;
    return new _DenoFile(path, file, size);
  }
  /** Implements {@link FileSystem.openRead}. */
  async openRead(path: string): Promise<StorageFile> {
    const file = await Deno.open(path, { read: true });
    try {
      return new _DenoFile(path, file, (await file.stat()).size);
    } catch (e) {
      file.close();
      throw e;
    }
  }
  /** Implements {@link FileSystem.openReadSync}. */
  openReadSync(path: string): StorageFile {
    const file = Deno.openSync(path, { read: true });
    try {
      return new _DenoFile(path, file, file.statSync().size);
    } catch (e) {
      file.close();
      throw e;
    }
  }
  /** Implements {@link FileSystem.readFile}. */
  readFile(path: string): Promise<Uint8Array> {
    return Deno.readFile(path);
  }
  /** Implements {@link FileSystem.rename}. */
  rename(from: string, to: string): Promise<void> {
    return Deno.rename(from, to);
  }
  /** Implements {@link FileSystem.remove}. */
  async remove(path: string): Promise<void> {
    try {
      await Deno.remove(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  /** Implements {@link FileSystem.list}. */
  async list(dir: string): Promise<string[]> {
    const out: string[] = [];
    for await (const entry of Deno.readDir(dir)) out.push(entry.name);
    return out;
  }
  /** Implements {@link FileSystem.mkdir}. */
  async mkdir(dir: string): Promise<void> {
    await Deno.mkdir(dir, { recursive: true });
  }
  /** Implements {@link FileSystem.syncDir}. */
  async syncDir(dir: string): Promise<void> {
    const f = await Deno.open(dir, { read: true });
    try {
      await f.sync();
    } finally {
      f.close();
    }
  }
  /** Implements {@link FileSystem.exists}. */
  async exists(path: string): Promise<boolean> {
    try {
      await Deno.stat(path);
      return true;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return false;
      throw e;
    }
  }
  /** Implements {@link FileSystem.tryLock}. */
  async tryLock(path: string): Promise<FileLock | null> {
    const f = await Deno.open(path, { create: true, write: true, read: true });
    const ok = await f.tryLock(true);
    if (!ok) {
      f.close();
      return null;
    }
    return {
      release() {
        try {
          f.unlockSync();
          f.close();
        } catch {
          // already closed
        }
      },
    };
  }
}

interface _MemNode {
  data: Uint8Array;
  length: number;
  synced: Uint8Array;
}

function _parent(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

class _MemFile implements StorageFile {
  constructor(readonly path: string, private node: _MemNode, private fs: MemFs) {}
  readAt(buf: Uint8Array, pos: number): number {
    const n = Math.max(0, Math.min(buf.length, this.node.length - pos));
    buf.set(this.node.data.subarray(pos, pos + n));
    return n;
  }
  append(data: Uint8Array): Promise<void> {
    this.fs.checkFault("append", this.path);
    const node = this.node;
    if (node.length + data.length > node.data.length) {
      const next = new Uint8Array(Math.max(node.data.length * 2, node.length + data.length, 256));
      next.set(node.data.subarray(0, node.length));
      node.data = next;
    }
    node.data.set(data, node.length);
    node.length += data.length;
    return Promise.resolve();
  }
  sync(): Promise<void> {
    this.fs.checkFault("sync", this.path);
    this.node.synced = this.node.data.slice(0, this.node.length);
    return Promise.resolve();
  }
  size(): number {
    return this.node.length;
  }
  truncate(len: number): Promise<void> {
    this.node.length = Math.min(len, this.node.length);
    return Promise.resolve();
  }
  close(): void {}
}

/**
 * An in-memory {@link FileSystem} for tests. File contents become durable on `sync`, and
 * creations, renames and removals on `syncDir` of their directory. {@link MemFs.crash} returns a
 * new file system holding only the durable state, as after a power cut; the old one keeps
 * working on its own, so a crashed engine's pending work cannot reach the new one.
 * {@link MemFs.failOn} makes writes or syncs throw, to test I/O error handling.
 *
 * @example
 * ```ts
 * const fs = new MemFs();
 * await fs.mkdir("/db");
 * const f = await fs.openAppend("/db/a");
 * await f.append(Uint8Array.of(1, 2, 3));
 * const after = fs.crash(); // "/db/a" is gone: neither its data nor its name was synced
 * ```
 */
export class MemFs implements FileSystem {
  #live = new Map<string, _MemNode>();
  #durable = new Map<string, _MemNode>();
  #dirs = new Set<string>(["/"]);
  #locks = new Set<string>();
  #fault: ((op: string, path: string) => boolean) | undefined;

  /** Makes operations for which `pred(op, path)` is true throw an I/O error (op: append, sync, syncDir). */
  failOn(pred: ((op: string, path: string) => boolean) | undefined): void {
    this.#fault = pred;
  }
  /** @internal */
  checkFault(op: string, path: string): void {
    if (this.#fault?.(op, path)) throw new Error(`injected ${op} failure on ${path}`);
  }
  /** A new file system with only the durable state of this one. */
  crash(): MemFs {
    const next = new MemFs();
    for (const d of this.#dirs) next.#dirs.add(d);
    const copies = new Map<_MemNode, _MemNode>();
    for (const [path, node] of this.#durable) {
      let copy = copies.get(node);
      if (!copy) {
        copy = {
          data: node.synced.slice(),
          length: node.synced.length,
          synced: node.synced.slice(),
        };
        copies.set(node, copy);
      }
      next.#live.set(path, copy);
      next.#durable.set(path, copy);
    }
    return next;
  }
  /** The current content of `path` (for tests that flip bytes). */
  raw(path: string): Uint8Array | undefined {
    const node = this.#live.get(path);
    return node?.data.subarray(0, node.length);
  }
  #get(path: string): _MemNode {
    const node = this.#live.get(path);
    if (!node) throw new Deno.errors.NotFound(`no such file: ${path}`);
    return node;
  }
  /** Implements {@link FileSystem.openAppend}. */
  openAppend(path: string, options?: { truncate?: boolean }): Promise<StorageFile> {
    if (!this.#dirs.has(_parent(path))) {
      return Promise.reject(new Deno.errors.NotFound(`no such dir: ${_parent(path)}`));
    }
    let node = this.#live.get(path);
    if (!node) {
      node = { data: new Uint8Array(256), length: 0, synced: new Uint8Array(0) };
      this.#live.set(path, node);
    } else if (options?.truncate) node.length = 0;
    return Promise.resolve(new _MemFile(path, node, this));
  }
  /** Implements {@link FileSystem.openRead}. */
  openRead(path: string): Promise<StorageFile> {
    try {
      return Promise.resolve(new _MemFile(path, this.#get(path), this));
    } catch (e) {
      return Promise.reject(e);
    }
  }
  /** Implements {@link FileSystem.openReadSync}. */
  openReadSync(path: string): StorageFile {
    return new _MemFile(path, this.#get(path), this);
  }
  /** Implements {@link FileSystem.readFile}. */
  readFile(path: string): Promise<Uint8Array> {
    try {
      const node = this.#get(path);
      return Promise.resolve(node.data.slice(0, node.length));
    } catch (e) {
      return Promise.reject(e);
    }
  }
  /** Implements {@link FileSystem.rename}. */
  rename(from: string, to: string): Promise<void> {
    try {
      const node = this.#get(from);
      this.#live.delete(from);
      this.#live.set(to, node);
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }
  /** Implements {@link FileSystem.remove}. */
  remove(path: string): Promise<void> {
    this.#live.delete(path);
    return Promise.resolve();
  }
  /** Implements {@link FileSystem.list}. */
  list(dir: string): Promise<string[]> {
    const out: string[] = [];
    for (const path of this.#live.keys()) {
      if (_parent(path) === dir) out.push(path.slice(dir.length + 1));
    }
    return Promise.resolve(out);
  }
  /** Implements {@link FileSystem.mkdir}. */
  mkdir(dir: string): Promise<void> {
    let d = dir;
    while (d !== "/" && d !== "") {
      this.#dirs.add(d);
      d = _parent(d);
    }
    return Promise.resolve();
  }
  /** Implements {@link FileSystem.syncDir}. */
  syncDir(dir: string): Promise<void> {
    try {
      this.checkFault("syncDir", dir);
    } catch (e) {
      return Promise.reject(e);
    }
    for (const path of [...this.#durable.keys()]) {
      if (_parent(path) === dir && !this.#live.has(path)) this.#durable.delete(path);
    }
    for (const [path, node] of this.#live) {
      if (_parent(path) === dir) this.#durable.set(path, node);
    }
    return Promise.resolve();
  }
  /** Implements {@link FileSystem.exists}. */
  exists(path: string): Promise<boolean> {
    return Promise.resolve(this.#live.has(path) || this.#dirs.has(path));
  }
  /** Implements {@link FileSystem.tryLock}. */
  tryLock(path: string): Promise<FileLock | null> {
    if (this.#locks.has(path)) return Promise.resolve(null);
    this.#locks.add(path);
    if (!this.#live.has(path)) {
      this.#live.set(path, { data: new Uint8Array(0), length: 0, synced: new Uint8Array(0) });
    }
    return Promise.resolve({ release: () => void this.#locks.delete(path) });
  }
}
