/**
 * jobcast.js — live job status for any web page. One ES module, no dependencies.
 *
 * @example
 * import { watchJob, watchJobs } from '/static/jobcast.js';
 *
 * // One job, until it completes or fails (then the watch ends by itself):
 * const one = watchJob(jobId, {
 *   onJob: (job) => render(job),              // the full job, on every change
 *   onState: ({ state, transport }) => {},    // 'connecting' | 'live' | 'reconnecting' | 'offline'
 *                                             // | 'unauthorized' | 'forbidden' (see below)
 *   onRemoved: (jobId) => {},                 // the job was cleaned up (or never existed)
 * });
 *
 * // Every job, or those matching jobType / status:
 * const all = watchJobs({
 *   onJob: (job) => upsert(job),
 *   onRemoved: (jobId) => drop(jobId),
 *   onReset: () => {},        // optional: the server could not resume (it restarted, say)
 *   jobType: 'file_processing',
 *   transport: 'ws',          // 'sse' (default) | 'ws' | 'poll'
 *   baseUrl: 'https://jobs.example.com',   // default: this page's origin
 *   token: '…',               // optional: sent as ?token= on every request
 * });
 * all.close();
 *
 * What it does for you:
 * - Resumes. After a dropped connection it reconnects with exponential backoff and
 *   jitter and asks for what changed since its last event (the SSE `Last-Event-ID`,
 *   sent as `?lastEventId=`; the WebSocket `since`), so nothing is missed or repeated.
 * - Ends up exactly at the server's state. When the server cannot resume (`reset`,
 *   e.g. after a restart) it sends a full snapshot; jobs you were given that are not
 *   in it are reported through `onRemoved` once the server marks the snapshot's end
 *   (`synced`).
 * - Falls back to polling (`GET /api/jobs`, long-poll for one job) when a stream keeps
 *   failing while the server itself answers: a proxy that breaks streaming, say.
 *   `fallback: false` turns that off. `pollInterval` (ms, default 1000) paces it.
 * - Delivers each job version once, in order; callbacks always get the full job.
 * - Stops when the server refuses the credential. A 401 (no token, or one that is
 *   invalid or expired) ends the watch in state 'unauthorized', a 403 (a token that
 *   does not cover what is watched) in 'forbidden': retrying with the same token
 *   cannot help. `onState` then also gets `problem`, the server's problem+json
 *   (`status`, `title`, `detail`): `({ state, transport, problem }) => {}`.
 */

const TRANSPORTS = ['sse', 'ws', 'poll'];
const TERMINAL = new Set(['completed', 'error']);
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30_000;
const FALLBACK_AFTER = 3; // stream failures in a row, the server answering, before polling
const STABLE_MS = 5_000; // a stream that lived this long was not a failure of streaming
const OFFLINE_AFTER = 4; // unreachable attempts in a row before 'offline'
const LONG_POLL_S = 25;
const WS_PING_MS = 20_000;

/**
 * Watch one job until it reaches `completed` or `error`.
 * @param {string} jobId
 * @param {object} [options] onJob, onState, onRemoved, transport, baseUrl, token, fallback
 * @returns {{close(): void, readonly state: string|null, readonly transport: string}}
 */
export function watchJob(jobId, options = {}) {
  return new Watch({ ...options, jobId: String(jobId) }).start();
}

/**
 * Watch every job (or those matching `jobType` and `status`) until closed.
 * @param {object} [options] onJob, onRemoved, onReset, onState, jobType, status,
 *   transport, baseUrl, token, fallback, pollInterval
 * @returns {{close(): void, readonly state: string|null, readonly transport: string}}
 */
export function watchJobs(options = {}) {
  return new Watch({ ...options, jobId: null }).start();
}

/** Whether a job's status is final (`completed` or `error`). */
export const isTerminal = (job) => TERMINAL.has(job?.status);

class Watch {
  constructor(options) {
    this.o = options;
    this.jobId = options.jobId;
    this.transport = TRANSPORTS.includes(options.transport) ? options.transport : 'sse';
    this.base = new URL(options.baseUrl || globalThis.location.origin, globalThis.location?.href);
    this.versions = new Map(); // jobId → the version last delivered
    this.cursor = null; // all-jobs feed position of the last event
    this.conn = null; // the open connection: {close(), live, liveAt, closed}
    this.timer = 0;
    this.attempts = 0; // failed attempts since the last live connection
    this.streamFailures = 0;
    this.unreachable = 0;
    this.snapshot = null; // while a full snapshot arrives: the held job ids it has not sent
    this.state = null;
    this.closed = false;
    this.aborter = new AbortController();
    this.onOnline = () => {
      if (this.timer) {
        clearTimeout(this.timer);
        this.timer = 0;
        this.attempts = 0;
        this.reconnect();
      }
    };
  }

  start() {
    globalThis.addEventListener?.('online', this.onOnline);
    this.connect();
    const watch = this;
    return {
      close: () => this.close(),
      get state() {
        return watch.state;
      },
      get transport() {
        return watch.transport;
      },
    };
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.aborter.abort();
    this.drop();
    globalThis.removeEventListener?.('online', this.onOnline);
  }

  // Connection lifecycle --------------------------------------------------

  connect() {
    if (this.closed) return;
    if (!this.attempts) this.setState('connecting');
    const conn = { closed: false, live: false, liveAt: 0, stable: 0, close() {} };
    this.conn = conn;
    this[this.transport](conn);
  }

  drop() {
    const conn = this.conn;
    this.conn = null;
    if (conn && !conn.closed) {
      conn.closed = true;
      clearTimeout(conn.stable);
      conn.close();
    }
  }

  opened(conn) {
    if (conn.closed || conn.live) return;
    conn.live = true;
    conn.liveAt = Date.now();
    conn.stable = setTimeout(() => {
      this.streamFailures = 0;
    }, STABLE_MS);
    this.attempts = 0;
    this.unreachable = 0;
    this.setState('live');
  }

  /** The connection ended or never started; `down` when the server could not be reached. */
  failed(conn, down = false) {
    if (conn.closed || this.closed) return;
    this.drop();
    if (this.snapshot) {
      // Interrupted mid-snapshot: ask for a whole one next time.
      this.snapshot = null;
      this.cursor = null;
    }
    // A stream that never went live, or died soon after, is a failure of streaming.
    if (this.transport !== 'poll' && !(conn.live && Date.now() - conn.liveAt >= STABLE_MS)) {
      this.streamFailures += 1;
    }
    if (down) this.unreachable += 1;
    this.retry();
  }

  retry() {
    this.attempts += 1;
    const offline = globalThis.navigator?.onLine === false || this.unreachable >= OFFLINE_AFTER;
    this.setState(offline ? 'offline' : 'reconnecting');
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (this.attempts - 1));
    const delay = ceiling / 2 + (Math.random() * ceiling) / 2; // "equal jitter"
    this.timer = setTimeout(() => {
      this.timer = 0;
      this.reconnect();
    }, delay);
  }

  async reconnect() {
    if (this.closed) return;
    if (this.transport === 'poll') return this.connect(); // a poll is its own probe
    // Ask the server before streaming again: while it is down that costs one request
    // per attempt, and a server that answers while its stream keeps failing is the
    // cue to fall back to polling.
    const probe = await this.probe();
    if (this.closed) return;
    if (probe === 'down') {
      this.unreachable += 1;
      return this.retry();
    }
    this.unreachable = 0;
    if (probe === 'gone') {
      this.call('onRemoved', this.jobId);
      return this.close();
    }
    if (this.o.fallback !== false && this.streamFailures >= FALLBACK_AFTER) {
      this.transport = 'poll';
      this.streamFailures = 0;
    }
    this.connect();
  }

  /**
   * 'up', 'down' (no answer), 'denied' (401/403: the watch is closed now), or for one
   * job 'gone' (404/410).
   */
  async probe() {
    const one = this.jobId !== null;
    const url = one ? this.jobUrl() : this.url('/api/jobs', { limit: 1, ...this.filters() });
    let response;
    try {
      response = await fetch(url, { cache: 'no-store', signal: this.aborter.signal });
    } catch {
      return 'down';
    }
    if (await this.refused(response)) return 'denied';
    if (one && (response.status === 404 || response.status === 410)) return 'gone';
    if (one && response.ok) this.deliver(await response.json().catch(() => null));
    else response.body?.cancel().catch(() => {});
    return 'up';
  }

  setState(state, problem) {
    const key = `${state}/${this.transport}`;
    if (key === this.stateKey) return;
    this.stateKey = key;
    this.state = state;
    const change = { state, transport: this.transport };
    this.call('onState', problem ? { ...change, problem } : change);
  }

  /**
   * A 401 or 403 ends the watch: the same credential would be refused again.
   * Resolves true when `response` was one (the watch is then closed).
   */
  async refused(response) {
    if (response.status !== 401 && response.status !== 403) return false;
    const body = await response.json().catch(() => null);
    if (this.closed) return true;
    const { status, statusText } = response;
    const problem = { title: statusText, ...(body && typeof body === 'object' ? body : {}), status };
    this.setState(status === 401 ? 'unauthorized' : 'forbidden', problem);
    this.close();
    return true;
  }

  // What arrives -----------------------------------------------------------

  deliver(job) {
    if (this.closed || !job || typeof job.jobId !== 'string') return;
    if (this.jobId !== null && job.jobId !== this.jobId) return;
    this.snapshot?.delete(job.jobId);
    const known = this.versions.get(job.jobId);
    if (known === undefined || !(job.version <= known)) {
      this.versions.set(job.jobId, job.version);
      this.call('onJob', job);
    }
    if (this.jobId !== null && TERMINAL.has(job.status)) this.close();
  }

  removed(jobId) {
    if (this.closed || typeof jobId !== 'string') return;
    this.snapshot?.delete(jobId);
    this.versions.delete(jobId);
    this.call('onRemoved', jobId);
  }

  /** The server could not resume: a full snapshot follows. */
  reset() {
    this.cursor = null; // the server's cursor is void: a reconnect starts afresh
    this.call('onReset');
    this.beginSnapshot();
  }

  /** A full snapshot follows: whatever we hold that it does not re-send is gone. */
  beginSnapshot() {
    if (this.jobId !== null || !this.versions.size) return;
    this.snapshot = new Set(this.versions.keys());
  }

  /** The server marked the snapshot's end (`synced`): what follows is live. */
  synced(cursor) {
    if (this.jobId === null && cursor) this.cursor = cursor;
    const unconfirmed = this.snapshot;
    this.snapshot = null;
    for (const jobId of unconfirmed ?? []) this.removed(jobId);
  }

  call(name, ...args) {
    try {
      this.o[name]?.(...args);
    } catch (error) {
      // A bug in a callback must not break the connection: report it and go on.
      if (globalThis.reportError) globalThis.reportError(error);
      else setTimeout(() => { throw error; });
    }
  }

  // Transports -----------------------------------------------------------------

  sse(conn) {
    const one = this.jobId !== null;
    const last = one ? this.versions.get(this.jobId) : this.cursor;
    const path = one ? `/api/jobs/${encodeURIComponent(this.jobId)}/events` : '/api/jobs/events';
    const source = new EventSource(
      this.url(path, { ...(one ? {} : this.filters()), lastEventId: last }),
    );
    conn.close = () => source.close();
    const on = (type, handle) =>
      source.addEventListener(type, (event) => {
        if (!conn.closed) handle(event);
      });
    on('open', () => {
      if (last == null) this.beginSnapshot();
      this.opened(conn);
    });
    on('job', (event) => {
      if (!one && event.lastEventId) this.cursor = event.lastEventId;
      this.deliver(parse(event.data));
    });
    on('removed', (event) => {
      if (event.lastEventId) this.cursor = event.lastEventId;
      this.removed(parse(event.data)?.jobId);
    });
    on('reset', () => this.reset());
    on('synced', (event) => this.synced(event.lastEventId));
    // EventSource would retry by itself at a fixed pace; we close it and back off instead.
    on('error', () => this.failed(conn));
  }

  ws(conn) {
    const one = this.jobId !== null;
    const since = one ? this.versions.get(this.jobId) : this.cursor;
    const url = new URL(this.url('/api/jobs/ws', { batch: 1 }));
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(url.href);
    let heard = Date.now();
    const pinger = setInterval(() => {
      // uvicorn answers protocol pings; this notices a connection that died silently.
      if (Date.now() - heard > 2.5 * WS_PING_MS) return this.failed(conn);
      if (socket.readyState === WebSocket.OPEN) socket.send('{"type":"ping"}');
    }, WS_PING_MS);
    conn.close = () => {
      clearInterval(pinger);
      socket.close();
    };
    socket.addEventListener('open', () => {
      if (conn.closed) return;
      const frame = one
        ? { type: 'subscribe', jobId: this.jobId }
        : { type: 'subscribe', all: true, ...this.filters() };
      if (since != null) frame.since = since;
      socket.send(JSON.stringify(frame));
    });
    const handle = (frame) => {
      if (frame.type === 'subscribed') {
        if (frame.reset) this.reset();
        else if (since == null) this.beginSnapshot();
        this.opened(conn);
      } else if (frame.type === 'job') {
        if (!one && frame.cursor) this.cursor = frame.cursor;
        this.deliver(frame.job);
      } else if (frame.type === 'removed') {
        if (frame.cursor) this.cursor = frame.cursor;
        this.removed(frame.jobId);
      } else if (frame.type === 'synced') {
        this.synced(frame.cursor);
      } else if (frame.type === 'error' && (frame.jobId !== undefined || frame.all)) {
        // Our subscription was refused (an unknown job, the backend down, too many
        // snapshots): the probe before the next attempt tells which; `code` says it.
        this.failed(conn);
      }
    };
    socket.addEventListener('message', (event) => {
      heard = Date.now();
      const frame = parse(event.data);
      if (!frame) return;
      // With ?batch=1 what was pending on the server arrives as one frame.
      for (const message of frame.type === 'batch' ? frame.messages : [frame]) {
        if (conn.closed) return;
        handle(message);
      }
    });
    socket.addEventListener('close', () => this.failed(conn));
  }

  poll(conn) {
    const aborter = new AbortController();
    conn.close = () => aborter.abort();
    const run = this.jobId !== null ? this.pollJob : this.pollAll;
    run.call(this, conn, aborter.signal).catch((error) => {
      if (!conn.closed) this.failed(conn, error instanceof TypeError);
    });
  }

  async pollJob(conn, signal) {
    while (!conn.closed) {
      const version = this.versions.get(this.jobId);
      const waiting = version == null ? {} : { waitForVersion: version, timeout: LONG_POLL_S };
      const headers = version == null ? {} : { 'If-None-Match': `"${version}"` };
      const response = await fetch(this.jobUrl(waiting), { cache: 'no-store', signal, headers });
      if (conn.closed || (await this.refused(response))) return;
      if (response.status === 404 || response.status === 410) {
        this.call('onRemoved', this.jobId);
        return this.close();
      }
      if (response.status !== 304 && !response.ok) throw new Error(`HTTP ${response.status}`);
      this.opened(conn);
      if (response.ok) this.deliver(await response.json());
    }
  }

  async pollAll(conn, signal) {
    const filtered = Boolean(this.o.status);
    while (!conn.closed) {
      const jobs = [];
      let cursor;
      for (let page = 0; page < 20; page += 1) {
        const params = { limit: 1000, ...this.filters(), cursor };
        const response = await fetch(this.url('/api/jobs', params), { cache: 'no-store', signal });
        if (await this.refused(response)) return;
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const body = await response.json();
        jobs.push(...body.jobs);
        cursor = body.nextCursor;
        if (!cursor) break;
      }
      if (conn.closed) return;
      this.opened(conn);
      const listed = new Set();
      for (const job of jobs.reverse()) {
        listed.add(job.jobId);
        this.deliver(job);
      }
      for (const jobId of [...this.versions.keys()]) {
        if (listed.has(jobId)) continue;
        // Gone from the list: cleaned up, or (with a status filter) moved out of it.
        const response = filtered
          ? await fetch(this.jobUrl({}, jobId), { cache: 'no-store', signal })
          : null;
        if (response?.ok) {
          this.deliver(await response.json());
          this.versions.delete(jobId);
        } else if (!response || response.status === 404 || response.status === 410) {
          this.removed(jobId);
        }
      }
      await sleep(this.o.pollInterval ?? 1000, signal);
    }
  }

  // URLs -----------------------------------------------------------------------

  filters() {
    return { jobType: this.o.jobType, status: this.o.status };
  }

  jobUrl(params = {}, jobId = this.jobId) {
    return this.url(`/api/jobs/${encodeURIComponent(jobId)}`, params);
  }

  url(path, params = {}) {
    const url = new URL(this.base.pathname.replace(/\/$/, '') + path, this.base);
    for (const [name, value] of Object.entries(params)) {
      if (value != null && value !== '') url.searchParams.set(name, value);
    }
    if (this.o.token) url.searchParams.set('token', this.o.token);
    return url.href;
  }
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}
