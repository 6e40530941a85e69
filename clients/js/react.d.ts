/** Types of `jobcast/react`: React hooks over `createJobStore` (React 18 or later). */

import type { ConnectionOptions, JobFilter, JobStoreSnapshot } from './jobcast.js';

/** What the hooks take besides the job id or the filter. */
export type UseJobOptions = ConnectionOptions;

/**
 * One job, live, until it completes or fails: read `job` (undefined until known, or once
 * removed) and `state`. `null` or `undefined` watches nothing.
 */
export function useJob(jobId: string | null | undefined, options?: UseJobOptions): JobStoreSnapshot;

/** Every job, or those matching the filter, newest first: read `jobs` and `state`. */
export function useJobs(filter?: JobFilter, options?: UseJobOptions): JobStoreSnapshot;
