// A heartbeat of four seconds: its silence limit (2.5 heartbeats, ten seconds) is the one
// a stream has before it says how often its heartbeats come (JOBS_HEARTBEAT=4).

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createJob, ms, settle, updateJob, waitFor, watchThroughProxy } from './helpers.js';

after(() => settle());

describe('an SSE stream whose heartbeat is four seconds', () => {
  it('is watched too: its silence is noticed, and it resumes', { timeout: ms(60_000) }, async (t) => {
    const jobId = await createJob();
    const { proxy, seen } = await watchThroughProxy(t, jobId, { transport: 'sse' });
    await waitFor(() => seen.state() === 'live' && seen.latest(jobId), 'live, with the job');
    proxy.hold(); // nothing passes on the open connection, and nothing closes
    proxy.hold(false); // new connections get through
    await updateJob(jobId, { progress: 40 });
    await waitFor(() => seen.state() !== 'live', 'the silence noticed', ms(20_000));
    // The probe before streaming again may deliver the change before the stream is live.
    await waitFor(
      () => seen.state() === 'live' && seen.latest(jobId)?.version === 2,
      'resumed, with the change',
      ms(20_000),
    );
    assert.deepEqual(seen.versions(jobId), [1, 2]);
  });
});
