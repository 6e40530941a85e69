// pauseWhenHidden, with a stand-in for a browser's document (the real browser is tested in
// tests/browser/test_react.py): hidden closes the connection, visible resumes from the cursor.

import assert from 'node:assert/strict';
import { after, afterEach, beforeEach, describe, it } from 'node:test';
import { watchJob, watchJobs } from 'jobcast';
import {
  NODE,
  SERVER,
  TRANSPORTS,
  assertIncreasing,
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
} from './helpers.js';

const TIMEOUT = ms(30_000);
after(() => settle());

/** A document whose visibility the test sets, as a tab switch would. */
class FakeDocument extends EventTarget {
  visibilityState = 'visible';

  show(state) {
    this.visibilityState = state;
    this.dispatchEvent(new Event('visibilitychange'));
  }
}

let page;
beforeEach(() => {
  page = new FakeDocument();
  globalThis.document = page;
});
afterEach(() => {
  delete globalThis.document;
});

describe('pauseWhenHidden', { concurrency: false }, () => {
  for (const transport of TRANSPORTS) {
    it(
      `closes the connection while hidden and resumes when visible (${transport})`,
      { timeout: TIMEOUT },
      async (t) => {
        const proxy = await startProxy(SERVER);
        t.after(() => proxy.close());
        const one = await createJob({ jobType: 'generic' });
        const many = await createJob({ jobType: 'llm_agent' });
        const single = recorder();
        const all = recorder();
        const options = {
          ...NODE,
          transport,
          baseUrl: proxy.url,
          pauseWhenHidden: true,
          pollInterval: 100,
        };
        const watches = [
          watchJob(one, { ...options, ...single.options }),
          watchJobs({ ...options, ...all.options, jobType: 'llm_agent' }),
        ];
        t.after(() => watches.forEach((watch) => watch.close()));
        await waitFor(
          () => single.state() === 'live' && all.state() === 'live' && all.synced,
          'live',
        );

        for (let round = 1; round <= 2; round += 1) {
          page.show('hidden');
          assert.equal(single.state(), 'paused');
          assert.equal(all.state(), 'paused');
          if (transport !== 'poll')
            await waitFor(async () => (await openStreams(transport)) === 0, 'no stream open');
          await sleep(ms(100));
          const requests = proxy.requests.length;
          await updateJob(one, { progress: round * 10 });
          await updateJob(one, { progress: round * 10 + 5 });
          await updateJob(many, { progress: round * 10 });
          await sleep(ms(400));
          assert.equal(proxy.requests.length, requests, 'nothing asked while hidden');
          assert.equal(single.latest(one).version, 1 + 2 * (round - 1));

          page.show('visible');
          const [oneNow, manyNow] = [await getJob(one), await getJob(many)];
          await waitFor(
            () =>
              single.latest(one).version === oneNow.version &&
              all.latest(many).version === manyNow.version,
            'the changes made while hidden',
          );
          await waitFor(() => single.state() === 'live' && all.state() === 'live', 'live again');
          if (transport === 'sse') {
            const resumed = proxy.requests
              .slice(requests)
              .filter((line) => line.startsWith('GET ') && line.includes('/events'));
            assert.ok(
              resumed.length === 2 && resumed.every((line) => line.includes('lastEventId=')),
              resumed.join('\n'),
            );
          }
        }
        assertIncreasing(single.versions(one));
        assertIncreasing(all.versions(many));
        assert.deepEqual(single.versions(one), [1, 3, 5]);
        assert.equal(all.resets, 0);
        assert.deepEqual(all.removed, []);
      },
    );
  }

  it('starts paused in a hidden page', { timeout: TIMEOUT }, async (t) => {
    page.visibilityState = 'hidden';
    const jobId = await createJob();
    const seen = recorder();
    const watch = watchJob(jobId, {
      ...seen.options,
      transport: 'poll',
      baseUrl: SERVER,
      pauseWhenHidden: true,
    });
    t.after(() => watch.close());
    assert.deepEqual(
      seen.states.map(({ state }) => state),
      ['paused'],
    );
    await sleep(ms(200));
    assert.deepEqual(seen.jobs, []);
    page.show('visible');
    await waitFor(() => seen.latest(jobId), 'the job once visible');
  });

  it('with a grace, pauses only a page that stays hidden that long', { timeout: TIMEOUT }, async (t) => {
    const proxy = await startProxy(SERVER);
    t.after(() => proxy.close());
    const jobId = await createJob();
    const seen = recorder();
    const options = { ...NODE, ...seen.options, baseUrl: proxy.url, pauseWhenHidden: ms(1_000) };
    const watch = watchJob(jobId, options);
    t.after(() => watch.close());
    await waitFor(() => seen.state() === 'live', 'live');
    const requests = proxy.requests.length;
    for (let glance = 0; glance < 5; glance += 1) {
      page.show('hidden'); // a quick look at another tab
      await sleep(ms(50));
      page.show('visible');
    }
    await sleep(ms(1_200));
    assert.equal(proxy.requests.length, requests, 'no reconnection for a glance');
    assert.ok(!seen.states.some(({ state }) => state === 'paused'));
    page.show('hidden');
    await waitFor(() => seen.state() === 'paused', 'paused once hidden a second');
    page.show('visible');
    await waitFor(() => seen.state() === 'live', 'live again');
  });

  it('waits out a Retry-After across a pause', { timeout: TIMEOUT }, async (t) => {
    const proxy = await startProxy(SERVER);
    t.after(() => proxy.close());
    const jobId = await createJob();
    const seen = recorder();
    proxy.busy(1, 2);
    const options = { ...seen.options, transport: 'poll', baseUrl: proxy.url, pauseWhenHidden: true };
    const watch = watchJob(jobId, options);
    t.after(() => watch.close());
    await waitFor(() => proxy.requests.length === 1, 'the first poll, answered 503');
    page.show('hidden');
    page.show('visible');
    await waitFor(() => seen.state() === 'live', 'live once the wait is over');
    const waited = proxy.times[1] - proxy.times[0];
    assert.ok(waited >= 1_950, `asked again ${waited} ms after Retry-After: 2`);
  });

  it('is off by default: a hidden page stays connected', { timeout: TIMEOUT }, async (t) => {
    const jobId = await createJob();
    const seen = recorder();
    const watch = watchJob(jobId, { ...seen.options, transport: 'poll', baseUrl: SERVER });
    t.after(() => watch.close());
    await waitFor(() => seen.state() === 'live', 'live');
    page.show('hidden');
    await updateJob(jobId, { progress: 40 });
    await waitFor(() => seen.latest(jobId).version === 2, 'the change while hidden');
  });
});
