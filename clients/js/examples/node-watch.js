// Follow one job from a Node 20 program until it completes or fails, then exit:
//
//   npm install --install-links /path/to/jobcast/clients/js eventsource
//   node node-watch.js http://127.0.0.1:8000 job_…  [read token]
//
// Node 20 has fetch but no EventSource: the `eventsource` package's is passed in.
// (Tested by tests/js/test_examples.py.)

import { EventSource } from 'eventsource';
import { watchJob } from 'jobcast';

const [baseUrl, jobId, token] = process.argv.slice(2);

watchJob(jobId, {
  baseUrl,
  token,
  EventSource,
  onJob: (job) => console.log(`${job.status} ${job.progress}% ${job.message}`),
  onRemoved: () => console.log('no such job'),
  onState: ({ state, problem }) => {
    if (problem) console.error(`${state}: ${problem.detail}`);
  },
});
// Nothing else to wait for: the process exits once the watch ends.
