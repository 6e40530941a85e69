// A stream whose connection dies without a word is noticed by its heartbeats, asked for as
// events (`?ping=1`): this file's server sends one every half second (JOBS_HEARTBEAT=0.5).

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { watchJobs } from 'jobcast';
import {
  SERVER,
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

describe('an SSE connection that dies silently', { concurrency: false }, () => {
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
