/**
 * jobcast — live job status for browsers and Node. One ES module, no dependencies.
 *
 * @example
 * import { watchJob, watchJobs, createJobStore } from 'jobcast'; // a page: '/static/jobcast.js'
 *
 * // One job, until it completes or fails (then the watch ends by itself):
 * const one = watchJob(jobId, {
 *   onJob: (job) => render(job),              // the full job, on every change
 *   onState: ({ state, transport }) => {},    // 'connecting' | 'live' | 'reconnecting' | 'offline'
 *                                             // | 'paused' | 'unauthorized' | 'forbidden'
 *   onRemoved: (jobId) => {},                 // cleaned up or deleted (or never existed): ends
 * });
 *
 * // Its output too (LLM tokens, log lines: what its worker appends), each chunk once, in order:
 * watchJob(jobId, {
 *   output: true,                             // implied by onOutput
 *   onOutput: (chunks) => chunks.forEach(({ offset, data, kind }) => show(data)),
 *   onJob: (job) => render(job),              // after the chunks appended before that change
 * });
 *
 * // Every job, or those matching jobType / status:
 * const all = watchJobs({
 *   onJob: (job) => upsert(job),
 *   onRemoved: (jobId) => drop(jobId),
 *   onReset: () => {},        // optional: the server could not resume (it restarted, say)
 *   onSynced: () => {},       // optional: what came so far is the server's whole state
 *   jobType: 'file_processing',
 *   transport: 'ws',          // 'sse' (default) | 'ws' | 'poll'
 *   baseUrl: 'https://jobs.example.com',   // default: this page's origin (required in Node)
 *   token: '…',               // optional: a read token, sent as ?token= on every request
 *   getToken: async () => '…',             // or: asked for one on every (re)connect
 *   pauseWhenHidden: true,    // close the stream while the tab is hidden, resume when shown
 *                             // (a number: only once hidden that many ms, for quick switches)
 * });
 * all.close();
 *
 * // The same, as a store for UI frameworks (React's useSyncExternalStore, Svelte, Vue):
 * const store = createJobStore({ jobType: 'llm_agent' });
 * const unsubscribe = store.subscribe(({ jobs, state }) => {}); // now, and on every change
 * // One job and the newest 200 chunks of its output (`outputOffset`: how many came in all):
 * createJobStore({ jobId, output: true, keepOutput: 200 }).subscribe(({ job, output }) => {});
 *
 * What it does for you:
 * - Resumes. After a dropped connection it reconnects with exponential backoff and
 *   jitter and asks for what changed since its last event (the SSE `Last-Event-ID`,
 *   sent as `?lastEventId=`; the WebSocket `since`), so nothing is missed or repeated.
 *   A 429 or 503 with `Retry-After`, to a poll or to the request made before streaming
 *   again, is waited out.
 * - Ends up exactly at the server's state. When the server cannot resume (`reset`,
 *   e.g. after a restart) it sends a full snapshot; jobs you were given that are not
 *   in it are reported through `onRemoved` once the server marks the snapshot's end
 *   (`synced`).
 * - Falls back to polling (`GET /api/jobs`, long-poll for one job) when a stream keeps
 *   failing while the server itself answers: a proxy that breaks streaming, say.
 *   `fallback: false` turns that off. `pollInterval` (ms, default 1000) paces it. After
 *   `restreamAfter` ms of it (default five minutes) the stream is tried again.
 * - Delivers each job version once, in order; callbacks always get the full job.
 * - Delivers each output chunk once, in order, none missing, across reconnects and a fall
 *   back to polling; the chunks appended before a change of the job come before that
 *   change's `onJob`, and all of them before its final state.
 * - Stops when the server refuses the credential. A 401 (no token, or one that is
 *   invalid or expired) ends the watch in state 'unauthorized', a 403 (a token that
 *   does not cover what is watched) in 'forbidden': retrying with the same token
 *   cannot help. `onState` then also gets `problem`, the server's problem+json
 *   (`status`, `title`, `detail`): `({ state, transport, problem }) => {}`.
 *   With `getToken`, a 401 first asks it once more: a different token is tried at once.
 * - Runs in Node too: pass `baseUrl`, and for SSE an `EventSource` (the `eventsource`
 *   package), for WebSocket on Node 20 a `WebSocket` (the `ws` package's; Node 22 has
 *   one). Polling needs nothing but `fetch`.
 */

const TRANSPORTS = ['sse', 'ws', 'poll'];
const TERMINAL = new Set(['completed', 'error']);
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30_000;
const RETRY_AFTER_CAP_MS = 300_000; // a longer Retry-After is taken as this
const FALLBACK_AFTER = 3; // stream failures in a row, the server answering, before polling
const RESTREAM_AFTER_MS = 5 * 60_000; // polling in place of a stream tries it again after this
const STABLE_MS = 5_000; // a stream that lived this long was not a failure of streaming
const OFFLINE_AFTER = 4; // unreachable attempts in a row before 'offline'
const LONG_POLL_S = 25;
const WS_PING_MS = 20_000;
const PING_SLACK = 2.5; // an SSE stream silent for this many of its heartbeats is dead
const WATCH_EVERY_MAX_MS = 60_000; // how often, at most, that silence is looked at
const ANSWER_WITHIN_MS = 10_000; // a request unanswered this long has no answer coming
const EXPIRY_SLACK_MS = 5_000; // a stream ending this close to its token's expiry ended for it
const OUTPUT_PAGE = 1_000; // chunks per GET of a job's output (the server's most)
const KEEP_OUTPUT = 1_000; // chunks a store keeps by default

/**
 * Watch one job until it reaches `completed` or `error`, or is removed. With `output: true`
 * (implied by `onOutput`) its output too: `onOutput(chunks)` gets each chunk
 * (`{offset, data, kind?}`) once, in order, and the handle's `outputOffset` is how many
 * chunks it delivered.
 * @param {string} jobId
 * @param {object} [options] onJob, onOutput, onState, onRemoved, onSynced, output, transport,
 *   baseUrl, token, getToken, fallback, pollInterval, restreamAfter, pauseWhenHidden,
 *   EventSource, WebSocket
 * @returns {{close(): void, readonly state: string, readonly transport: string,
 *   readonly closed: boolean, readonly outputOffset: number}}
 */
export function watchJob(jobId, options = {}) {
  return new Watch({ ...options, jobId: jobIdOf(jobId) }).start();
}

/** A job id as given (a number is taken as its digits); anything else is a mistake to say. */
function jobIdOf(jobId) {
  const id = typeof jobId === 'number' ? String(jobId) : jobId;
  if (typeof id !== 'string' || id === '') {
    throw new TypeError(`a job id is a non-empty string, not ${JSON.stringify(jobId) ?? jobId}`);
  }
  return id;
}

/**
 * Watch every job (or those matching `jobType`, `status` and `owner`) until closed.
 * @param {object} [options] onJob, onRemoved, onReset, onState, onSynced, jobType, status,
 *   owner, transport, baseUrl, token, getToken, fallback, pollInterval, restreamAfter,
 *   pauseWhenHidden, EventSource, WebSocket
 * @returns {{close(): void, readonly state: string, readonly transport: string,
 *   readonly closed: boolean, readonly outputOffset: number}}
 */
export function watchJobs(options = {}) {
  return new Watch({ ...options, jobId: null }).start();
}

/** Whether a job's status is final (`completed` or `error`). */
export const isTerminal = (job) => TERMINAL.has(job?.status);

/**
 * A store of one job (`jobId`) or of every job (optionally `jobType`, `status`), for UI
 * frameworks. It connects on the first `subscribe`, pauses once nothing is subscribed
 * (and resumes from where it was on the next), and ends with `close()`.
 *
 * `getSnapshot()` returns a frozen `{jobs, job, state, transport, problem, synced, closed,
 * output, outputOffset}` that is replaced, never changed, and only when something in it
 * changed: `jobs` newest first, `job` the one job of a one-job store; with `output: true`
 * (one job only) `output` holds the newest `keepOutput` chunks (default 1000) and
 * `outputOffset` how many arrived in all. `subscribe(listener)` calls `listener(snapshot)`
 * at once and after every change, and returns the function that unsubscribes.
 * @param {object} [options] jobId, jobType, status, output, keepOutput, and the options of
 *   watchJobs but callbacks
 * @returns {{subscribe(listener: Function): () => void, getSnapshot(): object, close(): void}}
 */
export function createJobStore(options = {}) {
  const store = new JobStore(options);
  return Object.freeze({
    subscribe: (listener) => store.subscribe(listener),
    getSnapshot: () => store.snapshot,
    close: () => store.close(),
  });
}

class Watch {
  /** `ended` (for the store) is called once, when the watch ends for whatever reason. */
  constructor(options, ended) {
    this.o = options;
    this.ended = ended;
    this.jobId = options.jobId;
    this.transport = TRANSPORTS.includes(options.transport) ? options.transport : 'sse';
    this.base = baseUrl(options.baseUrl);
    this.EventSource = options.EventSource ?? globalThis.EventSource;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof globalThis.fetch !== 'function') throw new TypeError('jobcast needs fetch');
    if (this.transport === 'sse' && typeof this.EventSource !== 'function') {
      throw new TypeError(
        "jobcast: no EventSource here: pass options.EventSource (in Node, the 'eventsource' " +
          "package's), or use transport 'ws' or 'poll'",
      );
    }
    if (this.transport === 'ws' && typeof this.WebSocket !== 'function') {
      throw new TypeError(
        "jobcast: no WebSocket here: pass options.WebSocket (on Node 20, the 'ws' package's; " +
          "Node 22 has one), or use transport 'sse' or 'poll'",
      );
    }
    this.versions = new Map(); // jobId → the version last delivered
    // One job's output: on when asked for (`output`, or an `onOutput` to call).
    this.output = this.jobId !== null && (options.output ?? typeof options.onOutput === 'function');
    this.outputOffset = 0; // output chunks delivered: the offset of the next one
    this.ending = null; // the final job, held back until the output before it has arrived
    this.cursor = null; // all-jobs feed position of the last event
    this.conn = null; // the open connection: {close(), live, liveAt, token, closed}
    this.timer = 0;
    this.attempts = 0; // failed attempts since the last live connection
    this.streamFailures = 0;
    this.streamed = this.transport; // the transport asked for: tried again after a fallback
    this.restreamAt = 0; // when polling in place of it tries it again (0: not polling so)
    this.unreachable = 0;
    this.notBefore = 0; // no attempt before this time (ms since the epoch): a Retry-After
    this.hideTimer = 0; // pauseWhenHidden's grace: the pause once the page stays hidden
    this.snapshot = null; // while a full snapshot arrives: the held job ids it has not sent
    this.state = null;
    this.closed = false;
    this.generation = 0; // bumped to forget whatever is in flight (a pause, a close)
    this.token = options.token || undefined; // the credential of the current attempt
    this.renewed = undefined; // what getToken gave after a 401: the next attempt's token
    this.renewing = false; // getToken was asked after a 401: another one ends the watch
    this.handingOver = false; // the next attempt replaces a connection its token ended
    this.holds = new Set(); // why the watch is paused: 'hidden', 'idle' (a store unwatched)
    this.listening = false;
    this.aborter = new AbortController();
    this.onOnline = () => {
      // Back online: try now, unless the server asked for a wait (Retry-After) not yet over.
      if (this.timer && Date.now() >= this.notBefore) {
        clearTimeout(this.timer);
        this.timer = 0;
        this.attempts = 0;
        this.open(true);
      }
    };
    this.onOffline = () => {
      // The browser lost its network: its connection may linger, silent, until the
      // watchdog gives up on it. Said now, and tried again once back online.
      if (this.closed || this.holds.size || !this.conn) return;
      this.letGo();
      this.retry();
    };
    this.onVisibility = () => {
      clearTimeout(this.hideTimer);
      this.hideTimer = 0;
      if (!hidden()) return this.release('hidden');
      const grace = this.o.pauseWhenHidden === true ? 0 : Number(this.o.pauseWhenHidden) || 0;
      if (grace <= 0) return this.hold('hidden');
      this.hideTimer = setTimeout(() => {
        this.hideTimer = 0;
        this.hold('hidden');
      }, grace);
    };
  }

  start() {
    this.listen(true);
    if (this.o.pauseWhenHidden && hidden()) this.hold('hidden');
    else this.open(false);
    const watch = this;
    return {
      close: () => this.close(),
      get state() {
        return watch.state;
      },
      get transport() {
        return watch.transport;
      },
      get closed() {
        return watch.closed;
      },
      get outputOffset() {
        return watch.outputOffset;
      },
    };
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.generation += 1;
    clearTimeout(this.timer);
    clearTimeout(this.hideTimer);
    this.aborter.abort();
    this.drop();
    this.listen(false);
    this.ended?.();
  }

  /** The watch ends by itself (its job ended, or is gone): said, then closed. */
  finish() {
    this.setState('closed');
    this.close();
  }

  /** Pause (close the connection, keep the position) until every reason is released. */
  hold(reason) {
    if (this.closed || this.holds.has(reason)) return;
    this.holds.add(reason);
    if (reason === 'idle') this.listen(false);
    if (this.holds.size > 1) return;
    this.letGo();
    this.setState('paused');
  }

  /** Forget whatever is in flight, and close the connection: the position is kept. */
  letGo() {
    this.generation += 1;
    this.handingOver = false;
    clearTimeout(this.timer);
    this.timer = 0;
    this.drop();
    this.interrupted();
  }

  release(reason) {
    if (this.closed || !this.holds.delete(reason)) return;
    if (reason === 'idle') {
      this.listen(true); // the visibility it did not hear while idle: as it is now
      if (this.o.pauseWhenHidden && hidden()) this.holds.add('hidden');
      else this.holds.delete('hidden');
    }
    if (this.holds.size) return;
    this.attempts = 0;
    this.unreachable = 0;
    const wait = this.notBefore - Date.now(); // a Retry-After outlasts a pause
    if (wait <= 0) return this.open(false);
    this.setState('reconnecting');
    this.later(wait);
  }

  /** The next attempt, in `delay` ms (asking the server first, unless `probeFirst` is false). */
  later(delay, probeFirst = true) {
    if (this.closed || this.holds.size) return; // closed or paused from the onState just called
    this.timer = setTimeout(() => {
      this.timer = 0;
      this.open(probeFirst);
    }, delay);
  }

  listen(on) {
    if (on === this.listening || (on && this.closed)) return;
    this.listening = on;
    const method = on ? 'addEventListener' : 'removeEventListener';
    if (!on) clearTimeout(this.hideTimer);
    globalThis[method]?.('online', this.onOnline);
    globalThis[method]?.('offline', this.onOffline);
    if (this.o.pauseWhenHidden)
      globalThis.document?.[method]?.('visibilitychange', this.onVisibility);
  }

  // Connection lifecycle --------------------------------------------------

  /** One attempt: the credential, a probe first after a failure, then the transport. */
  open(probeFirst) {
    this.attempt(probeFirst).catch(report); // a bug of ours: said, never an unhandled rejection
  }

  async attempt(probeFirst) {
    if (this.closed || this.holds.size) return;
    const generation = ++this.generation;
    const handover = this.handingOver;
    this.handingOver = false;
    if (!this.attempts && !handover) this.setState('connecting');
    let token;
    try {
      token = await this.credential();
    } catch (error) {
      if (generation !== this.generation) return;
      report(error); // getToken failed: try again later, as for a network error
      return this.retry();
    }
    if (generation !== this.generation) return;
    this.token = token;
    if (probeFirst && this.transport !== 'poll') {
      // Ask the server before streaming again: while it is down that costs one request
      // per attempt, and a server that answers while its stream keeps failing is the
      // cue to fall back to polling. (A poll is its own probe.)
      const probe = await this.probe(generation);
      if (generation !== this.generation) return;
      if (probe === 'down') {
        this.unreachable += 1;
        return this.retry();
      }
      if (probe === 'stop') return;
      if (probe === 'renew') return this.attempt(true);
      if (probe === 'busy') return this.retry();
      this.unreachable = 0;
      if (probe === 'gone') return this.gone();
      if (this.o.fallback !== false && this.streamFailures >= FALLBACK_AFTER) {
        this.transport = 'poll';
        this.streamFailures = 0;
        // Polling keeps no feed position: the stream, tried again, starts from a snapshot.
        this.cursor = null;
        const after = this.o.restreamAfter ?? RESTREAM_AFTER_MS;
        this.restreamAt = after > 0 ? Date.now() + after : 0;
      }
    }
    // Retrying over another transport than the last attempt's (polling, or streaming again)
    // is said before the attempt, not only once it is live.
    if (this.attempts) this.setState(this.state);
    if (generation !== this.generation) return; // closed or paused from onState
    const conn = { closed: false, live: false, liveAt: 0, stable: 0, token, generation };
    conn.close = () => {};
    this.conn = conn;
    try {
      this[this.transport](conn);
    } catch (error) {
      report(error); // a constructor passed in that refused the URL, say
      this.failed(conn);
    }
  }

  /** The read token for this attempt: after a 401 the renewed one, else getToken's or token. */
  async credential() {
    if (this.renewed !== undefined) {
      const renewed = this.renewed;
      this.renewed = undefined;
      return renewed;
    }
    return this.o.getToken ? tokenOf(await this.o.getToken()) : tokenOf(this.o.token);
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
    this.notBefore = 0;
    this.attempts = 0;
    this.unreachable = 0;
    this.renewing = false;
    this.setState('live');
  }

  /** The connection ended or never started; `down` when the server could not be reached. */
  failed(conn, down = false) {
    if (conn.closed || this.closed) return;
    this.drop();
    this.interrupted();
    // A stream that never went live, or died soon after, is a failure of streaming;
    // one that ended with its token (the server ends those) is not.
    const expired = conn.expired || expiresBefore(conn.token, Date.now() + EXPIRY_SLACK_MS);
    const lasted = conn.live && Date.now() - conn.liveAt >= STABLE_MS;
    if (this.transport !== 'poll' && !expired && !lasted) this.streamFailures += 1;
    if (down) this.unreachable += 1;
    if (expired && conn.live && !down && !this.attempts) return this.handOver();
    this.retry();
  }

  /**
   * A live connection ended with its token, as the server ends them: no outage, so the
   * state stays as it is while the next connection, with a fresh token, opens at once.
   */
  handOver() {
    this.handingOver = true;
    this.later(Math.max(0, this.notBefore - Date.now()), false);
  }

  /** A connection ended mid-snapshot: ask for a whole one next time. */
  interrupted() {
    if (this.snapshot) {
      this.snapshot = null;
      this.cursor = null;
    }
  }

  retry() {
    this.attempts += 1;
    const offline = globalThis.navigator?.onLine === false || this.unreachable >= OFFLINE_AFTER;
    this.setState(offline ? 'offline' : 'reconnecting');
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (this.attempts - 1));
    const jittered = ceiling / 2 + (Math.random() * ceiling) / 2; // "equal jitter"
    this.later(Math.max(jittered, this.notBefore - Date.now()));
  }

  /**
   * 'up', 'down' (no answer), 'busy' (429 or 503 with Retry-After), 'stop' (refused: the
   * watch is closed now), 'renew' (refused, getToken gave another token), or for one job
   * 'gone' (its 404, or 410).
   */
  async probe(generation) {
    const signal = this.aborter.signal;
    const one = this.jobId !== null;
    // All jobs: HEAD on the stream answers what opening it would (a 429 past the
    // server's snapshot budget above all, which EventSource and WebSocket hide), and
    // spends none of that budget.
    const url = one ? this.jobUrl() : this.url('/api/jobs/events', this.filters());
    const method = one ? 'GET' : 'HEAD';
    let response;
    try {
      response = await request(url, { method }, signal);
      if (method === 'HEAD' && (response.status === 401 || response.status === 403)) {
        // A HEAD has no body: the refusal's own words come from the list, refused alike.
        const list = this.url('/api/jobs', { limit: 1, ...this.filters() });
        response = await request(list, {}, signal);
      }
    } catch {
      return 'down';
    }
    const refusal = await this.refused(response, generation);
    if (refusal) return refusal;
    if (one && (await saysGone(response))) return 'gone';
    // A probe answered after a pause or a close says nothing about the next attempt.
    if (generation === this.generation && this.busy(response)) return 'busy';
    if (response.ok) this.renewing = false;
    if (one && response.ok) {
      const job = await response.json().catch(() => null);
      // A job whose output has gone on without us comes after that output, over the
      // stream that resumes it: delivered now, it would overtake its chunks.
      if (!this.output || !(outputSize(job) > this.outputOffset)) this.deliver(job);
    }
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
   * A 401 or 403 ends the watch: the same credential would be refused again. With
   * `getToken`, a 401 asks it once more first, and a different token is tried ('renew').
   * Resolves null when `response` was no refusal, 'stop' when the watch is done with it.
   */
  async refused(response, generation) {
    if (response.status !== 401 && response.status !== 403) return null;
    const body = await response.json().catch(() => null);
    if (this.closed || generation !== this.generation) return 'stop';
    if (response.status === 401 && this.o.getToken && !this.renewing) {
      this.renewing = true;
      let token;
      try {
        token = tokenOf(await this.o.getToken());
      } catch (error) {
        report(error);
      }
      if (this.closed || generation !== this.generation) return 'stop';
      if (token !== undefined && token !== this.token) {
        this.renewed = token;
        return 'renew';
      }
    }
    // This credential read the job a moment ago: a 403 now is the server not saying
    // that the job no longer exists (it never tells an owner token which ids exist).
    if (response.status === 403 && this.jobId !== null && this.versions.has(this.jobId)) {
      this.gone();
      return 'stop';
    }
    const { status, statusText } = response;
    const problem = {
      title: statusText,
      ...(body && typeof body === 'object' ? body : {}),
      status,
    };
    this.setState(status === 401 ? 'unauthorized' : 'forbidden', problem);
    this.close();
    return 'stop';
  }

  // What arrives -----------------------------------------------------------

  deliver(job) {
    if (this.closed || !job || typeof job.jobId !== 'string') return;
    if (this.jobId !== null && job.jobId !== this.jobId) return;
    if (this.output && TERMINAL.has(job.status) && outputSize(job) > this.outputOffset) {
      // The final state comes last: it waits for the chunks that are still on their way.
      this.ending = job;
      return;
    }
    this.snapshot?.delete(job.jobId);
    const known = this.versions.get(job.jobId);
    // A one-job watch still open has delivered no end (it closes at one): an end at a
    // version it has seen is news, from a Redis that rolled back and issued it again.
    const end = this.jobId !== null && TERMINAL.has(job.status);
    if (known === undefined || !(job.version <= known) || end) {
      this.versions.set(job.jobId, job.version);
      this.call('onJob', job);
    }
    if (this.jobId !== null && TERMINAL.has(job.status)) this.finish();
  }

  /**
   * Output chunks, from a stream or a page of `GET …/output`: the ones not delivered yet go to
   * `onOutput`, in order. False when one is missing before them (the caller reconnects,
   * resuming from what was delivered).
   */
  received(chunks) {
    if (this.closed || !this.output || !Array.isArray(chunks)) return true;
    const fresh = [];
    let missing = false;
    for (const chunk of chunks) {
      if (!chunk || typeof chunk !== 'object' || !Number.isInteger(chunk.offset)) continue;
      const next = this.outputOffset + fresh.length;
      if (chunk.offset < next) continue; // had it already
      if (chunk.offset > next) {
        missing = true;
        break;
      }
      fresh.push(chunk);
    }
    if (fresh.length) {
      this.outputOffset += fresh.length;
      this.call('onOutput', fresh);
    }
    const ending = this.ending;
    if (ending && !(outputSize(ending) > this.outputOffset)) {
      this.ending = null;
      this.deliver(ending);
    }
    return !missing;
  }

  removed(jobId) {
    if (this.closed || typeof jobId !== 'string') return;
    if (this.jobId !== null && jobId !== this.jobId) return;
    this.snapshot?.delete(jobId);
    this.versions.delete(jobId);
    this.call('onRemoved', jobId);
    // A deleted job's stream ends after `removed`: reconnecting would only be told 410.
    if (this.jobId !== null) this.finish();
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
    if (this.closed) return;
    if (this.jobId === null && cursor) this.cursor = cursor;
    const unconfirmed = this.snapshot;
    this.snapshot = null;
    for (const jobId of unconfirmed ?? []) this.removed(jobId);
    this.call('onSynced');
  }

  call(name, ...args) {
    if (this.closed) return; // closed, even from a callback: nothing is called after
    try {
      this.o[name]?.(...args);
    } catch (error) {
      // A bug in a callback must not break the connection: report it and go on.
      report(error);
    }
  }

  // Transports -----------------------------------------------------------------

  sse(conn) {
    const one = this.jobId !== null;
    const version = this.versions.get(this.jobId);
    // With output the id is `<version>.<chunks held>`. Before any version has arrived there
    // is none to give: the output comes from 0 again, and what was delivered is skipped.
    let last = one ? version : this.cursor;
    if (this.output && version != null) last = `${version}.${this.outputOffset}`;
    const path = one ? `/api/jobs/${encodeURIComponent(this.jobId)}/events` : '/api/jobs/events';
    const source = new this.EventSource(
      this.url(path, {
        ...(one ? {} : this.filters()),
        output: this.output ? 1 : undefined,
        lastEventId: last,
        ping: 1,
      }),
    );
    const alive = watchdog(() => this.failed(conn));
    conn.close = () => {
      alive.stop();
      source.close();
    };
    const on = (type, handle) =>
      source.addEventListener(type, (event) => {
        alive.heard();
        if (!conn.closed) handle(event);
      });
    on('ping', (event) => alive.every(parse(event.data)?.every));
    // Not heard: the headers alone say nothing of heartbeats, and the first event (a
    // ping) must still come within the limit, or a stream held after them is never
    // watched.
    source.addEventListener('open', () => {
      if (conn.closed) return;
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
    on('output', (event) => {
      if (!this.received(parse(event.data)?.chunks)) this.failed(conn);
    });
    on('reset', () => this.reset());
    on('synced', (event) => this.synced(event.lastEventId));
    // EventSource would retry by itself at a fixed pace; we close it and back off instead.
    on('error', () => this.failed(conn));
  }

  ws(conn) {
    const one = this.jobId !== null;
    const since = one ? this.versions.get(this.jobId) : this.cursor;
    const sinceOffset = this.outputOffset;
    const url = new URL(this.url('/api/jobs/ws', { batch: 1 }));
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new this.WebSocket(url.href);
    // Until the socket opens, its upgrade must be answered as any request is.
    const alive = watchdog(() => this.failed(conn));
    // uvicorn answers protocol pings, which a WebSocket hides; the server answers these
    // frames, so a connection that died silently is noticed.
    const pinger = setInterval(() => {
      if (socket.readyState === 1) socket.send('{"type":"ping"}'); // 1: OPEN
    }, WS_PING_MS);
    conn.close = () => {
      alive.stop();
      clearInterval(pinger);
      socket.close();
    };
    socket.addEventListener('open', () => {
      if (conn.closed) return;
      alive.every(WS_PING_MS / 1000);
      alive.heard();
      const frame = one
        ? { type: 'subscribe', jobId: this.jobId }
        : { type: 'subscribe', all: true, ...this.filters() };
      if (since != null) frame.since = since;
      if (this.output) Object.assign(frame, { output: true, sinceOffset });
      socket.send(JSON.stringify(frame));
    });
    const handle = (frame) => {
      if (frame.type === 'subscribed') {
        if (frame.reset) this.reset();
        else if (since == null) this.beginSnapshot();
        this.opened(conn);
        if (one && frame.final) this.readEnd(conn).catch(report);
      } else if (frame.type === 'job') {
        if (!one && frame.cursor) this.cursor = frame.cursor;
        this.deliver(frame.job);
      } else if (frame.type === 'removed') {
        if (frame.cursor) this.cursor = frame.cursor;
        this.removed(frame.jobId);
      } else if (frame.type === 'output') {
        if (frame.jobId === this.jobId && !this.received(frame.chunks)) this.failed(conn);
      } else if (frame.type === 'synced') {
        this.synced(frame.cursor);
      } else if (frame.type === 'error' && (frame.jobId !== undefined || frame.all)) {
        // Our subscription was refused (an unknown job, the backend down, too many
        // snapshots): the probe before the next attempt tells which; `code` says it.
        this.failed(conn);
      }
    };
    socket.addEventListener('message', (event) => {
      alive.heard();
      const frame = parse(event.data);
      if (!frame) return;
      // With ?batch=1 what was pending on the server arrives as one frame.
      for (const message of frame.type === 'batch' ? frame.messages : [frame]) {
        if (conn.closed) return;
        handle(message);
      }
    });
    // Node's `ws` throws an 'error' nobody listens to; the 'close' that follows says it all.
    socket.addEventListener('error', () => {});
    socket.addEventListener('close', (event) => {
      if (event.code === 1008 && /expired/.test(event.reason ?? '')) conn.expired = true;
      this.failed(conn);
    });
  }

  poll(conn) {
    const aborter = new AbortController();
    conn.close = () => aborter.abort();
    const run = this.jobId === null ? this.pollAll : this.output ? this.pollOutput : this.pollJob;
    run.call(this, conn, aborter.signal).catch((error) => {
      // A network error, or no answer in time (an abort the watch did not make): unreachable.
      const unanswered = error instanceof TypeError || error?.name === 'AbortError';
      if (!conn.closed) this.failed(conn, unanswered);
    });
  }

  /** Handles a refused poll: 'stop' ends it, 'renew' starts again with the new token. */
  async pollRefused(conn, response) {
    const refusal = await this.refused(response, conn.generation);
    if (refusal === 'renew' && !conn.closed) {
      this.drop();
      this.handingOver = conn.live; // its token ran out: no outage to tell
      this.open(false);
    }
    return refusal !== null;
  }

  async pollJob(conn, signal) {
    let first = true;
    while (!conn.closed && !this.restreaming(conn)) {
      const version = this.versions.get(this.jobId);
      // The first ask answers at once, so the watch is live as soon as the server answers,
      // and with the job whatever its version: an end at a version seen is news too.
      const waiting =
        version == null || first ? {} : { waitForVersion: version, timeout: LONG_POLL_S };
      const headers = version == null || first ? {} : { 'If-None-Match': `"${version}"` };
      const response = await request(this.jobUrl(waiting), { headers }, signal, LONG_POLL_S);
      if (conn.closed || (await this.pollRefused(conn, response))) return;
      if (await saysGone(response)) return this.gone();
      if (response.status !== 304 && !response.ok) throw this.failure(response);
      const job = response.ok ? await response.json() : null;
      // Something else answered (a proxy's page, say): asked again at once, it would
      // answer the same, as fast as it can.
      if (response.ok && job?.jobId !== this.jobId) throw new Error('the answer was not the job');
      this.opened(conn);
      if (job) this.deliver(job);
      if (first && !conn.closed) this.call('onSynced');
      first = false;
    }
  }

  /**
   * One job and its output. A new chunk changes no version, so a long-poll would not hear it:
   * the job is asked for every `pollInterval`, and its output whenever the job's `outputSize`
   * says there is more than was delivered; the chunks up to that size come before the job,
   * as over a stream, and the final state after its last chunk.
   */
  async pollOutput(conn, signal) {
    let first = true;
    while (!conn.closed && !this.restreaming(conn)) {
      const response = await request(this.jobUrl(), {}, signal);
      if (conn.closed || (await this.pollRefused(conn, response))) return;
      if (await saysGone(response)) return this.gone();
      if (!response.ok) throw this.failure(response);
      const job = await response.json();
      this.opened(conn);
      const size = outputSize(job);
      while (!conn.closed && size > this.outputOffset) {
        const limit = Math.min(OUTPUT_PAGE, size - this.outputOffset);
        const url = this.url(`/api/jobs/${encodeURIComponent(this.jobId)}/output`, {
          after: this.outputOffset,
          limit,
        });
        const page = await request(url, {}, signal);
        if (conn.closed || (await this.pollRefused(conn, page))) return;
        if (await saysGone(page)) return this.gone();
        if (!page.ok) throw this.failure(page);
        const { chunks } = await page.json();
        if (conn.closed) return;
        if (!this.received(chunks)) throw new Error('a gap in the output');
        if (!chunks?.length) break; // the server has fewer than the job said: ask again later
      }
      if (conn.closed) return;
      this.deliver(job);
      if (first && !conn.closed) this.call('onSynced');
      first = false;
      if (!conn.closed) await sleep(this.o.pollInterval ?? 1000, signal);
    }
  }

  /** Whether the server asked to be left alone a while (429, 503 with Retry-After): noted. */
  busy(response) {
    const wait = retryAfterMs(response);
    if (wait > 0) this.notBefore = Date.now() + wait;
    return wait > 0;
  }

  /** The error a poll's failed answer makes; its Retry-After, if any, is noted. */
  failure(response) {
    this.busy(response);
    return new Error(`HTTP ${response.status}`);
  }

  /**
   * Polling in place of a failing stream: once `restreamAt` has come, the stream is tried
   * again (a proxy fixed, a burst of refusals over), and this poll ends; whether it did.
   */
  restreaming(conn) {
    if (!this.restreamAt || Date.now() < this.restreamAt || conn.closed) return false;
    this.transport = this.streamed;
    this.restreamAt = 0;
    this.drop();
    this.open(true);
    return true;
  }

  /**
   * The server holds that this watch has the job's end, and it delivered none (it closes at
   * one): a Redis rolled back ended the job at a version it saw. The job is read, and its
   * end delivered.
   */
  async readEnd(conn) {
    // The probe reads the job and delivers it (and says a refusal, or that it is gone).
    if ((await this.probe(conn.generation)) === 'gone') return this.gone();
    // Not ended by it: the server keeps no subscription for this socket, so nothing else
    // would come. Connected again, it is told the same, and asks again.
    if (!conn.closed && !this.closed) this.failed(conn);
  }

  /** One job is gone (the server's 404 for it, or 410): said, and the watch ends. */
  gone() {
    this.call('onRemoved', this.jobId);
    this.finish();
  }

  async pollAll(conn, signal) {
    const filtered = Boolean(this.o.status);
    let first = true;
    let pages = new Map(); // url → the last answer's { etag, body }: a page unchanged is a 304
    while (!conn.closed && !this.restreaming(conn)) {
      const jobs = [];
      const kept = pages;
      pages = new Map();
      let cursor;
      for (let page = 0; page < 20; page += 1) {
        const url = this.url('/api/jobs', { limit: 1000, ...this.filters(), cursor });
        const known = kept.get(url);
        const headers = known ? { 'If-None-Match': known.etag } : {};
        const response = await request(url, { headers }, signal);
        if (conn.closed || (await this.pollRefused(conn, response))) return;
        const same = response.status === 304 && known;
        if (!response.ok && !same) throw this.failure(response);
        const body = same ? known.body : await response.json();
        const etag = response.headers.get('etag');
        if (etag) pages.set(url, { etag, body });
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
          ? await request(this.jobUrl({}, jobId), {}, signal)
          : null;
        if (conn.closed) return;
        if (response?.ok) {
          this.deliver(await response.json());
          this.versions.delete(jobId);
        } else if (!response || response.status === 403 || (await saysGone(response))) {
          // A 403 for a job this credential listed: gone, and the server does not say so
          // to an owner token (it never tells which ids exist).
          this.removed(jobId);
        }
      }
      if (first) this.call('onSynced');
      first = false;
      await sleep(this.o.pollInterval ?? 1000, signal);
    }
  }

  // URLs -----------------------------------------------------------------------

  filters() {
    return { jobType: this.o.jobType, status: this.o.status, owner: this.o.owner };
  }

  jobUrl(params = {}, jobId = this.jobId) {
    return this.url(`/api/jobs/${encodeURIComponent(jobId)}`, params);
  }

  url(path, params = {}) {
    const url = new URL(this.base.pathname.replace(/\/$/, '') + path, this.base);
    for (const [name, value] of Object.entries(params)) {
      if (value != null && value !== '') url.searchParams.set(name, value);
    }
    if (this.token) url.searchParams.set('token', this.token);
    return url.href;
  }
}

/** The snapshots of createJobStore: a Watch whose callbacks fill a map of frozen jobs. */
class JobStore {
  constructor(options) {
    if (options.jobId != null) options = { ...options, jobId: jobIdOf(options.jobId) };
    const { onJob, onOutput, onRemoved, onReset, onState, onSynced, keepOutput, ...connection } =
      options;
    this.options = connection;
    this.one = options.jobId != null;
    this.jobs = new Map(); // jobId → frozen job
    this.output = []; // the newest `keep` chunks, frozen, oldest first
    this.keep = keepOutput ?? KEEP_OUTPUT;
    if (!(this.keep >= 0)) throw new TypeError('keepOutput must be a number, 0 or more');
    this.outputChanged = false;
    this.listeners = new Set(); // one entry per subscribe(), so one function may subscribe twice
    this.watch = null;
    this.idle = 0; // the timer that pauses the watch once nothing is subscribed
    this.queued = false; // a publish() is due (changes are gathered per microtask)
    this.added = false; // a job came or went since the last snapshot: sort again
    this.gathering = false; // a reset's snapshot is arriving: told once it is whole
    this.current = {
      state: 'connecting',
      transport: TRANSPORTS.includes(options.transport) ? options.transport : 'sse',
      problem: undefined,
      synced: false,
      closed: false,
      outputOffset: 0,
    };
    this.snapshot = Object.freeze({
      jobs: Object.freeze([]),
      job: undefined,
      output: Object.freeze([]),
      ...this.current,
    });
  }

  subscribe(listener) {
    if (typeof listener !== 'function') throw new TypeError('subscribe() needs a function');
    if (!this.watch && !this.current.closed) this.begin();
    const entry = { listener };
    this.listeners.add(entry);
    clearTimeout(this.idle);
    this.idle = 0;
    this.watch?.release('idle');
    this.tell(entry, this.snapshot);
    return () => {
      if (!this.listeners.delete(entry) || this.listeners.size || this.idle) return;
      // After a tick: React's StrictMode and re-renders unsubscribe and subscribe at once.
      this.idle = setTimeout(() => {
        this.idle = 0;
        if (!this.listeners.size) this.watch?.hold('idle');
      });
    };
  }

  /** Whether `job` is one the store's filter (`jobType`, `status`, `owner`) holds. */
  admits(job) {
    const { jobType, status, owner } = this.options;
    return (
      (!jobType || job.jobType === jobType) &&
      (!status || job.status === status) &&
      (!owner || job.owner === owner)
    );
  }

  begin() {
    const options = {
      ...this.options,
      jobId: this.one ? String(this.options.jobId) : null,
      output: this.options.output === true,
      onJob: (job) => {
        if (!this.one && !this.admits(job)) {
          // Its last event on leaving the filter (it was processing, it completed): gone.
          if (this.jobs.delete(job.jobId)) this.added = true;
          this.touch();
          return;
        }
        if (!this.jobs.has(job.jobId)) this.added = true;
        this.jobs.set(job.jobId, deepFreeze(job));
        if (this.one) this.current.synced = true;
        // A whole snapshot's jobs (the first, or one after a reset) are told together,
        // once it is whole (its synced): a stream brings them an event each, and a list
        // would re-render for every one, and show the old jobs beside the new.
        if (this.one || (this.current.synced && !this.gathering)) this.touch();
      },
      onReset: () => {
        this.gathering = true;
      },
      onOutput: (chunks) => {
        for (const chunk of chunks) this.output.push(deepFreeze(chunk));
        // Trimmed once it holds twice as many: each chunk is moved once, not on every push.
        const { output, keep } = this;
        if (output.length >= 2 * keep) output.splice(0, output.length - keep);
        this.current.outputOffset = chunks.at(-1).offset + 1;
        this.outputChanged = true;
        this.touch();
      },
      onRemoved: (jobId) => {
        if (this.jobs.delete(jobId)) this.added = true;
        if (this.one) this.current.synced = true;
        this.touch();
      },
      onState: ({ state, transport, problem }) => {
        Object.assign(this.current, { state, transport, problem });
        this.touch();
      },
      onSynced: () => {
        this.gathering = false;
        this.current.synced = true;
        this.touch();
      },
    };
    this.watch = new Watch(options, () => {
      this.current.closed = true;
      this.touch();
    });
    this.watch.start();
  }

  close() {
    clearTimeout(this.idle);
    this.idle = 0;
    this.current.closed = true;
    this.watch?.close();
    this.touch();
  }

  touch() {
    if (this.queued) return;
    this.queued = true;
    queueMicrotask(() => this.publish());
  }

  publish() {
    this.queued = false;
    const before = this.snapshot;
    let jobs = before.jobs;
    if (this.added) {
      this.added = false;
      jobs = [...this.jobs.values()].sort(newestFirst);
    } else {
      jobs = jobs.map((job) => this.jobs.get(job.jobId));
    }
    if (jobs.length === before.jobs.length && jobs.every((job, i) => job === before.jobs[i])) {
      jobs = before.jobs;
    } else {
      Object.freeze(jobs);
    }
    let output = before.output;
    if (this.outputChanged) {
      this.outputChanged = false;
      output = Object.freeze(this.keep ? this.output.slice(-this.keep) : []);
    }
    const { state, transport, problem, synced, closed, outputOffset } = this.current;
    const next = {
      jobs,
      job: this.one ? jobs[0] : undefined,
      output,
      state,
      transport,
      problem,
      synced,
      closed,
      outputOffset,
    };
    if (Object.keys(next).every((key) => next[key] === before[key])) return;
    this.snapshot = Object.freeze(next);
    for (const entry of [...this.listeners]) {
      if (this.listeners.has(entry)) this.tell(entry, this.snapshot);
    }
  }

  tell(entry, snapshot) {
    try {
      entry.listener(snapshot);
    } catch (error) {
      report(error); // one listener's bug must not keep the others from hearing
    }
  }
}

function baseUrl(given) {
  const here = globalThis.location?.href;
  if (given) return new URL(given, here);
  if (!here) throw new TypeError('jobcast: options.baseUrl is required outside a browser');
  return new URL(globalThis.location.origin);
}

/** A page reports it as an uncaught error would be; Node logs it, never crashing the process. */
function report(error) {
  if (globalThis.reportError) globalThis.reportError(error);
  else console.error(error);
}

function tokenOf(value) {
  return value ? String(value) : undefined;
}

/** Whether `token` is a JWT whose `exp` is before `when` (ms); false for anything else. */
function expiresBefore(token, when) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const exp = JSON.parse(atob(payload)).exp;
    return typeof exp === 'number' && exp * 1000 < when;
  } catch {
    return false;
  }
}

/** A 429's or 503's Retry-After (seconds, or a date) in ms, at most RETRY_AFTER_CAP_MS; else 0. */
function retryAfterMs(response) {
  if (response.status !== 429 && response.status !== 503) return 0;
  const value = response.headers.get('Retry-After')?.trim() ?? '';
  const ms = /^\d+$/.test(value) ? Number(value) * 1000 : Date.parse(value) - Date.now();
  return Number.isFinite(ms) ? Math.min(Math.max(ms, 0), RETRY_AFTER_CAP_MS) : 0;
}

function hidden() {
  return globalThis.document?.visibilityState === 'hidden';
}

/** The number of output chunks a job says it has (`outputSize`, absent while none). */
function outputSize(job) {
  return Number.isInteger(job?.outputSize) ? job.outputSize : 0;
}

function newestFirst(a, b) {
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt ? 1 : -1;
  return a.jobId < b.jobId ? 1 : -1;
}

function deepFreeze(value) {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/**
 * A connection's check on itself: `heard()` on everything that arrives, `every(seconds)`
 * once it is known how often something must (an SSE stream's heartbeats, asked for as
 * events with `?ping=1` since EventSource hides comments; a WebSocket's answers to its
 * pings). Until then it has ANSWER_WITHIN_MS for its first word, and one that says nothing
 * of its heartbeats is not watched after it; then PING_SLACK of those intervals. Past that
 * without a word the connection died silently (a proxy or a network gone quiet), and
 * `dead()` is called. Time is the monotonic clock's: a wall clock set forward or back
 * proves nothing.
 */
function watchdog(dead) {
  const now = () => globalThis.performance?.now() ?? Date.now();
  let heard = now();
  let limit = ANSWER_WITHIN_MS;
  let known = false; // how often something must come
  let timer = 0;
  const watch = (every) => {
    clearInterval(timer);
    timer = setInterval(
      () => {
        if (now() - heard <= limit) return;
        clearInterval(timer);
        dead();
      },
      Math.min(every, WATCH_EVERY_MAX_MS),
    );
  };
  watch(ANSWER_WITHIN_MS / 2);
  return {
    heard() {
      heard = now();
      if (!known) clearInterval(timer); // it said nothing of its heartbeats: not watched
    },
    every(seconds) {
      const wanted = seconds * 1000 * PING_SLACK;
      if (!(seconds > 0) || (known && limit === wanted)) return;
      known = true;
      limit = wanted;
      watch(limit / 5);
    },
    stop() {
      clearInterval(timer);
    },
  };
}

/**
 * A GET (or `init.method`) of `url`: its answer, body read, or a failure once the server
 * says nothing for ANSWER_WITHIN_MS (beyond the `waits` seconds a long-poll may hold it),
 * or when `signal` aborts. A silent path so fails the request rather than holding the
 * watch for ever, however slowly a large answer comes; and each request listens to
 * `signal` only while it runs (a watch's one signal would gather a listener per poll).
 * The answer has what the watch reads of one: status, ok, headers, json().
 */
async function request(url, init, signal, waits = 0) {
  if (signal.aborted) throw signal.reason;
  const controller = new AbortController();
  const abort = () => controller.abort();
  let timer = setTimeout(abort, ANSWER_WITHIN_MS + waits * 1000);
  const heard = () => {
    clearTimeout(timer);
    timer = setTimeout(abort, ANSWER_WITHIN_MS);
  };
  signal.addEventListener('abort', abort, { once: true });
  try {
    const response = await fetch(url, { ...init, cache: 'no-store', signal: controller.signal });
    heard();
    const reader = response.body?.getReader();
    const decoder = new TextDecoder();
    let text = '';
    for (let part = await reader?.read(); part && !part.done; part = await reader.read()) {
      heard();
      text += decoder.decode(part.value, { stream: true });
    }
    text += decoder.decode();
    const { status, statusText, ok, headers } = response;
    return { status, statusText, ok, headers, json: async () => JSON.parse(text) };
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', abort);
  }
}

/**
 * Whether an answer says the job is gone: a 410, or the server's own 404 for the job. A
 * 404 of something else (a proxy's, a wrong baseUrl's) is a failure, tried again.
 */
async function saysGone(response) {
  if (response.status === 410) return true;
  if (response.status !== 404) return false;
  const body = await response.json().catch(() => null);
  return typeof body?.type === 'string' && body.type.endsWith(':job-not-found');
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const abort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    // A poll sleeps on its watch's one signal: each sleep takes its listener off again.
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', abort);
      resolve();
    }, ms);
    signal.addEventListener('abort', abort, { once: true });
  });
}
