// What the Node tests share: the server pytest started (JOBCAST_URL), its job calls, a
// recorder of what a watch tells, and a TCP proxy that can cut or refuse connections.
//
// pytest (tests/js/test_node.py) runs each *.test.js file against a server of its own and
// sets: JOBCAST_URL, JOBCAST_API_KEY (protected servers), JOBCAST_CONTROL (POST /restart
// restarts the server and answers its new URL), JOBCAST_TEST_TIME_SCALE.

import assert from 'node:assert/strict';
import net from 'node:net';
import { EventSource } from 'eventsource';
import { watchJob } from 'jobcast';
import WebSocket from 'ws';

export const SERVER = process.env.JOBCAST_URL;
export const API_KEY = process.env.JOBCAST_API_KEY;
export const CONTROL = process.env.JOBCAST_CONTROL;
const SCALE = Number(process.env.JOBCAST_TEST_TIME_SCALE || 1);
if (!SERVER) throw new Error('run these through pytest (tests/js): JOBCAST_URL is not set');

export const TRANSPORTS = ['sse', 'ws', 'poll'];
/** What a Node 20 program passes for SSE and WebSocket. */
export const NODE = { EventSource, WebSocket };

/** A duration in the suite's time unit (ms). */
export const ms = (value) => value * SCALE;

export const sleep = (value) => new Promise((resolve) => setTimeout(resolve, value));

/** Resolves once `check()` (maybe async) is truthy, to its value; fails after `timeout` ms. */
export async function waitFor(check, what, timeout = ms(10_000)) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

export async function api(method, path, body, { base = SERVER, key = API_KEY } = {}) {
  const headers = { 'Content-Type': 'application/json' };
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(new URL(path, base), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

const created = new Set();

export async function createJob(body = {}, options) {
  const { jobId } = await api('POST', '/api/jobs', body, options);
  created.add(jobId);
  return jobId;
}

/**
 * Completes every job the file created that is still running: a long-poll the client
 * gave up waits on the server until its job changes (or its timeout), and one still
 * waiting when the server stops would fail the test with a traceback in its log.
 */
export async function settle(options) {
  for (const jobId of created) {
    await fetch(new URL(`/api/jobs/${jobId}/complete`, options?.base ?? SERVER), {
      method: 'POST',
      headers: API_KEY ? { Authorization: `Bearer ${API_KEY}` } : {},
    }).catch(() => {});
  }
  created.clear();
}
export const updateJob = (jobId, fields, options) =>
  api('PATCH', `/api/jobs/${jobId}`, fields, options);
export const completeJob = (jobId, body = {}, options) =>
  api('POST', `/api/jobs/${jobId}/complete`, body, options);
export const getJob = (jobId, options) => api('GET', `/api/jobs/${jobId}`, undefined, options);
export const cancelJob = (jobId, body = {}, options) =>
  api('POST', `/api/jobs/${jobId}/cancel`, body, options);
export const deleteJob = (jobId, options) =>
  api('DELETE', `/api/jobs/${jobId}`, undefined, options);
/** Appends chunks (`{data, kind?}`) to a job's output, as its worker would. */
export const appendOutput = (jobId, chunks, options) =>
  api('POST', `/api/jobs/${jobId}/output`, { chunks }, options);

/** A read token (`{owner}` or `{jobId}`) living `ttl` seconds. */
export const mintToken = async (scope, ttl) =>
  (await api('POST', '/api/tokens', ttl ? { ...scope, ttl } : scope)).token;

/** Asks pytest to restart the server; resolves to its new URL. */
export async function restartServer() {
  const response = await fetch(new URL('/restart', CONTROL), { method: 'POST' });
  const text = await response.text();
  assert.equal(response.status, 200, text);
  return JSON.parse(text).url;
}

/** Everything a watch tells, in order, and the options that make it tell us. */
export function recorder() {
  const seen = { jobs: [], removed: [], resets: 0, states: [], synced: 0 };
  seen.options = {
    onJob: (job) => seen.jobs.push(job),
    onRemoved: (jobId) => seen.removed.push(jobId),
    onReset: () => (seen.resets += 1),
    onState: (change) => seen.states.push(change),
    onSynced: () => (seen.synced += 1),
  };
  seen.versions = (jobId) =>
    seen.jobs.filter((job) => job.jobId === jobId).map((job) => job.version);
  seen.latest = (jobId) => seen.jobs.findLast((job) => job.jobId === jobId);
  seen.state = () => seen.states.at(-1)?.state;
  return seen;
}

/** Each version at most once, in order. */
export function assertIncreasing(versions, what = 'versions') {
  for (let i = 1; i < versions.length; i += 1) {
    assert.ok(versions[i] > versions[i - 1], `${what} not strictly increasing: ${versions}`);
  }
}

/** Pass on what `from` sends up to the end of its response's head, and nothing after. */
function passHead(from, to) {
  let head = Buffer.alloc(0);
  const reading = (chunk) => {
    head = Buffer.concat([head, chunk]);
    const end = head.indexOf('\r\n\r\n');
    if (end < 0) return;
    from.off('data', reading);
    to.write(head.subarray(0, end + 4));
  };
  from.on('data', reading);
}


/**
 * Pass what `from` sends on to `to`, `rate` bytes a second at most, in tenth-second slices;
 * once `from` has closed and all of it is passed on, `done()` (as a kernel delivers what
 * a socket closed with before its end).
 */
function paced(from, to, rate, done) {
  const slice = Math.max(1, Math.round(rate / 10));
  let queue = Buffer.alloc(0);
  let timer = null;
  let closed = false;
  const drip = () => {
    timer = null;
    if (to.destroyed) return;
    if (queue.length) {
      to.write(queue.subarray(0, slice));
      queue = queue.subarray(slice);
    }
    if (queue.length) timer = setTimeout(drip, 100);
    else if (closed) done();
  };
  from.on('data', (data) => {
    queue = Buffer.concat([queue, data]);
    if (!timer) drip();
  });
  from.on('error', () => {});
  from.on('close', () => {
    closed = true;
    if (!timer) drip();
  });
}

/**
 * A TCP proxy to `target` (a URL): `cut()` drops every open connection as a server or a
 * network would, `refuse()` turns new ones away (the server seems down), `breakStreams()`
 * drops each SSE or WebSocket request as it comes (a proxy that cannot stream) while other
 * requests pass, `retarget(url)` sends new ones elsewhere, `busy(count, seconds)` answers
 * the next `count` connections' requests `503` with `Retry-After: seconds`, `notFound(count)`
 * answers them `404` as a proxy with no route would, `hold()` stops
 * passing anything on, closing nothing (a network gone silent: new connections are taken
 * and never answered; `hold(false)` passes new ones on again), `pace(bytesPerSecond)` passes
 * what the server sends on new connections no faster than that (a slow link), `headsOnly()`
 * passes on only the head of each answer on new connections (a stream held after its
 * headers). `requests` holds the request line of each request seen, `times` when each came
 * (ms since the epoch).
 */
export async function startProxy(target) {
  let upstream = new URL(target);
  let refusing = false;
  let breaking = false;
  let holding = false;
  let headsOnly = false;
  let rate = 0; // bytes a second from the server to the client; 0: as fast as they come
  let canned = { count: 0, answer: '' }; // answered by the proxy itself, not the server
  const pairs = new Set();
  const held = new Set();
  const requests = [];
  const times = [];
  const seen = (chunk) => {
    const line = chunk.toString('latin1').split('\r\n', 1)[0];
    if (!/^[A-Z]+ \S+ HTTP\/1\.1$/.test(line)) return null;
    requests.push(line);
    times.push(Date.now());
    return line;
  };
  const server = net.createServer((client) => {
    if (refusing) return client.destroy();
    if (holding) {
      held.add(client);
      client.on('error', () => {});
      return;
    }
    if (canned.count > 0) {
      canned.count -= 1;
      const { answer } = canned;
      client.on('error', () => {});
      client.once('data', (chunk) => {
        seen(chunk);
        client.end(answer);
      });
      return;
    }
    const remote = net.connect(Number(upstream.port), upstream.hostname);
    const pair = { client, remote };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      remote.destroy();
    };
    client.on('data', (chunk) => {
      const line = seen(chunk);
      if (line && breaking && /^GET \S*(\/events|\/ws)\b/.test(line)) end();
    });
    client.pipe(remote);
    if (rate) paced(remote, client, rate, end);
    else if (headsOnly) passHead(remote, client);
    else remote.pipe(client);
    for (const socket of rate ? [client] : [client, remote]) {
      socket.on('error', end);
      socket.on('close', end);
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    times,
    get open() {
      return pairs.size;
    },
    retarget(url) {
      upstream = new URL(url);
    },
    cut() {
      for (const { client, remote } of [...pairs]) {
        client.destroy();
        remote.destroy();
      }
      pairs.clear();
      for (const client of held) client.destroy();
      held.clear();
    },
    refuse(on = true) {
      refusing = on;
    },
    pace(bytesPerSecond) {
      rate = bytesPerSecond;
    },
    headsOnly(on = true) {
      headsOnly = on;
    },
    hold(on = true) {
      holding = on;
      if (!on) return;
      for (const { client, remote } of pairs) {
        client.unpipe(remote);
        remote.unpipe(client);
        // Neither end hears of the other any more, not even that it closed.
        for (const socket of [client, remote]) {
          socket.removeAllListeners('close');
          socket.removeAllListeners('error');
          socket.on('error', () => {});
          socket.pause();
          held.add(socket);
        }
      }
      pairs.clear();
    },
    breakStreams(on = true) {
      breaking = on;
    },
    busy(count, seconds) {
      const body = '{"type":"about:blank","title":"Service Unavailable","status":503}';
      canned = {
        count,
        answer:
          'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n' +
          `Retry-After: ${seconds}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      };
    },
    notFound(count) {
      const body = '<html><body><h1>404 Not Found</h1></body></html>';
      canned = {
        count,
        answer:
          'HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n' +
          `Content-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
      };
    },
    close() {
      this.cut();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * `watchJob(jobId, options)` through a proxy of its own (`proxy`), told to a recorder
 * (`seen`: this file's by default); the watch and the proxy are closed when the test `t`
 * ends.
 */
export async function watchThroughProxy(t, jobId, options, seen = recorder()) {
  const proxy = await startProxy(SERVER);
  t.after(() => proxy.close());
  const watch = watchJob(jobId, { ...NODE, ...seen.options, baseUrl: proxy.url, ...options });
  t.after(() => watch.close());
  return { proxy, seen, watch };
}

/** Open streaming connections the server counts (`jobcast_connections`) for a transport. */
export async function openStreams(transport, base = SERVER) {
  const headers = API_KEY ? { Authorization: `Bearer ${API_KEY}` } : {};
  const text = await (await fetch(new URL('/metrics', base), { headers })).text();
  const line = text
    .split('\n')
    .find((l) => l.startsWith(`jobcast_connections{transport="${transport}"}`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}
