// A small React app on jobcast/react, for tests/browser/test_react.py: bundled with esbuild
// (React included, nothing from a CDN) and served from an origin of its own. The query
// string says what to watch: ?server=<Jobcast URL>&job=<id>&transport=ws&pause=1, or no
// job for the list of every job (&owner=<owner>: of that owner's); &output=<chunks to keep>
// follows the job's output too; &copies=<n> renders the job's view n times (each with
// its own useJob), and window.showCopies(n) changes how many.

import { StrictMode, useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { useJob, useJobs } from 'jobcast/react';

const params = new URLSearchParams(location.search);
const options = {
  baseUrl: params.get('server'),
  transport: params.get('transport') ?? 'sse',
  pauseWhenHidden: params.has('pause'),
  token: params.get('token') ?? undefined,
  // &gettoken: the token (if any) through getToken, as a page that renews its tokens would.
  ...(params.has('gettoken') ? { getToken: async () => params.get('token') ?? '' } : {}),
};
const outputOptions = params.has('output')
  ? { output: true, keepOutput: Number(params.get('output')) }
  : {};
// Every job version the page rendered, in order, and the length of every list it
// rendered: the tests read them.
window.jobVersions = [];
window.listLengths = [];

function Job({ jobId, copy = 0 }) {
  const { job, state, transport, synced, closed, output, outputOffset } = useJob(jobId, {
    ...options,
    ...outputOptions,
  });
  useEffect(() => {
    if (job && job.version !== window.jobVersions.at(-1)) window.jobVersions.push(job.version);
  }, [job]);
  return (
    <section
      id={copy ? `job-${copy}` : 'job'}
      className="job"
      data-state={state}
      data-transport={transport}
      data-synced={synced}
      data-closed={closed}
      data-version={job?.version ?? ''}
      data-status={job?.status ?? ''}
    >
      <h1>{job ? job.jobType : 'Connecting…'}</h1>
      <p id="message">{job?.message}</p>
      <progress id="progress" max={100} value={job?.progress ?? 0} />
      <span id="percent">{job ? `${job.progress}%` : ''}</span>
      {job?.status === 'completed' && <p id="document">{job.documentId}</p>}
      <p id="output" data-offset={outputOffset} data-kept={output.length}>
        {output.map((chunk) => String(chunk.data)).join('')}
      </p>
    </section>
  );
}

function Jobs() {
  const filter = params.has('owner') ? { owner: params.get('owner') } : {};
  const { jobs, state, synced } = useJobs(filter, options);
  useEffect(() => {
    window.listLengths.push(jobs.length);
  }, [jobs]);
  return (
    <section id="jobs" data-state={state} data-synced={synced}>
      <ul>
        {jobs.map((job) => (
          <li key={job.jobId} data-job-id={job.jobId}>
            {job.message} {job.progress}%
          </li>
        ))}
      </ul>
    </section>
  );
}

function Copies({ jobId }) {
  const [count, setCount] = useState(Number(params.get('copies')));
  useEffect(() => {
    window.showCopies = setCount;
  }, []);
  return Array.from({ length: count }, (_, i) => <Job key={i} jobId={jobId} copy={i + 1} />);
}

const jobId = params.get('job');
const app = !jobId ? <Jobs /> : params.has('copies') ? <Copies jobId={jobId} /> : <Job jobId={jobId} />;
createRoot(document.getElementById('root')).render(<StrictMode>{app}</StrictMode>);
