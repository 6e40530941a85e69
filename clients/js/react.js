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
 * something in it changed, so a component re-renders only then. Hooks given the same job
 * id (or filter) and the same options, and no `getToken`, share one store, and so one
 * connection: a progress bar in the header and the job's page below it cost one stream.
 * The store connects while a component uses it, and is closed once none does. A new store
 * is made when the job id, the filter or an option that shapes the connection changes;
 * `getToken` is always the latest function given, so an inline arrow function costs
 * nothing.
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
 * `outputOffset`. `jobId` null, undefined or '' watches nothing (the snapshot is then closed).
 */
export function useJob(jobId, options = {}) {
  // '' is React's usual "none yet" (an empty field, a route without its id).
  return useStore(jobId == null || jobId === '' ? null : { ...options, jobId: String(jobId) });
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
  // A hook with getToken shares with no other: two getTokens may give tokens of two
  // scopes, and one connection would show one's jobs to the other.
  const own = useRef(null);
  if (options?.getToken && own.current === null) own.current = `own-${(lastId += 1)}`;
  const key = options && (options.getToken ? own.current : '') + keyOf(options);
  const share = useMemo(() => {
    if (!options) return IDLE_STORE; // a share's shape: subscribe, getSnapshot
    const { getToken } = options;
    const make = () =>
      createJobStore({
        ...options,
        getToken: getToken && (() => (latest.current?.getToken ?? getToken)()),
      });
    return shareOf(key, make);
  }, [key]); // eslint-disable-line react-hooks/exhaustive-deps
  return useSyncExternalStore(share.subscribe, share.getSnapshot, share.getSnapshot);
}

const shares = new Map(); // key → the share its hooks use now

/**
 * The store of `key` that every hook with it uses: made (by `make`) for the first, closed
 * and forgotten a tick after the last one leaves (React's StrictMode and re-renders leave
 * and come back at once). A store does nothing until subscribed, so one made for a render
 * React throws away costs nothing; it is forgotten on the next tick too.
 */
function shareOf(key, make) {
  const existing = shares.get(key);
  if (existing) return existing;
  const share = {
    store: make(),
    users: 0,
    timer: 0,
    getSnapshot: () => share.store.getSnapshot(), // its store, which a revival replaces
    subscribe(listener) {
      clearTimeout(share.timer);
      share.timer = 0;
      if (shares.get(key) !== share) {
        // Forgotten while a render that took it waited to commit: it starts again, with a
        // store of its own if another took its place meanwhile.
        if (share.users === 0 && share.store.getSnapshot().closed) share.store = make();
        if (!shares.has(key)) shares.set(key, share);
      }
      share.users += 1;
      const unsubscribe = share.store.subscribe(listener);
      let left = false;
      return () => {
        if (left) return;
        left = true;
        unsubscribe();
        share.users -= 1;
        if (share.users === 0) forgetLater(share, key);
      };
    },
  };
  shares.set(key, share);
  forgetLater(share, key);
  return share;
}

function forgetLater(share, key) {
  clearTimeout(share.timer);
  share.timer = setTimeout(() => {
    share.timer = 0;
    if (share.users > 0) return;
    if (shares.get(key) === share) shares.delete(key);
    share.store.close();
  });
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
