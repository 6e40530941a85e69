// A server that restarts (the memory backend forgets everything): the watch ends up exactly
// at the new server's state. pytest restarts the server when asked (restartServer()); a
// proxy keeps the address the client knows.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createJobStore, watchJobs } from 'jobcast';
import {
  NODE,
  SERVER,
  TRANSPORTS,
  createJob,
  ms,
  recorder,
  restartServer,
  settle,
  startProxy,
  updateJob,
  waitFor,
} from './helpers.js';

let server = SERVER;
after(() => settle({ base: server }));

describe('after a server restart', { concurrency: false }, () => {
  for (const transport of TRANSPORTS) {
    it(
      `resets over ${transport}: old jobs removed once the new snapshot is synced, new ones live`,
      { timeout: ms(60_000) },
      async (t) => {
        const proxy = await startProxy(server);
        t.after(() => proxy.close());
        const seen = recorder();
        const options = { ...NODE, transport, baseUrl: proxy.url, pollInterval: 100 };
        const watch = watchJobs({ ...options, ...seen.options });
        const store = createJobStore(options);
        const unsubscribe = store.subscribe(() => {});
        t.after(() => {
          watch.close();
          unsubscribe();
          store.close();
        });
        const old = [
          await createJob({ message: 'old 1' }, { base: server }),
          await createJob({ message: 'old 2' }, { base: server }),
        ];
        await waitFor(() => old.every((jobId) => seen.latest(jobId)), 'the old jobs');
        await waitFor(
          () => old.every((jobId) => store.getSnapshot().jobs.some((job) => job.jobId === jobId)),
          'the old jobs in the store',
        );
        const syncedBefore = seen.synced;

        await settle({ base: server }); // the old server's long-polls answered before it stops
        server = await restartServer();
        proxy.retarget(server);
        proxy.cut();
        const fresh = await createJob({ message: 'new' }, { base: server });

        await waitFor(() => seen.latest(fresh) && seen.synced > syncedBefore, 'the new snapshot');
        await waitFor(
          () => old.every((jobId) => seen.removed.includes(jobId)),
          'the old jobs removed',
        );
        if (transport !== 'poll') assert.equal(seen.resets, 1, 'one reset, for the void cursor');
        await updateJob(fresh, { progress: 50 }, { base: server });
        await waitFor(() => seen.latest(fresh).version === 2, 'a live change on the new server');
        await waitFor(() => {
          const { jobs } = store.getSnapshot();
          return jobs.length === 1 && jobs[0].jobId === fresh && jobs[0].version === 2;
        }, 'the store to hold exactly the new server state');
        assert.equal(seen.state(), 'live');
        assert.equal(watch.transport, transport);
      },
    );
  }
});
