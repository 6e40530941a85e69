/**
 * Types of `jobcast`: live job status for browsers and Node.
 *
 * Written by hand beside jobcast.js (which stays plain JavaScript, so a page can load it
 * with no build step); they need neither the DOM library nor Node's types.
 */

/** Where a job is: new jobs are `queued`; `completed` and `error` are final. */
export type JobStatus = 'queued' | 'processing' | 'completed' | 'error';

/** What kind of work a job tracks (default `generic`). */
export type JobType = 'file_processing' | 'document_analysis' | 'llm_agent' | 'generic';

/** A JSON value, as a job's `metadata` holds. */
export type JsonValue =
  string | number | boolean | null | readonly JsonValue[] | { readonly [key: string]: JsonValue };

/**
 * A job: the full state every event carries. Optional fields without a value are absent;
 * fields newer servers add are kept (and typed `unknown` until named here).
 */
export interface Job {
  readonly jobId: string;
  readonly jobType: JobType;
  readonly status: JobStatus;
  /** The current human-readable step (`""` by default). */
  readonly message: string;
  /** 0 to 100; `completed` sets 100. */
  readonly progress: number;
  /** Present once set (usually on completion). */
  readonly documentId?: string;
  /** Present once the job failed. */
  readonly error?: string;
  readonly metadata: { readonly [key: string]: JsonValue };
  /** Who the job belongs to, when created with one (read tokens can cover an owner). */
  readonly owner?: string;
  /** Where this job's own webhook deliveries go, when it was created with one. */
  readonly webhookUrl?: string;
  /** ISO 8601 UTC with milliseconds and `Z`. */
  readonly createdAt: string;
  readonly updatedAt: string;
  /** The Jobs API's name for `updatedAt` (the same value). */
  readonly timestamp: string;
  /** 1 at creation, one more on every change: orders a job's events. */
  readonly version: number;
  /** The number of output chunks, once the job has output. */
  readonly outputSize?: number;
  /**
   * `true` once somebody asked the worker to stop (`POST /api/jobs/{jobId}/cancel`); the job
   * runs on until its worker ends it. Absent before.
   */
  readonly cancelRequested?: boolean;
  /** The reason given with that cancel, when one was. */
  readonly cancelReason?: string;
  readonly [field: string]: unknown;
}

/**
 * One piece of a job's output (LLM tokens, log lines, partial results), as its worker
 * appended it. A job's chunks are numbered from 0 and arrive in that order.
 */
export interface OutputChunk {
  /** Its place in the job's output: 0 for the first chunk, then one more for each. */
  readonly offset: number;
  /** Whatever JSON value the worker appended. */
  readonly data: JsonValue;
  /** The label its worker gave it (`token`, `log`, `result`, …), when it gave one. */
  readonly kind?: string;
}

/** A job in a final state. */
export type TerminalJob = Job & { readonly status: 'completed' | 'error' };

/** How updates arrive: Server-Sent Events, a WebSocket, or polling (long-polling for one job). */
export type Transport = 'sse' | 'ws' | 'poll';

/**
 * Where a watch is. `closed`, `unauthorized` (401) and `forbidden` (403) are final: the
 * watch ended by itself (its job ended, or is gone) or was refused, and then `problem`
 * says why (`close()` changes no state). `paused`: hidden (`pauseWhenHidden`) or, for a
 * store, nothing subscribed.
 */
export type WatchState =
  | 'connecting'
  | 'live'
  | 'reconnecting'
  | 'offline'
  | 'paused'
  | 'closed'
  | 'unauthorized'
  | 'forbidden';

/** The server's problem+json (RFC 9457) for a refusal. */
export interface Problem {
  readonly status: number;
  readonly title?: string;
  readonly type?: string;
  readonly detail?: string;
  readonly [field: string]: unknown;
}

/** What `onState` gets. */
export interface StateChange {
  readonly state: WatchState;
  readonly transport: Transport;
  /** With `unauthorized` and `forbidden` only. */
  readonly problem?: Problem;
}

/** A read token, or none (`null`, `undefined`, `''`): sync or async. */
export type TokenSource = () => string | null | undefined | PromiseLike<string | null | undefined>;

/** A message event as EventSource and WebSocket deliver it (just what jobcast reads). */
export interface MessageEventLike {
  readonly data: unknown;
  readonly lastEventId?: string;
}

/** An EventSource: the browser's, or in Node the `eventsource` package's. */
export interface EventSourceLike {
  addEventListener(type: string, listener: (event: MessageEventLike) => void): void;
  close(): void;
}
export type EventSourceConstructor = new (url: string) => EventSourceLike;

/**
 * A WebSocket: the browser's and Node 22's, or on Node 20 the `ws` package's. Its events:
 * 'open', 'message' (`data`), 'error', 'close' (`code`, `reason`).
 */
export interface WebSocketLike {
  readonly readyState: number;
  addEventListener(type: string, listener: (event: unknown) => void): void;
  send(data: string): void;
  close(): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** Where and how to connect: the options every watch and store take. */
export interface ConnectionOptions {
  /** Default `sse`. */
  transport?: Transport | undefined;
  /**
   * The server, e.g. `https://jobs.example.com` (may end in a path). Default: the page's
   * origin; required outside a browser.
   */
  baseUrl?: string | URL | undefined;
  /** A read token, sent as `?token=` on every request. */
  token?: string | undefined;
  /**
   * Asked for a read token on every (re)connect, and once more after a 401: a different
   * token is then tried at once, the same one ends the watch as `unauthorized`. Wins
   * over `token`.
   */
  getToken?: TokenSource | undefined;
  /** Fall back to polling when streaming keeps failing while the server answers. Default true. */
  fallback?: boolean | undefined;
  /** Milliseconds between polls of the job list (transport `poll`). Default 1000. */
  pollInterval?: number | undefined;
  /** Milliseconds of polling in place of a failing stream before the stream is tried again (0: never). Default 300000. */
  restreamAfter?: number | undefined;
  /**
   * In a browser, close the connection while the page is hidden and resume when shown. A
   * number: close it only once the page has stayed hidden that many milliseconds, so that
   * a quick look at another tab costs no reconnection.
   */
  pauseWhenHidden?: boolean | number | undefined;
  /** The EventSource to use (default the global one): in Node, the `eventsource` package's. */
  EventSource?: EventSourceConstructor | undefined;
  /** The WebSocket to use (default the global one): on Node 20, the `ws` package's. */
  WebSocket?: WebSocketConstructor | undefined;
}

/** Which jobs a watch of many follows: those matching every filter given. */
export interface JobFilter {
  jobType?: JobType | undefined;
  status?: JobStatus | undefined;
  /** The jobs created with this `owner` (an owner's read token reads only those anyway). */
  owner?: string | undefined;
}

/** What a watch tells. Callbacks may throw: the error is reported, the watch goes on. */
export interface WatchCallbacks {
  /** A job, new or changed: each version once, in order. */
  onJob?: ((job: Job) => void) | undefined;
  /** A job was cleaned up or deleted (for one job: it does not exist, or no longer). */
  onRemoved?: ((jobId: string) => void) | undefined;
  /** The server could not resume (it restarted, say): a full snapshot follows. */
  onReset?: (() => void) | undefined;
  onState?: ((change: StateChange) => void) | undefined;
  /** What was delivered so far is the server's whole state: the snapshot is over. */
  onSynced?: (() => void) | undefined;
}

export interface WatchJobOptions extends ConnectionOptions, WatchCallbacks {
  /** Follow the job's output too. Default: whether `onOutput` is given. */
  output?: boolean | undefined;
  /**
   * New output chunks: each once, in order, none missing, across reconnects and a fall back
   * to polling. Those appended before a change of the job come before that change's
   * `onJob`, and every chunk before the final state's.
   */
  onOutput?: ((chunks: readonly OutputChunk[]) => void) | undefined;
}
export interface WatchJobsOptions extends ConnectionOptions, WatchCallbacks, JobFilter {}

/** A running watch. */
export interface WatchHandle {
  /** Stop watching (nothing is called after). */
  close(): void;
  readonly state: WatchState;
  /** The transport in use (`poll` after a fallback). */
  readonly transport: Transport;
  /** Whether the watch has ended: closed, its job final or gone, or refused. */
  readonly closed: boolean;
  /**
   * How many output chunks the watch has delivered (the next one's offset): a watch of one
   * job's output resumes from here after every drop. Always 0 without `output`.
   */
  readonly outputOffset: number;
}

/**
 * Watch one job until it reaches `completed` or `error`, or is removed; with `output` (or
 * `onOutput`), its output too.
 */
export function watchJob(jobId: string, options?: WatchJobOptions): WatchHandle;

/** Watch every job, or those matching `jobType` and `status`, until closed. */
export function watchJobs(options?: WatchJobsOptions): WatchHandle;

/** Whether a job's status is final (`completed` or `error`). */
export function isTerminal<T extends { readonly status: string }>(
  job: T | null | undefined,
): job is T & { readonly status: 'completed' | 'error' };

/** What a store of one job keeps of its output. */
export interface OutputOptions {
  /** Follow the job's output too (a store of one job only). Default false. */
  output?: boolean | undefined;
  /**
   * How many of the newest chunks `output` holds (default 1000; `Infinity` for all): the
   * older ones are dropped, and only counted in `outputOffset`.
   */
  keepOutput?: number | undefined;
}

/** A store of one job (`jobId`) or of many (`jobType`, `status`; all when neither). */
export interface JobStoreOptions extends ConnectionOptions, JobFilter, OutputOptions {
  jobId?: string | null | undefined;
}

/**
 * What a store holds. Frozen, jobs included, and replaced only when something in it
 * changed: compare by identity. A job that did not change keeps its identity too.
 */
export interface JobStoreSnapshot {
  /** Newest first (`createdAt`, then `jobId`); at most one in a one-job store. */
  readonly jobs: readonly Job[];
  /** A one-job store's job, once known (and until removed); always undefined for many. */
  readonly job: Job | undefined;
  readonly state: WatchState;
  readonly transport: Transport;
  /** Why the server refused (`unauthorized`, `forbidden`). */
  readonly problem: Problem | undefined;
  /** The server's state has arrived at least once (false while loading). */
  readonly synced: boolean;
  /** The watch has ended: `close()`, the job final or gone, or refused. Nothing changes after. */
  readonly closed: boolean;
  /**
   * With `output`: the newest `keepOutput` chunks of the job's output, oldest first (empty
   * otherwise). Replaced when chunks arrive.
   */
  readonly output: readonly OutputChunk[];
  /** With `output`: how many chunks arrived in all (the next one's offset); else 0. */
  readonly outputOffset: number;
}

/** A store for `useSyncExternalStore`, Svelte's `$store`, or a Vue `shallowRef`. */
export interface JobStore {
  /**
   * Call `listener` now and after every change; connects on the first subscriber and
   * pauses when the last one leaves. Returns the function that unsubscribes.
   */
  subscribe(listener: (snapshot: JobStoreSnapshot) => void): () => void;
  getSnapshot(): JobStoreSnapshot;
  /** End the watch for good. */
  close(): void;
}

export function createJobStore(options?: JobStoreOptions): JobStore;
