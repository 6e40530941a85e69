// A cancel request and a deletion, as watches and stores see them: a cancel is a new
// version with cancelRequested; a deleted job is removed, and a one-job watch then ends
// (its stream says `removed` and closes: reconnecting would only be told 410).

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createJobStore, watchJob, watchJobs } from 'jobcast';
import {
  NODE,
  SERVER,
  TRANSPORTS,
  cancelJob,
  createJob,
  deleteJob,
  ms,
  recorder,
  settle,
  sleep,
  waitFor,
  watchThroughProxy,
} from './helpers.js';

const TIMEOUT = ms(30_000);
after(() => settle());

/** Subscribes until the test ends, keeping every snapshot the listener got. */
function follow(t, store) {
  const snapshots = [];
  const unsubscribe = store.subscribe((snapshot) => snapshots.push(snapshot));
  t.after(() => {
    unsubscribe();
    store.close();
  });
  return { snapshots, last: () => snapshots.at(-1) };
}

for (const transport of TRANSPORTS) {
  describe(`over ${transport}`, { concurrency: false }, () => {
    it(
      'watchJob: a cancel is a change like any other; a deletion is told once and ends the watch',
      { timeout: TIMEOUT },
      async (t) => {
        const jobId = await createJob({ jobType: 'llm_agent' });
        const { proxy, seen, watch } = await watchThroughProxy(t, jobId, { transport });
        await waitFor(() => seen.synced && seen.state() === 'live', 'live');

        await cancelJob(jobId, { reason: 'the user closed the tab' });
        await waitFor(() => seen.latest(jobId).version === 2, 'the cancel');
        assert.equal(seen.latest(jobId).cancelRequested, true);
        assert.equal(seen.latest(jobId).cancelReason, 'the user closed the tab');
        assert.equal(seen.latest(jobId).status, 'queued');
        assert.equal(watch.closed, false, 'a cancel request is no ending');

        await deleteJob(jobId);
        await waitFor(() => watch.closed, 'the watch to end');
        assert.deepEqual(seen.removed, [jobId]);
        assert.ok(
          seen.states.every(({ state }) => state !== 'reconnecting'),
          JSON.stringify(seen.states),
        );
        const requests = proxy.requests.length;
        await sleep(ms(1_000));
        assert.equal(proxy.requests.length, requests, proxy.requests.join('\n'));
        assert.deepEqual(seen.removed, [jobId]);
      },
    );

    it(
      'watchJobs: sees the cancel, then the deleted job removed, and stays live',
      { timeout: TIMEOUT },
      async (t) => {
        const jobId = await createJob({ jobType: 'file_processing' });
        const seen = recorder();
        const watch = watchJobs({
          ...NODE,
          ...seen.options,
          transport,
          baseUrl: SERVER,
          jobType: 'file_processing',
          pollInterval: 100,
        });
        t.after(() => watch.close());
        await waitFor(() => seen.synced, 'the snapshot');

        await cancelJob(jobId);
        await waitFor(() => seen.latest(jobId).cancelRequested, 'the cancel');
        assert.equal(seen.latest(jobId).cancelReason, undefined);
        await deleteJob(jobId);
        await waitFor(() => seen.removed.includes(jobId), 'the removal');
        const later = await createJob({ jobType: 'file_processing' });
        await waitFor(() => seen.latest(later), 'a job after it');
        assert.equal(seen.state(), 'live');
        assert.deepEqual(seen.removed, [jobId]);
      },
    );

    it(
      'a one-job store: the cancel, then no job, synced and closed once deleted',
      { timeout: TIMEOUT },
      async (t) => {
        const jobId = await createJob();
        const store = createJobStore({ ...NODE, jobId, transport, baseUrl: SERVER });
        const { snapshots, last } = follow(t, store);
        await waitFor(() => last().job && last().state === 'live', 'the job, live');

        await cancelJob(jobId, { reason: 'not needed' });
        await waitFor(() => last().job.cancelRequested, 'the cancel');
        assert.equal(last().job.cancelReason, 'not needed');
        assert.ok(Object.isFrozen(last().job));

        await deleteJob(jobId);
        await waitFor(() => last().closed, 'closed');
        assert.equal(last().job, undefined);
        assert.deepEqual(last().jobs, []);
        assert.equal(last().synced, true);
        assert.ok(snapshots.every((snapshot) => snapshot.state !== 'reconnecting'));
      },
    );

    it('a store of many: the deleted job leaves its jobs', { timeout: TIMEOUT }, async (t) => {
      const kept = await createJob({ jobType: 'document_analysis' });
      const deleted = await createJob({ jobType: 'document_analysis' });
      const store = createJobStore({
        ...NODE,
        transport,
        baseUrl: SERVER,
        jobType: 'document_analysis',
        pollInterval: 100,
      });
      const { last } = follow(t, store);
      const ids = () => last().jobs.map((job) => job.jobId);
      await waitFor(() => last().synced && ids().includes(deleted), 'the snapshot');

      await deleteJob(deleted);
      await waitFor(() => !ids().includes(deleted), 'the removal');
      assert.ok(ids().includes(kept));
      assert.equal(last().closed, false);
      assert.equal(last().state, 'live');
    });
  });
}
