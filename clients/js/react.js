/**
 * jobcast/react — live jobs in React components: `useJob` and `useJobs`.
 *
 * @example
 * import { useJob } from 'jobcast/react';
 *
 * function Progress({ jobId }) {
 *   const { job, synced } = useJob(jobId, { transport: 'ws' });
 *   if (!job) return <p>{synced ? 'No such job' : 'Connecting…'}</p>;
 *   return <progress max={100} value={job.progress}>{job.message}</progress>;
 * }
 *
 * Each hook returns the snapshot of a store (`createJobStore`): frozen, replaced only when
 * something in it changed, so a component re-renders only then. The hook connects while a
 * component uses it, and pauses when none does. A new store is made when the job id, the
 * filter or an option that shapes the connection changes; `getToken` is always the
 * latest function given, so an inline arrow function costs nothing.
 */

import { useEffect, useMemo, useRef, useSyncExternalStore } from 'react';
import { createJobStore } from './jobcast.js';

const NOTHING = Object.freeze({
  jobs: Object.freeze([]),
  job: undefined,
  state: 'paused',
  transport: 'sse',
  problem: undefined,
  synced: false,
  closed: true,
  output: Object.freeze([]),
  outputOffset: 0,
});
const IDLE_STORE = { subscribe: () => () => {}, getSnapshot: () => NOTHING };

/**
 * One job, live, until it completes or fails: `{job, state, transport, problem, synced,
 * closed}`, and with `output: true` its `output` (the newest `keepOutput` chunks) and
 * `outputOffset`. `jobId` null or undefined watches nothing (the snapshot is then closed).
 */
export function useJob(jobId, options = {}) {
  return useStore(jobId == null ? null : { ...options, jobId: String(jobId) });
}

/** Every job, or those matching `{jobType, status, owner}`, newest first: `{jobs, state, …}`. */
export function useJobs(filter = {}, options = {}) {
  const { jobType, status, owner } = filter ?? {};
  return useStore({ ...options, jobId: null, jobType, status, owner });
}

function useStore(options) {
  const latest = useRef(options);
  useEffect(() => {
    latest.current = options;
  });
  const key = options && keyOf(options);
  // A store does nothing until subscribed: one made by a render React throws away
  // (StrictMode renders twice) costs nothing.
  const store = useMemo(() => {
    if (!options) return IDLE_STORE;
    const { getToken } = options;
    return createJobStore({
      ...options,
      getToken: getToken && (() => (latest.current?.getToken ?? getToken)()),
    });
  }, [key]); // eslint-disable-line react-hooks/exhaustive-deps
  return useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
}

const ids = new WeakMap();
let lastId = 0;

/** What makes two options the same store: their values, and which constructors they pass. */
function keyOf(options) {
  const idOf = (value) => {
    if (value == null || (typeof value !== 'function' && typeof value !== 'object')) return null;
    if (!ids.has(value)) ids.set(value, (lastId += 1));
    return ids.get(value);
  };
  return JSON.stringify([
    options.jobId,
    options.jobType,
    options.status,
    options.owner,
    options.transport,
    String(options.baseUrl ?? ''),
    options.token,
    Boolean(options.getToken),
    options.fallback,
    options.pollInterval,
    options.restreamAfter,
    options.pauseWhenHidden,
    options.output === true,
    String(options.keepOutput),
    idOf(options.EventSource),
    idOf(options.WebSocket),
  ]);
}
