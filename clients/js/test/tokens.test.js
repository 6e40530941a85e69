// A protected server (JOBS_API_KEY): read tokens, their expiry, and getToken refreshing them.
// Tokens minted with "ttl": 1 live a second at most, so a watch meets many expiries.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { watchJob, watchJobs } from 'jobcast';
import {
  NODE,
  SERVER,
  TRANSPORTS,
  assertIncreasing,
  completeJob,
  createJob,
  deleteJob,
  mintToken,
  ms,
  recorder,
  settle,
  sleep,
  updateJob,
  waitFor,
} from './helpers.js';

const TIMEOUT = ms(60_000);
after(() => settle());

/** A getToken that mints a fresh `ttl`-second token for `scope` on every call, and counts. */
function freshTokens(scope, ttl = 1) {
  const getToken = async () => {
    getToken.calls += 1;
    return mintToken(scope, ttl);
  };
  getToken.calls = 0;
  return getToken;
}

describe('getToken', { concurrency: true }, () => {
  for (const transport of TRANSPORTS) {
    it(
      `refreshes short-lived tokens over ${transport}: no version missed or repeated, no fallback`,
      { timeout: TIMEOUT },
      async (t) => {
        const owner = `alice-${transport}`;
        const jobId = await createJob({ owner, message: 'queued' });
        const single = recorder();
        const all = recorder();
        const options = { ...NODE, transport, baseUrl: SERVER, pollInterval: 100 };
        const forJob = freshTokens({ jobId });
        const forOwner = freshTokens({ owner });
        const watches = [
          watchJob(jobId, { ...options, ...single.options, getToken: forJob }),
          watchJobs({ ...options, ...all.options, getToken: forOwner }),
        ];
        t.after(() => watches.forEach((watch) => watch.close()));

        // Long enough for several tokens to expire under both watches (a one-second token
        // lasts one to two seconds: its expiry is a whole second, rounded up).
        for (let progress = 10; progress <= 90; progress += 10) {
          await updateJob(jobId, { status: 'processing', progress, message: `step ${progress}` });
          await sleep(ms(700));
        }
        await completeJob(jobId);
        await waitFor(() => watches[0].closed, 'the one-job watch to end at the terminal state');
        await waitFor(
          () => all.latest(jobId)?.status === 'completed',
          'the terminal state in the all-jobs watch',
        );

        for (const [seen, getToken] of [
          [single, forJob],
          [all, forOwner],
        ]) {
          assertIncreasing(seen.versions(jobId));
          assert.ok(getToken.calls >= 3, `getToken called ${getToken.calls} times`);
          assert.ok(
            !seen.states.some(({ state }) => state === 'unauthorized'),
            JSON.stringify(seen.states),
          );
        }
        assert.equal(single.latest(jobId).version, 11);
        assert.ok(
          all.jobs.every((job) => job.owner === owner),
          "only the owner token's jobs",
        );
        assert.equal(watches[1].transport, transport, 'no fallback to polling');
        // Its 1 s tokens keep expiring: it may be reconnecting this instant, and is live
        // again with the next one (never unauthorized: checked above).
        await waitFor(() => watches[1].state === 'live', 'the all-jobs watch live again');
        assert.equal(watches[1].transport, transport, 'no fallback to polling');
      },
    );
  }
});

describe('a token running out under a live watch', { concurrency: true }, () => {
  for (const transport of TRANSPORTS) {
    it(`is handed over to the next one over ${transport}, the watch live throughout`, { timeout: TIMEOUT }, async (t) => {
      const jobId = await createJob({ message: 'queued' });
      const seen = recorder();
      const getToken = freshTokens({ jobId }, 2);
      const options = { ...NODE, ...seen.options, transport, baseUrl: SERVER, pollInterval: 100 };
      const watch = watchJob(jobId, { ...options, getToken });
      t.after(() => watch.close());
      await waitFor(() => watch.state === 'live', 'live');
      for (let progress = 10; progress <= 60; progress += 10) {
        await updateJob(jobId, { status: 'processing', progress });
        await sleep(ms(1_000));
      }
      await waitFor(() => seen.latest(jobId)?.version === 7, 'every change');
      assert.ok(getToken.calls >= 3, `getToken called ${getToken.calls} times`);
      const states = seen.states.map(({ state }) => state);
      assert.deepEqual(states, ['connecting', 'live'], 'a renewal is no outage to tell');
    });
  }
});

describe('a refused credential', { concurrency: true }, () => {
  for (const transport of TRANSPORTS) {
    it(
      `ends the watch as unauthorized over ${transport} once a static token expires`,
      { timeout: TIMEOUT },
      async (t) => {
        const jobId = await createJob({ owner: 'bob' });
        const seen = recorder();
        const token = await mintToken({ jobId }, 1);
        const watch = watchJob(jobId, {
          ...NODE,
          ...seen.options,
          transport,
          baseUrl: SERVER,
          token,
        });
        t.after(() => watch.close());
        await waitFor(() => watch.closed, 'the watch to end', ms(15_000));
        const last = seen.states.at(-1);
        assert.equal(last.state, 'unauthorized');
        assert.equal(last.problem.status, 401);
        assert.match(last.problem.detail, /expired/);
        assert.deepEqual(seen.versions(jobId), [1]);
      },
    );

    it(
      `asks getToken once more after a 401 over ${transport}, and stops when it gives the same token`,
      { timeout: TIMEOUT },
      async (t) => {
        const jobId = await createJob({ owner: 'bob' });
        const seen = recorder();
        const token = await mintToken({ jobId }, 1);
        let calls = 0;
        const getToken = () => {
          calls += 1;
          return token; // sync works too
        };
        const watch = watchJob(jobId, {
          ...NODE,
          ...seen.options,
          transport,
          baseUrl: SERVER,
          getToken,
        });
        t.after(() => watch.close());
        await waitFor(() => watch.closed, 'the watch to end', ms(15_000));
        assert.equal(seen.state(), 'unauthorized');
        assert.ok(calls >= 2, `getToken called ${calls} times`);
        const before = calls;
        await sleep(ms(1_000));
        assert.equal(calls, before, 'no more attempts');
      },
    );

    it(
      `ends the watch as forbidden over ${transport} when the token does not cover the job`,
      { timeout: TIMEOUT },
      async (t) => {
        const jobId = await createJob({ owner: 'carol' });
        const seen = recorder();
        const token = await mintToken({ owner: 'mallory' });
        const watch = watchJob(jobId, {
          ...NODE,
          ...seen.options,
          transport,
          baseUrl: SERVER,
          token,
        });
        t.after(() => watch.close());
        await waitFor(() => watch.closed, 'the watch to end');
        const last = seen.states.at(-1);
        assert.equal(last.state, 'forbidden');
        assert.equal(last.problem.status, 403);
        assert.deepEqual(seen.jobs, []);
      },
    );
  }

  it('tries again later when getToken throws', { timeout: TIMEOUT }, async (t) => {
    const logged = [];
    t.mock.method(console, 'error', (error) => logged.push(error));
    const jobId = await createJob({ owner: 'dave' });
    const seen = recorder();
    let calls = 0;
    const getToken = async () => {
      calls += 1;
      if (calls === 1) throw new Error('the token service is down');
      return mintToken({ jobId });
    };
    const watch = watchJob(jobId, {
      ...seen.options,
      transport: 'poll',
      baseUrl: SERVER,
      getToken,
    });
    t.after(() => watch.close());
    await waitFor(() => seen.latest(jobId), 'the job, with the second token');
    assert.deepEqual(seen.states.map(({ state }) => state).slice(0, 2), [
      'connecting',
      'reconnecting',
    ]);
    assert.equal(logged[0].message, 'the token service is down');
  });
});

describe('an owner token, told 403 for a job it was reading', { concurrency: true }, () => {
  // The server never tells an owner token which ids exist: a job deleted is a 403 to it.
  for (const transport of TRANSPORTS) {
    it(`ends a one-job watch as gone over ${transport}, not as refused`, { timeout: TIMEOUT }, async (t) => {
      const owner = `erin-${transport}`;
      const jobId = await createJob({ owner });
      await updateJob(jobId, { status: 'processing', progress: 20 });
      const seen = recorder();
      const watch = watchJob(jobId, {
        ...NODE,
        ...seen.options,
        transport,
        baseUrl: SERVER,
        pollInterval: 100,
        token: await mintToken({ owner }),
      });
      t.after(() => watch.close());
      await waitFor(() => seen.latest(jobId)?.version === 2, 'the job, processing');
      await deleteJob(jobId);
      await waitFor(() => watch.closed, 'the watch to end');
      assert.deepEqual(seen.removed, [jobId]);
      assert.equal(seen.state(), 'closed');
    });
  }

  it('drops it from a polled list with a status filter', { timeout: TIMEOUT }, async (t) => {
    const owner = 'frank';
    const [kept, deleted] = [await createJob({ owner }), await createJob({ owner })];
    await updateJob(kept, { status: 'processing' });
    await updateJob(deleted, { status: 'processing' });
    const seen = recorder();
    const watch = watchJobs({
      ...seen.options,
      transport: 'poll',
      baseUrl: SERVER,
      pollInterval: 100,
      status: 'processing',
      owner,
      token: await mintToken({ owner }),
    });
    t.after(() => watch.close());
    await waitFor(() => seen.latest(kept) && seen.latest(deleted), 'both jobs');
    await deleteJob(deleted);
    await waitFor(() => seen.removed.includes(deleted), 'the deleted job removed');
    assert.deepEqual(seen.removed, [deleted]);
    assert.equal(watch.closed, false);
  });
});
