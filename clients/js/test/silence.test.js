// A stream whose connection dies without a word is noticed by its heartbeats, asked for as
// events (`?ping=1`): this file's server sends one every half second (JOBS_HEARTBEAT=0.5).

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { watchJob, watchJobs } from 'jobcast';
import {
  NODE,
  SERVER,
  appendOutput,
  createJob,
  ms,
  recorder,
  settle,
  startProxy,
  updateJob,
  waitFor,
  watchThroughProxy,
} from './helpers.js';

after(() => settle());

describe('a connection that dies silently', { concurrency: false }, () => {
  for (const path of ['while the server stays reachable', 'with the whole path']) {
    it(`is noticed and resumed, ${path}`, async (t) => {
      const jobId = await createJob({ message: 'Before the silence' });
      const { proxy, seen, watch } = await watchThroughProxy(t, jobId, { transport: 'sse' });
      await waitFor(() => seen.state() === 'live' && seen.latest(jobId), 'live');
      proxy.hold(); // nothing passes on the open connections, and nothing closes
      // A connection lost alone (a NAT or a balancer that forgot it): new ones get through.
      if (path === 'while the server stays reachable') proxy.hold(false);
      await updateJob(jobId, { progress: 30, message: 'During the silence' });
      await waitFor(() => seen.state() !== 'live', 'the silence noticed', ms(10_000));
      proxy.hold(false);
      await waitFor(
        () => seen.state() === 'live' && seen.latest(jobId).version === 2,
        'resumed, with the change made meanwhile',
        ms(20_000),
      );
      assert.deepEqual(seen.versions(jobId), [1, 2]);
      assert.equal(watch.transport, 'sse');
    });
  }

  it('is noticed when polling too: a request unanswered is given up', async (t) => {
    const jobId = await createJob({ message: 'Before the silence' });
    const seen = recorder();
    const proxy = await startProxy(SERVER);
    t.after(() => proxy.close());
    const watch = watchJobs({ ...seen.options, transport: 'poll', baseUrl: proxy.url, pollInterval: 100 });
    t.after(() => watch.close());
    await waitFor(() => seen.state() === 'live' && seen.latest(jobId), 'live');
    proxy.hold();
    await updateJob(jobId, { progress: 30 });
    await waitFor(() => seen.state() !== 'live', 'the silence noticed', ms(20_000));
    proxy.hold(false);
    await waitFor(
      () => seen.state() === 'live' && seen.latest(jobId).version === 2,
      'resumed, with the change made meanwhile',
      ms(20_000),
    );
  });

  for (const transport of ['sse', 'ws']) {
    it(`is given up when it is never answered at all, over ${transport}`, async (t) => {
      const jobId = await createJob();
      const proxy = await startProxy(SERVER);
      t.after(() => proxy.close());
      proxy.hold(); // the connection is taken, and nothing ever comes back
      const seen = recorder();
      const watch = watchJob(jobId, { ...NODE, ...seen.options, transport, baseUrl: proxy.url });
      t.after(() => watch.close());
      await waitFor(() => seen.state() === 'reconnecting', 'the silence noticed', ms(20_000));
      proxy.hold(false);
      await waitFor(() => seen.state() === 'live' && seen.latest(jobId), 'live', ms(30_000));
    });
  }

  it('is given up when only its headers come', async (t) => {
    const jobId = await createJob();
    const proxy = await startProxy(SERVER);
    t.after(() => proxy.close());
    proxy.headsOnly(); // the stream opens, and not one event of it comes
    const seen = recorder();
    const watch = watchJob(jobId, { ...NODE, ...seen.options, transport: 'sse', baseUrl: proxy.url });
    t.after(() => watch.close());
    await waitFor(() => seen.state() === 'live', 'open');
    await waitFor(() => seen.state() === 'reconnecting', 'the silence noticed', ms(20_000));
    proxy.headsOnly(false);
    await waitFor(() => seen.state() === 'live' && seen.latest(jobId), 'live', ms(30_000));
  });

  it('when polling, goes offline once requests keep going unanswered', async (t) => {
    const proxy = await startProxy(SERVER);
    t.after(() => proxy.close());
    proxy.hold(); // every request is taken, and none is ever answered
    const seen = recorder();
    const watch = watchJobs({ ...seen.options, transport: 'poll', baseUrl: proxy.url });
    t.after(() => watch.close());
    // Four attempts, each given up after ten seconds without an answer.
    await waitFor(() => seen.state() === 'offline', 'offline', ms(70_000));
  });

  it('takes a large answer however slowly it comes, while it comes', async (t) => {
    const jobId = await createJob({ jobType: 'llm_agent' });
    const chunks = Array.from({ length: 360 }, (_, n) => ({ data: `${n} ${'x'.repeat(2000)}` }));
    for (let start = 0; start < chunks.length; start += 120)
      await appendOutput(jobId, chunks.slice(start, start + 120));
    const proxy = await startProxy(SERVER);
    t.after(() => proxy.close());
    proxy.pace(60_000); // 720 KB of output: twelve seconds on this link
    const seen = recorder();
    const watch = watchJob(jobId, {
      ...seen.options,
      onOutput: () => {},
      transport: 'poll',
      baseUrl: proxy.url,
    });
    t.after(() => watch.close());
    await waitFor(() => watch.outputOffset === chunks.length, 'every chunk', ms(40_000));
    assert.ok(!seen.states.some(({ state }) => state === 'reconnecting'), JSON.stringify(seen.states));
  });

  it('is timed on the monotonic clock: a wall clock set forward is no silence', async (t) => {
    const jobId = await createJob();
    const { seen } = await watchThroughProxy(t, jobId, { transport: 'sse' });
    await waitFor(() => seen.state() === 'live', 'live');
    const wallClock = Date.now;
    let skew = 0;
    // The machine's clock set an hour on, and on again at every reading: a watchdog on
    // it would find every heartbeat an hour old.
    Date.now = () => wallClock() + (skew += 3_600_000);
    t.after(() => {
      Date.now = wallClock;
    });
    await new Promise((resolve) => setTimeout(resolve, ms(1_500))); // past its 1.25 s limit
    Date.now = wallClock; // the tests' own waits keep time on it
    await updateJob(jobId, { progress: 50 });
    await waitFor(() => seen.latest(jobId).version === 2, 'the change');
    assert.deepEqual(
      seen.states.map(({ state }) => state),
      ['connecting', 'live'],
    );
  });

  it('is not taken for dead while its heartbeats come', async (t) => {
    const jobId = await createJob();
    const { seen } = await watchThroughProxy(t, jobId, { transport: 'sse' });
    await waitFor(() => seen.state() === 'live', 'live');
    await new Promise((resolve) => setTimeout(resolve, ms(3_000))); // six heartbeats, no event
    assert.deepEqual(
      seen.states.map(({ state }) => state),
      ['connecting', 'live'],
    );
  });
});
