// A server's all-jobs snapshot budget (JOBS_SNAPSHOT_RATE = 0.2 for this file: two at
// once, then one every five seconds per client address) is waited out, not polled around.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { watchJobs } from 'jobcast';
import { NODE, SERVER, createJob, ms, recorder, settle, waitFor } from './helpers.js';

after(() => settle());

describe('past the snapshot budget', { concurrency: false }, () => {
  for (const transport of ['sse', 'ws']) {
    it(`a watch over ${transport} waits for the stream instead of polling`, async (t) => {
      const jobId = await createJob();
      const seen = [recorder(), recorder(), recorder()];
      const watches = seen.map((one) =>
        watchJobs({ ...NODE, ...one.options, transport, baseUrl: SERVER }),
      );
      t.after(() => watches.forEach((watch) => watch.close()));
      await waitFor(
        () => seen.every((one) => one.state() === 'live' && one.latest(jobId)),
        'every watch live, with the job',
        ms(40_000),
      );
      for (const one of seen) {
        const transports = new Set(one.states.map((change) => change.transport));
        assert.deepEqual([...transports], [transport], JSON.stringify(one.states));
      }
      assert.ok(watches.every((watch) => watch.transport === transport));
    });
  }
});
