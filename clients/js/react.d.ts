/** Types of `jobcast/react`: React hooks over `createJobStore` (React 18 or later). */

import type { ConnectionOptions, JobFilter, JobStoreSnapshot, OutputOptions } from './jobcast.js';

/** What `useJob` takes besides the job id: where to connect, and whether to follow output. */
export interface UseJobOptions extends ConnectionOptions, OutputOptions {}

/**
 * One job, live, until it completes or fails: read `job` (undefined until known, or once
 * removed) and `state`; with `output: true`, `output` (the newest `keepOutput` chunks) and
 * `outputOffset`. `null`, `undefined` or `''` watches nothing.
 */
export function useJob(jobId: string | null | undefined, options?: UseJobOptions): JobStoreSnapshot;

/** Every job, or those matching the filter, newest first: read `jobs` and `state`. */
export function useJobs(filter?: JobFilter, options?: ConnectionOptions): JobStoreSnapshot;
