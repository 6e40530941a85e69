// Type-checked (tsc --noEmit --strict, DOM library) by tests/js/test_types.py: every export of
// jobcast and jobcast/react, used as a browser or React app would. Never run.

import {
  createJobStore,
  isTerminal,
  watchJob,
  watchJobs,
  type ConnectionOptions,
  type EventSourceConstructor,
  type EventSourceLike,
  type Job,
  type JobFilter,
  type JobStatus,
  type JobStore,
  type JobStoreOptions,
  type JobStoreSnapshot,
  type JobType,
  type JsonValue,
  type MessageEventLike,
  type OutputChunk,
  type OutputOptions,
  type Problem,
  type StateChange,
  type TerminalJob,
  type TokenSource,
  type Transport,
  type WatchCallbacks,
  type WatchHandle,
  type WatchJobOptions,
  type WatchJobsOptions,
  type WatchState,
  type WebSocketConstructor,
  type WebSocketLike,
} from 'jobcast';
import { useJob, useJobs, type UseJobOptions } from 'jobcast/react';
import { useSyncExternalStore, type ReactElement } from 'react';

const statuses: JobStatus[] = ['queued', 'processing', 'completed', 'error'];
const types: JobType[] = ['file_processing', 'document_analysis', 'llm_agent', 'generic'];
const transports: Transport[] = ['sse', 'ws', 'poll'];
const states: WatchState[] = [
  'connecting',
  'live',
  'reconnecting',
  'offline',
  'paused',
  'unauthorized',
  'forbidden',
];

function describeJob(job: Job): string {
  const size: number | undefined = job.outputSize;
  const cancelled: boolean | undefined = job.cancelRequested;
  const later: unknown = job.someFieldANewerServerAdds;
  const meta: JsonValue = job.metadata;
  const done: string = job.documentId ?? job.error ?? '';
  return (
    `${job.jobId} ${job.jobType} ${job.status} ${job.progress}% ${job.message} v${job.version} ` +
    `${job.createdAt} ${job.updatedAt} ${job.timestamp} ${job.owner ?? ''} ${size} ${cancelled} ` +
    `${job.cancelReason ?? ''} ${String(later)} ${JSON.stringify(meta)} ${done}`
  );
}

function finished(job: Job): TerminalJob | null {
  if (isTerminal(job)) {
    const status: 'completed' | 'error' = job.status;
    return status === 'completed' ? job : job;
  }
  return null;
}

const getToken: TokenSource = async () => {
  const response = await fetch('/my-app/jobcast-token');
  return response.ok ? ((await response.json()) as { token: string }).token : null;
};
const syncToken: TokenSource = () => sessionStorage.getItem('jobcast-token');

const callbacks: WatchCallbacks = {
  onJob: (job) => console.log(describeJob(job), finished(job)),
  onRemoved: (jobId: string) => console.log('gone', jobId),
  onReset: () => console.log('reset'),
  onState: ({ state, transport, problem }: StateChange) => {
    const refused: Problem | undefined = problem;
    console.log(state, transport, refused?.status, refused?.detail);
  },
  onSynced: () => console.log('synced'),
};

const Source: EventSourceConstructor = EventSource;
const Socket: WebSocketConstructor = WebSocket;
const source: EventSourceLike = new Source('/api/jobs/events');
source.addEventListener('job', (event: MessageEventLike) =>
  console.log(event.data, event.lastEventId),
);
source.close();
const socket: WebSocketLike = new Socket('ws://localhost/api/jobs/ws');
console.log(socket.readyState);

const connection: ConnectionOptions = {
  transport: 'ws',
  baseUrl: new URL('https://jobs.example.com/'),
  getToken,
  fallback: false,
  pollInterval: 2000,
  pauseWhenHidden: true,
  EventSource,
  WebSocket,
};
const one: WatchJobOptions = { ...connection, ...callbacks, token: 'read-token' };
const filter: JobFilter = { jobType: 'llm_agent', status: 'processing' };
const many: WatchJobsOptions = { ...connection, ...callbacks, ...filter, getToken: syncToken };
let text = '';
const streamed: WatchJobOptions = {
  ...connection,
  output: true,
  onOutput: (chunks: readonly OutputChunk[]) => {
    for (const { offset, data, kind } of chunks) {
      if (kind === 'token' && typeof data === 'string') text += data;
      else console.log(offset, kind ?? '', JSON.stringify(data));
    }
  },
};
const handles: WatchHandle[] = [
  watchJob('job_abc', one),
  watchJobs(many),
  watchJobs(),
  watchJob('job_abc', streamed),
  watchJob('job_abc', { onOutput: (chunks) => console.log(chunks.length) }),
];
for (const handle of handles) {
  const state: WatchState = handle.state;
  const transport: Transport = handle.transport;
  const closed: boolean = handle.closed;
  const held: number = handle.outputOffset;
  console.log(state, transport, closed, held, text);
  handle.close();
}

const storeOptions: JobStoreOptions = { jobId: 'job_abc', transport: 'sse' };
const store: JobStore = createJobStore(storeOptions);
const unsubscribe: () => void = store.subscribe((snapshot: JobStoreSnapshot) => {
  const jobs: readonly Job[] = snapshot.jobs;
  const job: Job | undefined = snapshot.job;
  const problem: Problem | undefined = snapshot.problem;
  console.log(
    jobs.length,
    job?.progress,
    snapshot.state,
    snapshot.transport,
    problem,
    snapshot.synced,
    snapshot.closed,
  );
});
unsubscribe();
store.close();
createJobStore({ ...filter, pauseWhenHidden: true }).getSnapshot();

const keep: OutputOptions = { output: true, keepOutput: 200 };
const tail = createJobStore({ jobId: 'job_abc', ...keep }).getSnapshot();
const chunks: readonly OutputChunk[] = tail.output;
const arrived: number = tail.outputOffset;
console.log(chunks.map((chunk) => chunk.data).join(''), arrived - chunks.length, 'dropped');

/** A store used directly with React, as the hooks do. */
export function JobCount(): ReactElement {
  const [store] = [createJobStore()];
  const { jobs } = useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
  return <span>{jobs.length}</span>;
}

export function Progress({ jobId }: { jobId: string | null }): ReactElement {
  const options: UseJobOptions = {
    transport: 'ws',
    getToken: async () => 'fresh',
    pauseWhenHidden: true,
  };
  const { job, state, problem } = useJob(jobId, options);
  if (problem) return <p role="alert">{problem.detail}</p>;
  if (!job) return <p>{state}</p>;
  return (
    <progress max={100} value={job.progress}>
      {job.message}
    </progress>
  );
}

/** An LLM agent's answer as it streams: the token chunks, joined. */
export function Answer({ jobId }: { jobId: string }): ReactElement {
  const { job, output, outputOffset } = useJob(jobId, { output: true, keepOutput: Infinity });
  const tokens = output.filter((chunk) => chunk.kind === 'token').map((chunk) => chunk.data);
  return (
    <p data-chunks={outputOffset} aria-busy={!isTerminal(job)}>
      {tokens.join('')}
    </p>
  );
}

export function JobList(): ReactElement {
  const { jobs, synced } = useJobs(
    { status: 'processing' },
    { baseUrl: 'https://jobs.example.com' },
  );
  const all = useJobs();
  if (!synced) return <p>Loading…</p>;
  return (
    <ul data-count={all.jobs.length}>
      {jobs.map((job) => (
        <li key={job.jobId}>{describeJob(job)}</li>
      ))}
    </ul>
  );
}

// The types refuse what the server would: each line below must be an error.
// @ts-expect-error: not a status
const wrongStatus: JobStatus = 'done';
// @ts-expect-error: not a transport
watchJobs({ transport: 'http' });
// @ts-expect-error: not a job type
watchJobs({ jobType: 'video' });
// @ts-expect-error: jobs are read-only
((job: Job) => (job.progress = 5))(null as unknown as Job);
// @ts-expect-error: snapshots are read-only
((snapshot: JobStoreSnapshot) => (snapshot.state = 'live'))(null as unknown as JobStoreSnapshot);
// @ts-expect-error: a job id is a string
watchJob(42);
// @ts-expect-error: getToken returns a token, not an object
watchJob('job_abc', { getToken: () => ({ token: 'x' }) });
// @ts-expect-error: output is one job's: watchJobs has none
watchJobs({ onOutput: () => {} });
// @ts-expect-error: chunks are read-only
((chunk: OutputChunk) => (chunk.offset = 1))(null as unknown as OutputChunk);
// @ts-expect-error: how many chunks to keep is a number
createJobStore({ jobId: 'job_abc', output: true, keepOutput: 'all' });
console.log(statuses, types, transports, states, wrongStatus);
