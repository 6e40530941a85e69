// createJobStore: frozen snapshots whose identity changes exactly when something changed.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createJobStore } from 'jobcast';
import {
  NODE,
  SERVER,
  completeJob,
  createJob,
  ms,
  settle,
  sleep,
  updateJob,
  waitFor,
} from './helpers.js';

const TIMEOUT = ms(30_000);
after(() => settle());

/** Subscribes, keeping every snapshot the listener got. */
function follow(t, store) {
  const snapshots = [];
  const unsubscribe = store.subscribe((snapshot) => snapshots.push(snapshot));
  t.after(() => {
    unsubscribe();
    store.close();
  });
  return { snapshots, unsubscribe, last: () => snapshots.at(-1) };
}

describe('createJobStore', () => {
  it('does nothing until subscribed, and its first snapshot is frozen and stable', () => {
    const store = createJobStore({ baseUrl: 'http://127.0.0.1:9' });
    const first = store.getSnapshot();
    assert.equal(store.getSnapshot(), first);
    assert.ok(
      Object.isFrozen(first) && Object.isFrozen(first.jobs) && Object.isFrozen(first.output),
    );
    assert.deepEqual(
      { ...first },
      {
        jobs: [],
        job: undefined,
        state: 'connecting',
        transport: 'sse',
        problem: undefined,
        synced: false,
        closed: false,
        output: [],
        outputOffset: 0,
      },
    );
    store.close();
  });

  for (const transport of ['sse', 'ws', 'poll']) {
    it(
      `drops a job that leaves its status filter (${transport})`,
      { timeout: TIMEOUT },
      async (t) => {
        const store = createJobStore({
          ...NODE,
          transport,
          baseUrl: SERVER,
          status: 'processing',
          pollInterval: 100,
        });
        const { last } = follow(t, store);
        await waitFor(() => last().synced && last().state === 'live', 'synced and live');
        const jobId = await createJob({ message: 'queued' });
        await updateJob(jobId, { status: 'processing', progress: 10 });
        await waitFor(() => last().jobs.some((job) => job.jobId === jobId), 'the job, processing');
        await completeJob(jobId);
        await waitFor(
          () => !last().jobs.some((job) => job.jobId === jobId),
          'the job gone once it completed',
        );
        assert.ok(last().jobs.every((job) => job.status === 'processing'));
      },
    );
  }

  for (const transport of ['sse', 'ws', 'poll']) {
    it(
      `changes identity exactly when something changed (${transport})`,
      { timeout: TIMEOUT },
      async (t) => {
        const older = await createJob({
          jobType: 'llm_agent',
          metadata: { step: { name: 'plan' } },
        });
        const newer = await createJob({ jobType: 'llm_agent' });
        const store = createJobStore({
          ...NODE,
          transport,
          baseUrl: SERVER,
          jobType: 'llm_agent',
          pollInterval: 100,
        });
        const { snapshots, last } = follow(t, store);
        assert.equal(
          snapshots[0],
          store.getSnapshot(),
          'the listener hears the current snapshot at once',
        );

        await waitFor(() => last().synced && last().state === 'live', 'synced and live');
        const live = last();
        assert.equal(store.getSnapshot(), live);
        assert.equal(live.transport, transport);
        const ids = live.jobs.map((job) => job.jobId);
        assert.ok(ids.indexOf(newer) < ids.indexOf(older), 'newest first');
        const untouched = live.jobs.find((job) => job.jobId === older);
        assert.ok(Object.isFrozen(untouched) && Object.isFrozen(untouched.metadata.step));
        assert.throws(() => {
          untouched.metadata.step.name = 'changed';
        }, TypeError);

        // Nothing changes (polling goes on, a job of another type changes): the same snapshot.
        const count = snapshots.length;
        await updateJob(await createJob({ jobType: 'generic' }), { progress: 5 });
        await sleep(ms(500));
        assert.equal(snapshots.length, count);
        assert.equal(store.getSnapshot(), live);

        // One job changes: a new snapshot, a new object for it, the same object for the rest.
        await updateJob(newer, { progress: 30, message: 'thinking' });
        await waitFor(
          () => last().jobs.find((job) => job.jobId === newer).version === 2,
          'the change',
        );
        const changed = last();
        assert.notEqual(changed, live);
        assert.notEqual(changed.jobs, live.jobs);
        assert.equal(
          changed.jobs.find((job) => job.jobId === older),
          untouched,
        );
        assert.equal(changed.jobs.length, live.jobs.length);
        assert.equal(changed.state, 'live');
        for (let i = 1; i < snapshots.length; i += 1)
          assert.notEqual(snapshots[i], snapshots[i - 1]);
      },
    );
  }

  it(
    'holds one job: job is set, and the store closes at its terminal state',
    { timeout: TIMEOUT },
    async (t) => {
      const jobId = await createJob({ jobType: 'file_processing' });
      const store = createJobStore({ ...NODE, jobId, baseUrl: SERVER, transport: 'ws' });
      const { last } = follow(t, store);
      await waitFor(() => last().job, 'the job');
      assert.equal(last().job.jobId, jobId);
      assert.deepEqual(last().jobs, [last().job]);
      assert.equal(last().synced, true);
      await completeJob(jobId, { documentId: 'doc_9' });
      await waitFor(() => last().closed, 'closed');
      assert.equal(last().job.status, 'completed');
      assert.equal(last().job.documentId, 'doc_9');
    },
  );

  it(
    'says when a one-job store has nothing to hold: synced, closed, no job',
    { timeout: TIMEOUT },
    async (t) => {
      const store = createJobStore({
        jobId: 'job_neverExisted000000',
        baseUrl: SERVER,
        transport: 'poll',
      });
      const { last } = follow(t, store);
      await waitFor(() => last().closed, 'closed');
      assert.equal(last().job, undefined);
      assert.equal(last().synced, true);
    },
  );

  it(
    'pauses with no subscriber and resumes from where it was: nothing missed or repeated',
    { timeout: TIMEOUT },
    async (t) => {
      const jobId = await createJob({ jobType: 'document_analysis' });
      const store = createJobStore({ ...NODE, jobId, baseUrl: SERVER });
      t.after(() => store.close());
      const versions = [];
      const listen = (snapshot) => {
        if (snapshot.job && snapshot.job.version !== versions.at(-1))
          versions.push(snapshot.job.version);
      };
      let unsubscribe = store.subscribe(listen);
      await waitFor(() => store.getSnapshot().state === 'live', 'live');

      // React's StrictMode: unsubscribed and subscribed again at once: the connection stays.
      unsubscribe();
      unsubscribe = store.subscribe(listen);
      await sleep(ms(100));
      assert.equal(store.getSnapshot().state, 'live');

      unsubscribe();
      await waitFor(() => store.getSnapshot().state === 'paused', 'paused');
      await updateJob(jobId, { progress: 10 });
      await updateJob(jobId, { progress: 20 });
      await sleep(ms(200));
      assert.equal(store.getSnapshot().job.version, 1, 'nothing arrives while paused');

      unsubscribe = store.subscribe(listen);
      t.after(unsubscribe);
      await waitFor(() => store.getSnapshot().job.version === 3, 'the latest, after resuming');
      await updateJob(jobId, { progress: 30 });
      await waitFor(() => store.getSnapshot().job.version === 4, 'live again');
      assert.deepEqual(versions, [1, 3, 4]);
    },
  );

  it(
    'stops at close(): closed, and no listener is called after',
    { timeout: TIMEOUT },
    async (t) => {
      const jobId = await createJob();
      const store = createJobStore({ jobId, baseUrl: SERVER, transport: 'poll' });
      const { snapshots, last } = follow(t, store);
      await waitFor(() => last().job, 'the job');
      store.close();
      await waitFor(() => last().closed, 'closed');
      const count = snapshots.length;
      await updateJob(jobId, { progress: 50 });
      await sleep(ms(300));
      assert.equal(snapshots.length, count);
      assert.equal(store.getSnapshot().job.version, 1);
    },
  );

  it('keeps telling the other listeners when one throws', { timeout: TIMEOUT }, async (t) => {
    const logged = [];
    t.mock.method(console, 'error', (error) => logged.push(error));
    const jobId = await createJob();
    const store = createJobStore({ jobId, baseUrl: SERVER, transport: 'poll' });
    const bad = store.subscribe(() => {
      throw new Error('a broken component');
    });
    const { last } = follow(t, store);
    t.after(bad);
    await waitFor(() => last().job, 'the job');
    assert.ok(
      logged.length >= 2 && logged.every((error) => error.message === 'a broken component'),
    );
  });

  it(
    'lets one function subscribe twice, each unsubscribing once',
    { timeout: TIMEOUT },
    async (t) => {
      const jobId = await createJob();
      const store = createJobStore({ jobId, baseUrl: SERVER, transport: 'poll' });
      t.after(() => store.close());
      const calls = [];
      const listener = (snapshot) => calls.push(snapshot);
      const first = store.subscribe(listener);
      const second = store.subscribe(listener);
      first();
      first(); // twice is harmless
      await waitFor(() => store.getSnapshot().job, 'the job');
      await sleep(ms(50));
      assert.equal(calls.at(-1), store.getSnapshot(), 'the second subscription still hears');
      second();
    },
  );
});
