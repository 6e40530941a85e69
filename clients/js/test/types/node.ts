// Type-checked (tsc --noEmit --strict, no DOM library: Node's types only) by
// tests/js/test_types.py: a Node 20 service watching jobs with the `ws` and `eventsource`
// packages. Never run.

import { EventSource } from 'eventsource';
import WebSocket from 'ws';
import { createJobStore, isTerminal, watchJob, watchJobs, type Job } from 'jobcast';

const baseUrl = process.env.JOBCAST_URL ?? 'http://127.0.0.1:8000';

async function readToken(): Promise<string> {
  const response = await fetch(`${baseUrl}/api/tokens`, {
    method: 'POST',
    headers: {
      Authorization: `Bearer ${process.env.JOBS_API_KEY}`,
      'Content-Type': 'application/json',
    },
    body: JSON.stringify({ owner: 'alice', ttl: 300 }),
  });
  return ((await response.json()) as { token: string }).token;
}

export function follow(jobId: string): Promise<Job> {
  return new Promise((resolve) => {
    watchJob(jobId, {
      baseUrl,
      EventSource,
      getToken: readToken,
      onJob: (job) => {
        console.log(`${job.status} ${job.progress}% ${job.message}`);
        if (isTerminal(job)) resolve(job);
      },
    });
  });
}

const all = watchJobs({
  baseUrl,
  transport: 'ws',
  WebSocket,
  onJob: (job) => console.log(job.jobId),
});
const polled = watchJobs({ baseUrl, transport: 'poll', pollInterval: 5_000, status: 'error' });
// exactOptionalPropertyTypes: an option that may be undefined is passed as it is.
const maybeOwner: string | undefined = process.env.JOBS_OWNER;
const alices = createJobStore({ baseUrl, transport: 'sse', owner: maybeOwner, token: undefined });
alices.close();
const lines = watchJob('job_abc', {
  baseUrl,
  transport: 'poll',
  onOutput: (chunks) => {
    for (const chunk of chunks) if (chunk.kind === 'log') process.stdout.write(`${chunk.data}\n`);
  },
});
lines.close();
const store = createJobStore({ baseUrl, transport: 'ws', WebSocket, jobType: 'llm_agent' });
store.subscribe(({ jobs, state }) => console.log(state, jobs.length));
all.close();
polled.close();
store.close();
