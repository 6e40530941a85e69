// What the package exports, pinned; and the React hooks where React renders on a server.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createElement } from 'react';
import { renderToString } from 'react-dom/server';
import { useJob, useJobs } from 'jobcast/react';
import { SERVER } from './helpers.js';

describe('exports', () => {
  it('jobcast exports exactly the watch functions, isTerminal and the store', async () => {
    const names = Object.keys(await import('jobcast')).sort();
    assert.deepEqual(names, ['createJobStore', 'isTerminal', 'watchJob', 'watchJobs']);
  });

  it('jobcast/react exports exactly the two hooks', async () => {
    const names = Object.keys(await import('jobcast/react')).sort();
    assert.deepEqual(names, ['useJob', 'useJobs']);
  });

  it('isTerminal is true for completed and error only', async () => {
    const { isTerminal } = await import('jobcast');
    const verdicts = ['queued', 'processing', 'completed', 'error'].map((status) =>
      isTerminal({ status }),
    );
    assert.deepEqual(verdicts, [false, false, true, true]);
    assert.equal(isTerminal(null), false);
  });
});

describe('React on a server (SSR)', () => {
  it('renders the first snapshot and connects to nothing, even without baseUrl', () => {
    function Job() {
      const { job, state } = useJob('job_abc');
      return createElement('p', null, job ? job.message : state);
    }
    function Jobs() {
      const { jobs, state, synced } = useJobs({ jobType: 'generic' }, { baseUrl: SERVER });
      return createElement('p', null, `${state} ${jobs.length} ${synced}`);
    }
    function Nothing() {
      const { closed, jobs } = useJob(null);
      return createElement('p', null, `${closed} ${jobs.length}`);
    }
    assert.equal(renderToString(createElement(Job)), '<p>connecting</p>');
    assert.equal(renderToString(createElement(Jobs)), '<p>connecting 0 false</p>');
    assert.equal(renderToString(createElement(Nothing)), '<p>true 0</p>');
  });
});
