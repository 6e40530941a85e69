// watchJob and watchJobs against a real server, over each transport, from Node 20.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import { WebSocketServer } from 'ws';
import { after, describe, it } from 'node:test';
import { createJobStore, isTerminal, watchJob, watchJobs } from 'jobcast';
import {
  NODE,
  api,
  SERVER,
  TRANSPORTS,
  assertIncreasing,
  completeJob,
  createJob,
  getJob,
  ms,
  openStreams,
  recorder,
  settle,
  sleep,
  startProxy,
  updateJob,
  waitFor,
  watchThroughProxy,
} from './helpers.js';

const TIMEOUT = ms(30_000);
after(() => settle());

for (const transport of TRANSPORTS) {
  describe(`over ${transport}`, { concurrency: false }, () => {
    it(
      'sends one job as it is, then each change live, and ends at its terminal state',
      { timeout: TIMEOUT },
      async (t) => {
        const jobId = await createJob({ jobType: 'file_processing', message: 'Upload queued' });
        const { proxy, seen, watch } = await watchThroughProxy(t, jobId, { transport });

        await waitFor(() => seen.synced && seen.state() === 'live', 'the snapshot and live');
        assert.deepEqual(seen.versions(jobId), [1]);
        assert.equal(seen.jobs[0].message, 'Upload queued');
        assert.equal(seen.states[0].state, 'connecting');
        assert.equal(watch.transport, transport);

        await updateJob(jobId, { status: 'processing', progress: 45, message: 'Extracting...' });
        await waitFor(() => seen.latest(jobId).version === 2, 'version 2');
        assert.equal(seen.latest(jobId).progress, 45);
        await completeJob(jobId, { documentId: 'doc_1' });
        await waitFor(() => watch.closed, 'the watch to end at the terminal state');
        assert.deepEqual(seen.versions(jobId), [1, 2, 3]);
        assert.ok(isTerminal(seen.latest(jobId)));
        assert.equal(seen.latest(jobId).documentId, 'doc_1');

        // Ended means no reconnect: nothing more reaches the server.
        const requests = proxy.requests.length;
        await sleep(ms(1_500));
        assert.equal(proxy.requests.length, requests, proxy.requests.join('\n'));
        if (transport !== 'poll')
          await waitFor(async () => (await openStreams(transport)) === 0, 'no stream');
      },
    );

    it(
      'sends every job, then what changes, and only the jobs the filter matches',
      { timeout: TIMEOUT },
      async (t) => {
        const ours = await createJob({ jobType: 'document_analysis', message: 'before' });
        const other = await createJob({ jobType: 'llm_agent' });
        const seen = recorder();
        const watch = watchJobs({
          ...NODE,
          ...seen.options,
          transport,
          baseUrl: SERVER,
          jobType: 'document_analysis',
          pollInterval: 100,
        });
        t.after(() => watch.close());

        await waitFor(() => seen.synced, 'the end of the snapshot');
        assert.deepEqual(seen.versions(ours), [1]);
        const later = await createJob({ jobType: 'document_analysis', message: 'after' });
        await updateJob(ours, { progress: 10 });
        await updateJob(other, { progress: 10 });
        await waitFor(
          () => seen.latest(later) && seen.latest(ours).version === 2,
          'the live changes',
        );
        await sleep(ms(300));
        assert.deepEqual(seen.versions(ours), [1, 2]);
        assert.deepEqual(seen.versions(later), [1]);
        assert.ok(seen.jobs.every((job) => job.jobType === 'document_analysis'));
        assert.equal(seen.resets, 0);
      },
    );

    it(
      'resumes after the connection drops: nothing missed, nothing twice',
      { timeout: TIMEOUT },
      async (t) => {
        const proxy = await startProxy(SERVER);
        t.after(() => proxy.close());
        const one = await createJob({ jobType: 'generic' });
        const many = await createJob({ jobType: 'file_processing' });
        const single = recorder();
        const all = recorder();
        const options = { ...NODE, transport, baseUrl: proxy.url, pollInterval: 100 };
        const watches = [
          watchJob(one, { ...options, ...single.options }),
          watchJobs({ ...options, ...all.options, jobType: 'file_processing' }),
        ];
        t.after(() => watches.forEach((watch) => watch.close()));
        await waitFor(() => single.synced && all.synced, 'both snapshots');

        for (let round = 1; round <= 2; round += 1) {
          await waitFor(() => single.state() === 'live' && all.state() === 'live', 'live');
          const before = proxy.requests.length;
          proxy.refuse(); // the server seems gone while the jobs change
          proxy.cut();
          await waitFor(
            () => single.state() === 'reconnecting' && all.state() === 'reconnecting',
            'reconnecting',
          );
          await updateJob(one, { progress: 20 * round, message: `round ${round}` });
          await updateJob(many, { progress: 20 * round, message: `round ${round}` });
          await sleep(ms(300));
          proxy.refuse(false);
          const one_ = await getJob(one);
          const many_ = await getJob(many);
          await waitFor(
            () =>
              single.latest(one).version === one_.version &&
              all.latest(many).version === many_.version,
            `round ${round}'s changes after the reconnect`,
          );
          await waitFor(() => single.state() === 'live' && all.state() === 'live', 'live again');
          if (transport === 'sse') {
            // The reconnect asked for what came after the last event it had.
            const asked = proxy.requests
              .slice(before)
              .filter((line) => line.startsWith('GET ') && line.includes('/events'));
            assert.ok(
              asked.length >= 2 && asked.every((line) => line.includes('lastEventId=')),
              asked.join('\n'),
            );
          }
        }
        await updateJob(many, { progress: 99 });
        await waitFor(() => all.latest(many).progress === 99, 'a live change after resuming');
        assertIncreasing(single.versions(one));
        assertIncreasing(all.versions(many));
        assert.equal(all.resets, 0);
        assert.deepEqual(all.removed, []);
        assert.equal(watches[0].transport, transport, 'no fallback to polling');
      },
    );

    it(
      'reports a job that does not exist as removed, and ends',
      { timeout: TIMEOUT },
      async (t) => {
        const seen = recorder();
        const watch = watchJob('job_doesNotExist0000000', {
          ...NODE,
          ...seen.options,
          transport,
          baseUrl: SERVER,
        });
        t.after(() => watch.close());
        await waitFor(() => watch.closed, 'the watch to end');
        assert.deepEqual(seen.removed, ['job_doesNotExist0000000']);
        assert.deepEqual(seen.jobs, []);
      },
    );
  });
}

describe('an owner filter', () => {
  for (const transport of TRANSPORTS) {
    it(`follows that owner's jobs only over ${transport}`, async (t) => {
      const owner = `owner-${transport}-${Date.now()}`;
      const mine = await createJob({ owner });
      const theirs = await createJob({ owner: `${owner}-other` });
      const seen = recorder();
      const options = { ...NODE, ...seen.options, transport, baseUrl: SERVER, pollInterval: 100 };
      const watch = watchJobs({ ...options, owner });
      t.after(() => watch.close());
      await waitFor(() => seen.synced && seen.latest(mine), 'the owner\'s job');
      await updateJob(theirs, { progress: 50 });
      await updateJob(mine, { progress: 50 });
      await waitFor(() => seen.latest(mine).version === 2, 'the owner\'s change');
      assert.deepEqual([...new Set(seen.jobs.map((job) => job.jobId))], [mine]);
    });
  }
});

describe('close() from a callback', () => {
  for (const transport of TRANSPORTS) {
    it(`ends the watch there over ${transport}: nothing is called after`, async (t) => {
      await createJob();
      await createJob();
      const called = [];
      const watch = watchJobs({
        ...NODE,
        transport,
        baseUrl: SERVER,
        pollInterval: ms(60_000),
        onJob: (job) => {
          called.push(`job ${job.jobId}`);
          watch.close();
        },
        onSynced: () => called.push('synced'),
        onState: ({ state }) => called.push(state),
      });
      t.after(() => watch.close());
      await waitFor(() => called.some((name) => name.startsWith('job ')), 'the first job');
      await sleep(ms(300)); // what a closed watch would still have called by now
      assert.ok(watch.closed);
      assert.deepEqual(called.slice(-1), [called.find((name) => name.startsWith('job '))]);
      assert.equal(called.filter((name) => name.startsWith('job ')).length, 1, called.join(' '));
    });
  }
});

describe('close() from onState', () => {
  it('as the watch falls back to polling: no poll starts', { timeout: TIMEOUT }, async (t) => {
    await createJob();
    const proxy = await startProxy(SERVER);
    t.after(() => proxy.close());
    proxy.breakStreams(); // every stream fails: the watch falls back to polling
    let closedAt = -1;
    const watch = watchJobs({
      ...NODE,
      transport: 'sse',
      baseUrl: proxy.url,
      pollInterval: 50,
      onState: ({ transport }) => {
        if (transport !== 'poll' || closedAt >= 0) return;
        watch.close();
        closedAt = proxy.requests.length;
      },
    });
    t.after(() => watch.close());
    await waitFor(() => closedAt >= 0, 'the fall back', ms(20_000));
    await sleep(ms(500)); // ten poll intervals
    assert.deepEqual(proxy.requests.slice(closedAt), []);
  });

  it('while it waits out a Retry-After: nothing is left to keep Node running', async (t) => {
    const proxy = await startProxy(SERVER);
    t.after(() => proxy.close());
    proxy.busy(1, 120);
    // A process of its own, which ends once nothing is pending in it.
    const script = `
      import { watchJobs } from 'jobcast';
      const watch = watchJobs({
        transport: 'poll',
        baseUrl: ${JSON.stringify(proxy.url)},
        onState: ({ state }) => {
          if (state === 'reconnecting') watch.close();
        },
      });`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: 'inherit',
    });
    t.after(() => child.kill());
    const exited = new Promise((resolve) => child.on('exit', resolve));
    const still = sleep(ms(20_000)).then(() => 'still running: it waits for the Retry-After');
    assert.equal(await Promise.race([exited, still]), 0);
  });
});

describe('a 404 that is not the server\'s', () => {
  for (const transport of TRANSPORTS) {
    it(`over ${transport}, is tried again, not taken for a deleted job`, { timeout: TIMEOUT }, async (t) => {
      const jobId = await createJob({ message: 'Still here' });
      const proxy = await startProxy(SERVER);
      t.after(() => proxy.close());
      proxy.notFound(2); // a proxy with no route yet: the first attempt and the one after it
      const seen = recorder();
      const watch = watchJob(jobId, { ...NODE, ...seen.options, baseUrl: proxy.url, transport });
      t.after(() => watch.close());
      await waitFor(() => seen.state() === 'live' && seen.latest(jobId), 'live, with the job');
      assert.deepEqual(seen.removed, []);
      assert.equal(seen.latest(jobId).message, 'Still here');
      assert.equal(watch.closed, false);
    });
  }
});

describe('an end at a version already seen', () => {
  it('is delivered, and ends the watch (a Redis rolled back issues versions again)', { timeout: TIMEOUT }, async (t) => {
    // A server of this test's own: the job at version 3, then, after a reconnect, ended
    // at version 2.
    const job = (version, status) => ({ jobId: 'job_rolled', jobType: 'generic', status, progress: 0, message: '', version, createdAt: '2026-01-01T00:00:00Z', updatedAt: '2026-01-01T00:00:00Z' });
    let streams = 0;
    const server = http.createServer((request, response) => {
      if (!request.url.startsWith('/api/jobs/job_rolled/events')) {
        response.writeHead(200, { 'Content-Type': 'application/json' });
        return response.end(JSON.stringify(job(3, 'processing')));
      }
      streams += 1;
      response.writeHead(200, { 'Content-Type': 'text/event-stream' });
      const [version, status] = streams === 1 ? [3, 'processing'] : [2, 'completed'];
      response.end(`retry: 10\nid: ${version}\nevent: job\ndata: ${JSON.stringify(job(version, status))}\n\n`);
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => server.close());
    const seen = recorder();
    const baseUrl = `http://127.0.0.1:${server.address().port}`;
    const watch = watchJob('job_rolled', { ...NODE, ...seen.options, baseUrl });
    t.after(() => watch.close());
    await waitFor(() => watch.closed, 'the watch to end');
    assert.deepEqual(seen.versions('job_rolled'), [3, 2]);
    assert.equal(seen.latest('job_rolled').status, 'completed');
  });

  for (const [what, answers] of [
    ['read when a WebSocket is told it holds the end', ['processing', 'completed']],
    ['read again when that read fails', ['processing', 503, 'completed']],
  ]) {
    it(`is ${what}`, { timeout: TIMEOUT }, async (t) => {
      // The socket's first subscription gets version 3, processing, and the socket closes;
      // subscribed again from 3, it is told `final` (the job ended at 3) and kept open.
      const job = (status) => ({ jobId: 'job_rolled', jobType: 'generic', status, progress: 0, message: '', version: 3, createdAt: '2026-01-01T00:00:00Z', updatedAt: '2026-01-01T00:00:00Z' });
      const gets = [...answers];
      const server = http.createServer((request, response) => {
        const answer = gets.length > 1 ? gets.shift() : gets[0];
        if (typeof answer === 'number') {
          response.writeHead(answer);
          return response.end();
        }
        response.writeHead(200, { 'Content-Type': 'application/json' });
        response.end(JSON.stringify(job(answer)));
      });
      const sockets = new WebSocketServer({ server });
      sockets.on('connection', (socket) => {
        socket.on('message', (data) => {
          const frame = JSON.parse(String(data));
          if (frame.type !== 'subscribe') return;
          if (frame.since == null) {
            socket.send(JSON.stringify({ type: 'subscribed', jobId: 'job_rolled', version: 3 }));
            socket.send(JSON.stringify({ type: 'job', job: job('processing') }));
            socket.close();
          } else {
            socket.send(JSON.stringify({ type: 'subscribed', jobId: 'job_rolled', version: 3, final: true }));
          }
        });
      });
      await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
      t.after(() => {
        for (const client of sockets.clients) client.terminate();
        sockets.close();
        server.close();
      });
      const seen = recorder();
      const baseUrl = `http://127.0.0.1:${server.address().port}`;
      const watch = watchJob('job_rolled', { ...NODE, ...seen.options, baseUrl, transport: 'ws' });
      t.after(() => watch.close());
      await waitFor(() => watch.closed, 'the watch to end', ms(15_000));
      assert.deepEqual(seen.jobs.map((j) => j.status), ['processing', 'completed']);
    });
  }

  it('is read when polling again, though its version is the one seen', { timeout: TIMEOUT }, async (t) => {
    // Polled at version 3, processing; a long-poll fails; the job has ended at version 3.
    const job = (status) => ({ jobId: 'job_rolled', jobType: 'generic', status, progress: 0, message: '', version: 3, createdAt: '2026-01-01T00:00:00Z', updatedAt: '2026-01-01T00:00:00Z' });
    let asks = 0;
    const server = http.createServer((request, response) => {
      asks += 1;
      if (asks === 2) {
        response.writeHead(500);
        return response.end();
      }
      if (request.headers['if-none-match'] === '"3"') {
        response.writeHead(304, { ETag: '"3"' });
        return response.end();
      }
      response.writeHead(200, { 'Content-Type': 'application/json', ETag: '"3"' });
      response.end(JSON.stringify(job(asks === 1 ? 'processing' : 'completed')));
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => server.close());
    const seen = recorder();
    const baseUrl = `http://127.0.0.1:${server.address().port}`;
    const watch = watchJob('job_rolled', { ...seen.options, baseUrl, transport: 'poll' });
    t.after(() => watch.close());
    await waitFor(() => watch.closed, 'the watch to end', ms(15_000));
    assert.deepEqual(seen.jobs.map((j) => j.status), ['processing', 'completed']);
  });
});

describe('polling the list', () => {
  it('sends each page ETag back, and takes a 304 as the page it had', { timeout: TIMEOUT }, async (t) => {
    const owner = `etag-${Date.now()}`; // a list no other test changes
    const jobId = await createJob({ message: 'Listed', owner });
    const answers = [];
    const real = globalThis.fetch;
    globalThis.fetch = async (url, init) => {
      const response = await real(url, init);
      if (new URL(url).pathname === '/api/jobs') {
        answers.push({ etag: init?.headers?.['If-None-Match'], status: response.status });
      }
      return response;
    };
    t.after(() => {
      globalThis.fetch = real;
    });
    const seen = recorder();
    const watch = watchJobs({ ...seen.options, owner, transport: 'poll', baseUrl: SERVER, pollInterval: 50 });
    t.after(() => watch.close());
    await waitFor(() => answers.filter((a) => a.status === 304).length >= 2, 'the same page, 304');
    assert.equal(answers[0].etag, undefined, 'the first ask has no ETag to send');
    assert.ok(answers.slice(1).every((a) => a.etag), 'each later one sends the last');
    await updateJob(jobId, { progress: 40 });
    await waitFor(() => seen.latest(jobId)?.version === 2, 'the change, polled');
    assert.deepEqual(seen.versions(jobId), [1, 2]);
    assert.deepEqual(seen.removed, [], 'a job on a page answered 304 is still listed');
  });
});

describe('a fallback to polling', () => {
  for (const transport of ['sse', 'ws']) {
    it(
      `over ${transport}, streams again later with each version and removal once`,
      { timeout: ms(60_000) },
      async (t) => {
        const kept = await createJob({ message: 'Kept' });
        const doomed = await createJob({ message: 'Doomed' });
        const proxy = await startProxy(SERVER);
        t.after(() => proxy.close());
        const seen = recorder();
        const options = { ...NODE, ...seen.options, baseUrl: proxy.url, transport };
        const watch = watchJobs({ ...options, pollInterval: 100, restreamAfter: ms(2_000) });
        t.after(() => watch.close());
        await waitFor(() => seen.state() === 'live' && seen.synced, 'live');
        await updateJob(kept, { progress: 10 }); // the stream's cursor moves past it
        await waitFor(() => seen.latest(kept)?.version === 2, 'the change, streamed');

        proxy.breakStreams();
        proxy.cut();
        await waitFor(() => watch.transport === 'poll' && seen.state() === 'live', 'polling');
        await updateJob(kept, { progress: 20 });
        await api('DELETE', `/api/jobs/${doomed}`);
        await waitFor(() => seen.removed.includes(doomed), 'the deletion, polled');
        proxy.breakStreams(false);
        await waitFor(() => watch.transport === transport && seen.state() === 'live', 'streaming');
        await updateJob(kept, { progress: 30 });
        await waitFor(() => seen.latest(kept)?.version === 4, 'the next change, streamed');
        assert.deepEqual(seen.versions(kept), [1, 2, 3, 4]);
        assert.deepEqual(seen.removed, [doomed]);
      },
    );
  }

  it('says which transport it is reconnecting over once it goes back to streaming', { timeout: ms(60_000) }, async (t) => {
    await createJob();
    const proxy = await startProxy(SERVER);
    t.after(() => proxy.close());
    const seen = recorder();
    const options = { ...NODE, ...seen.options, baseUrl: proxy.url, transport: 'sse' };
    const watch = watchJobs({ ...options, pollInterval: 100, restreamAfter: ms(1_000) });
    t.after(() => watch.close());
    await waitFor(() => seen.state() === 'live', 'live');
    proxy.breakStreams();
    proxy.cut();
    await waitFor(() => watch.transport === 'poll' && seen.state() === 'live', 'polling');
    const polling = Date.now();
    // The server goes away while polling, and stays away past the time to stream again.
    proxy.refuse();
    proxy.cut();
    await waitFor(() => seen.state() === 'reconnecting', 'a failed poll');
    await sleep(Math.max(0, polling + ms(1_000) - Date.now()));
    proxy.refuse(false);
    proxy.breakStreams(false);
    await waitFor(() => watch.transport === 'sse' && seen.state() === 'live', 'streaming');
    const states = seen.states.map(({ state, transport }) => `${state}/${transport}`);
    const streaming = states.lastIndexOf('live/sse');
    assert.notEqual(states[streaming - 1], 'reconnecting/poll', states.join(' '));
    assert.match(states[streaming - 1], /\/sse$/, states.join(' '));
  });

  it('of one job is live at once, not after a long-poll', { timeout: ms(60_000) }, async (t) => {
    const jobId = await createJob();
    const { proxy, seen, watch } = await watchThroughProxy(t, jobId, { transport: 'sse' });
    await waitFor(() => seen.state() === 'live', 'live');
    proxy.breakStreams();
    proxy.cut();
    await waitFor(() => watch.transport === 'poll', 'the fall back');
    await waitFor(() => seen.state() === 'live', 'live on polling', ms(10_000));
  });
});

describe('a busy server', () => {
  for (const transport of TRANSPORTS) {
    it(`is asked again over ${transport} only after its Retry-After`, { timeout: TIMEOUT }, async (t) => {
      const jobId = await createJob({ message: 'Waiting its turn' });
      const proxy = await startProxy(SERVER);
      t.after(() => proxy.close());
      // A 503 with Retry-After to the first attempt and to the request after it: a probe,
      // or over polling the next poll. The stream's own 503 hides its headers from
      // EventSource and WebSocket; the probe's does not.
      proxy.busy(2, 2);
      const seen = recorder();
      const watch = watchJobs({ ...NODE, ...seen.options, baseUrl: proxy.url, transport });
      t.after(() => watch.close());
      await waitFor(() => seen.state() === 'live' && seen.latest(jobId), 'live, with the job');
      const waited = proxy.times[2] - proxy.times[1];
      assert.ok(waited >= 1_950, `asked again ${waited} ms after Retry-After: 2`);
      assert.equal(seen.latest(jobId).message, 'Waiting its turn');
    });
  }
});

describe('the server', () => {
  it('answers 204 to a reconnect holding the terminal state: a client has nothing to resume', async () => {
    const jobId = await createJob();
    const job = await completeJob(jobId);
    const response = await fetch(`${SERVER}/api/jobs/${jobId}/events?lastEventId=${job.version}`);
    assert.equal(response.status, 204);
  });
});

describe('a job id', () => {
  for (const jobId of ['', null, undefined, {}]) {
    it(`${JSON.stringify(jobId) ?? 'undefined'} is refused, saying what a job id is`, () => {
      const options = { ...NODE, baseUrl: SERVER };
      assert.throws(() => watchJob(jobId, options), /a job id is a non-empty string/);
      if (jobId !== null && jobId !== undefined) {
        assert.throws(() => createJobStore({ ...options, jobId }), /a job id is a non-empty string/);
      }
    });
  }
});

describe('a watch that ended', () => {
  for (const transport of TRANSPORTS) {
    it(`says closed over ${transport}, whether its job ended or was never there`, { timeout: TIMEOUT }, async (t) => {
      const jobId = await createJob();
      const options = { ...NODE, baseUrl: SERVER, transport, pollInterval: 100 };
      const ended = recorder();
      const missing = recorder();
      const watches = [
        watchJob(jobId, { ...options, ...ended.options }),
        watchJob('job_never_there', { ...options, ...missing.options }),
      ];
      t.after(() => watches.forEach((watch) => watch.close()));
      await waitFor(() => ended.state() === 'live', 'live');
      await completeJob(jobId);
      await waitFor(() => watches.every((watch) => watch.closed), 'both watches to end');
      assert.equal(ended.state(), 'closed');
      assert.equal(missing.state(), 'closed');
      assert.deepEqual(missing.removed, ['job_never_there']);
    });
  }
});

describe('a poll answered by something other than the job', () => {
  it('is tried again after a while, not at once', { timeout: TIMEOUT }, async (t) => {
    let asked = 0;
    const other = http.createServer((request, response) => {
      asked += 1;
      response.writeHead(200, { 'Content-Type': 'application/json' });
      response.end('{"jobs":[]}'); // a list, say, where a job was asked for
    });
    await new Promise((resolve) => other.listen(0, '127.0.0.1', resolve));
    t.after(() => other.close());
    const watch = watchJob('job_elsewhere', {
      baseUrl: `http://127.0.0.1:${other.address().port}`,
      transport: 'poll',
    });
    t.after(() => watch.close());
    await waitFor(() => asked >= 2, 'asked again');
    await sleep(ms(1_000));
    assert.ok(asked < 10, `asked ${asked} times in about a second`);
    assert.equal(watch.state, 'reconnecting');
  });
});

describe('outside a browser', () => {
  it('needs a baseUrl', () => {
    assert.throws(() => watchJobs({ transport: 'poll' }), /baseUrl is required outside a browser/);
  });

  it('says what to pass when Node has no EventSource or WebSocket', () => {
    assert.throws(() => watchJobs({ baseUrl: SERVER }), /options\.EventSource.*'eventsource'/);
    if (typeof globalThis.WebSocket !== 'function') {
      assert.throws(
        () => watchJobs({ baseUrl: SERVER, transport: 'ws' }),
        /options\.WebSocket.*'ws'/,
      );
    }
  });

  it('keeps going when a callback throws, and logs the error', { timeout: TIMEOUT }, async (t) => {
    const logged = [];
    t.mock.method(console, 'error', (error) => logged.push(error));
    const jobId = await createJob();
    let calls = 0;
    const watch = watchJob(jobId, {
      transport: 'poll',
      baseUrl: SERVER,
      onJob: () => {
        calls += 1;
        throw new Error('a bug in the page');
      },
    });
    t.after(() => watch.close());
    await waitFor(() => calls === 1, 'the first job');
    await completeJob(jobId);
    await waitFor(() => watch.closed, 'the terminal state');
    assert.equal(calls, 2);
    assert.deepEqual(
      logged.map((error) => error.message),
      ['a bug in the page', 'a bug in the page'],
    );
  });
});
