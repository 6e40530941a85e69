// A job's output (tokens, log lines) with watchJob({output: true}) and createJobStore, over
// each transport, against a real server: every chunk once and in order, interleaved with
// the job's changes as they happened, its final state last; through dropped connections
// and a fall back to polling.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { createJobStore, isTerminal, watchJob } from 'jobcast';
import {
  NODE,
  SERVER,
  TRANSPORTS,
  appendOutput,
  assertIncreasing,
  completeJob,
  createJob,
  getJob,
  ms,
  settle,
  sleep,
  updateJob,
  waitFor,
  watchThroughProxy,
} from './helpers.js';

const TIMEOUT = ms(30_000);
after(() => settle());

const tokens = (...words) => words.map((data) => ({ data, kind: 'token' }));
const lines = (from, to) =>
  Array.from({ length: to - from }, (_, i) => ({ data: `line ${from + i}`, kind: 'log' }));

/** What a watch of one job's output tells, as one sequence of jobs and chunks. */
function recorder() {
  const seen = { events: [], chunks: [], states: [], synced: 0, removed: [] };
  seen.options = {
    onJob: (job) => seen.events.push({ job }),
    onOutput: (chunks) => {
      assert.ok(chunks.length > 0, 'no empty call');
      seen.events.push({ chunks });
      seen.chunks.push(...chunks);
    },
    onState: (change) => seen.states.push(change),
    onSynced: () => (seen.synced += 1),
    onRemoved: (jobId) => seen.removed.push(jobId),
  };
  seen.state = () => seen.states.at(-1)?.state;
  seen.versions = () => seen.events.filter((e) => e.job).map((e) => e.job.version);
  return seen;
}

/**
 * Every chunk once, in order, as appended; every job after the chunks its `outputSize`
 * counts (those appended before that change); the final state last.
 */
function assertDelivered(seen, appended) {
  assert.deepEqual(
    seen.chunks.map((chunk) => chunk.offset),
    appended.map((_, offset) => offset),
    'each chunk once, in order',
  );
  assert.deepEqual(
    seen.chunks.map(({ offset, ...chunk }) => chunk),
    appended,
  );
  let held = 0;
  for (const event of seen.events) {
    if (event.chunks) held += event.chunks.length;
    else
      assert.ok(
        (event.job.outputSize ?? 0) <= held,
        `version ${event.job.version} (outputSize ${event.job.outputSize}) came before its chunks: ` +
          `${held} held`,
      );
  }
  assertIncreasing(seen.versions());
  assert.ok(isTerminal(seen.events.at(-1).job), 'the final state comes last');
}

for (const transport of TRANSPORTS) {
  describe(`output over ${transport}`, { concurrency: false }, () => {
    it(
      'sends every chunk once and in order, between the changes as they happened, the end last',
      { timeout: TIMEOUT },
      async (t) => {
        const jobId = await createJob({ jobType: 'llm_agent', message: 'Thinking...' });
        const seen = recorder();
        const watch = watchJob(jobId, {
          ...NODE,
          ...seen.options,
          transport,
          baseUrl: SERVER,
          pollInterval: 100,
        });
        t.after(() => watch.close());
        await waitFor(() => seen.synced && seen.state() === 'live', 'the snapshot and live');
        assert.equal(watch.outputOffset, 0);

        const appended = [];
        const append = async (chunks) => {
          appended.push(...chunks);
          await appendOutput(jobId, chunks);
        };
        await append(tokens('The', ' answer'));
        await waitFor(() => watch.outputOffset === 2, 'the first chunks, live');
        await updateJob(jobId, { status: 'processing', progress: 10 });
        await waitFor(() => seen.versions().at(-1) === 2, 'version 2');
        await append(tokens(' is'));
        await append(lines(0, 3));
        await waitFor(() => watch.outputOffset === 6, 'more chunks, live');
        await append(tokens(' 42', '.'));
        await updateJob(jobId, { progress: 60, message: 'Writing...' });
        await append([{ data: { rows: [1, 2] }, kind: 'result' }, { data: null }]);
        await completeJob(jobId, { documentId: 'doc_42' });
        await waitFor(() => watch.closed, 'the watch to end at the final state');

        assertDelivered(seen, appended);
        assert.equal(watch.outputOffset, appended.length);
        assert.equal(seen.events.at(-1).job.documentId, 'doc_42');
        assert.ok(!('kind' in seen.chunks.at(-1)), 'a chunk without kind has none');
        if (transport !== 'poll') {
          assert.deepEqual(seen.versions(), [1, 2, 3, 4]);
          // Over a stream the interleaving is exactly the order of the writes.
          const order = seen.events.map((e) => (e.job ? `v${e.job.version}` : e.chunks.length));
          const flat = order.flatMap((e) => (typeof e === 'number' ? Array(e).fill('c') : [e]));
          assert.deepEqual(flat, [
            'v1',
            'c',
            'c',
            'v2',
            'c',
            'c',
            'c',
            'c',
            'c',
            'c',
            'v3',
            'c',
            'c',
            'v4',
          ]);
        }
      },
    );

    it(
      'resumes after the connection drops: every chunk once, none missing',
      { timeout: TIMEOUT },
      async (t) => {
        const jobId = await createJob({ jobType: 'file_processing' });
        const { proxy, seen, watch } = await watchThroughProxy(
          t,
          jobId,
          { transport, pollInterval: 100 },
          recorder(),
        );
        await waitFor(() => seen.synced && seen.state() === 'live', 'live');
        const appended = lines(0, 5);
        await appendOutput(jobId, appended);
        await waitFor(() => watch.outputOffset === 5, 'the first lines');

        for (let round = 1; round <= 2; round += 1) {
          await waitFor(() => seen.state() === 'live', 'live');
          const before = proxy.requests.length;
          proxy.refuse(); // the server seems gone while the job goes on
          proxy.cut();
          await waitFor(() => seen.state() === 'reconnecting', 'reconnecting');
          const more = lines(appended.length, appended.length + 4);
          appended.push(...more);
          await appendOutput(jobId, more.slice(0, 2));
          await updateJob(jobId, { status: 'processing', progress: 30 * round });
          await appendOutput(jobId, more.slice(2));
          await sleep(ms(300));
          proxy.refuse(false);
          const { version } = await getJob(jobId);
          await waitFor(
            () => watch.outputOffset === appended.length && seen.versions().at(-1) === version,
            `round ${round}'s output and change after the reconnect`,
          );
          await waitFor(() => seen.state() === 'live', 'live again');
          if (transport === 'sse') {
            // It asked for what came after the version and the chunks it held.
            const asked = proxy.requests.slice(before).filter((line) => line.includes('/events'));
            assert.ok(asked.length >= 1, proxy.requests.join('\n'));
            assert.ok(
              asked.every((line) => /output=1/.test(line) && /lastEventId=\d+\.\d+/.test(line)),
              asked.join('\n'),
            );
          }
        }
        const last = lines(appended.length, appended.length + 3);
        appended.push(...last);
        await appendOutput(jobId, last);
        await completeJob(jobId);
        await waitFor(() => watch.closed, 'the end');
        assertDelivered(seen, appended);
        assert.equal(watch.transport, transport, 'no fallback to polling');
      },
    );

    it(
      'a job that ended while disconnected: the rest of its output, then its final state',
      { timeout: TIMEOUT },
      async (t) => {
        const jobId = await createJob({ jobType: 'llm_agent' });
        const { proxy, seen, watch } = await watchThroughProxy(
          t,
          jobId,
          { transport, pollInterval: 100 },
          recorder(),
        );
        const appended = tokens('one', ' two');
        await appendOutput(jobId, appended);
        await waitFor(() => watch.outputOffset === 2 && seen.state() === 'live', 'live');
        proxy.refuse();
        proxy.cut();
        await waitFor(() => seen.state() === 'reconnecting', 'reconnecting');
        const rest = tokens(' three', ' four', ' five');
        appended.push(...rest);
        await appendOutput(jobId, rest);
        await completeJob(jobId);
        proxy.refuse(false);
        await waitFor(() => watch.closed, 'the end');
        assertDelivered(seen, appended);
        assert.deepEqual(seen.removed, []);
      },
    );
  });
}

for (const transport of ['sse', 'ws']) {
  it(
    `falls back from ${transport} to polling and back without losing or repeating a chunk`,
    { timeout: ms(60_000) },
    async (t) => {
      const jobId = await createJob({ jobType: 'llm_agent' });
      const { proxy, seen, watch } = await watchThroughProxy(
        t,
        jobId,
        { transport, pollInterval: 100, restreamAfter: ms(1_000) },
        recorder(),
      );
      const appended = tokens('a', 'b', 'c');
      await appendOutput(jobId, appended);
      await waitFor(() => watch.outputOffset === 3 && seen.state() === 'live', 'live');

      proxy.breakStreams(); // from now on no stream gets through; plain requests do
      proxy.cut();
      let n = 0;
      while (watch.transport !== 'poll') {
        const more = tokens(`x${n}`, `y${n}`);
        n += 1;
        appended.push(...more);
        await appendOutput(jobId, more);
        await sleep(ms(200));
        assert.ok(n < 100, 'no fall back to polling');
      }
      proxy.breakStreams(false); // fixed: a while later the stream is tried, and holds
      await waitFor(
        () => watch.transport === transport && seen.state() === 'live',
        `back on ${transport}`,
      );
      const streamed = tokens('s', 't');
      appended.push(...streamed);
      await appendOutput(jobId, streamed);
      await updateJob(jobId, { status: 'processing', progress: 50 });
      const last = tokens('d', 'e');
      appended.push(...last);
      await appendOutput(jobId, last);
      await completeJob(jobId);
      await waitFor(() => watch.closed, 'the end');
      assertDelivered(seen, appended);
    },
  );
}

describe('createJobStore with output', () => {
  for (const transport of TRANSPORTS) {
    it(
      `keeps the newest keepOutput chunks and counts them all (${transport})`,
      { timeout: TIMEOUT },
      async (t) => {
        const jobId = await createJob({ jobType: 'file_processing' });
        const store = createJobStore({
          ...NODE,
          jobId,
          transport,
          baseUrl: SERVER,
          output: true,
          keepOutput: 3,
          pollInterval: 100,
        });
        const snapshots = [];
        const unsubscribe = store.subscribe((snapshot) => snapshots.push(snapshot));
        t.after(() => {
          unsubscribe();
          store.close();
        });
        const last = () => snapshots.at(-1);
        await waitFor(() => last().synced && last().state === 'live', 'live');
        assert.deepEqual(last().output, []);
        assert.equal(last().outputOffset, 0);

        await appendOutput(jobId, lines(0, 2));
        await waitFor(() => last().outputOffset === 2, 'two lines');
        assert.deepEqual(
          last().output.map((chunk) => chunk.data),
          ['line 0', 'line 1'],
        );
        for (let i = 2; i < 10; i += 2) await appendOutput(jobId, lines(i, i + 2));
        await waitFor(() => last().outputOffset === 10, 'ten lines');
        const tail = last();
        assert.deepEqual(
          tail.output.map((chunk) => [chunk.offset, chunk.data, chunk.kind]),
          [
            [7, 'line 7', 'log'],
            [8, 'line 8', 'log'],
            [9, 'line 9', 'log'],
          ],
        );
        assert.ok(Object.isFrozen(tail.output) && Object.isFrozen(tail.output[0]));
        // Nothing new: the same snapshot, the same array.
        await updateJob(jobId, { progress: 5 });
        await waitFor(() => last().job.progress === 5, 'the change');
        assert.equal(last().output, tail.output);
        await completeJob(jobId);
        await waitFor(() => last().closed, 'the end');
        assert.equal(last().outputOffset, 10);
        assert.equal(last().job.status, 'completed');
      },
    );
  }

  it(
    'pauses with no subscriber and resumes its output where it was',
    { timeout: TIMEOUT },
    async (t) => {
      const jobId = await createJob({ jobType: 'llm_agent' });
      const store = createJobStore({ ...NODE, jobId, baseUrl: SERVER, output: true });
      t.after(() => store.close());
      let stop = store.subscribe(() => {});
      await appendOutput(jobId, tokens('a', 'b'));
      await waitFor(() => store.getSnapshot().outputOffset === 2, 'two chunks');
      stop();
      await waitFor(() => store.getSnapshot().state === 'paused', 'paused');
      await appendOutput(jobId, tokens('c', 'd'));
      await sleep(ms(200));
      assert.equal(store.getSnapshot().outputOffset, 2, 'nothing while paused');
      stop = store.subscribe(() => {});
      t.after(() => stop());
      await waitFor(() => store.getSnapshot().outputOffset === 4, 'the chunks of the pause');
      await appendOutput(jobId, tokens('e'));
      await waitFor(() => store.getSnapshot().outputOffset === 5, 'live again');
      assert.deepEqual(
        store.getSnapshot().output.map((chunk) => chunk.data),
        ['a', 'b', 'c', 'd', 'e'],
      );
    },
  );

  it('follows no output unless asked, nor for many jobs', { timeout: TIMEOUT }, async (t) => {
    const jobId = await createJob();
    await appendOutput(jobId, lines(0, 2));
    const one = createJobStore({ ...NODE, jobId, baseUrl: SERVER });
    const many = createJobStore({ ...NODE, baseUrl: SERVER, output: true });
    const stops = [one, many].map((store) => store.subscribe(() => {}));
    t.after(() => {
      stops.forEach((stop) => stop());
      one.close();
      many.close();
    });
    await waitFor(
      () => one.getSnapshot().job && many.getSnapshot().synced,
      'the job in both stores',
    );
    await sleep(ms(300));
    for (const store of [one, many]) {
      assert.deepEqual(store.getSnapshot().output, []);
      assert.equal(store.getSnapshot().outputOffset, 0);
    }
    assert.equal(one.getSnapshot().job.outputSize, 2);
  });
});

/** An EventSource the test scripts: `emit(type, data, id)` as if the server had sent it. */
function scriptedEventSource() {
  const sources = [];
  class Scripted {
    constructor(url) {
      this.url = url;
      this.listeners = {};
      this.closed = false;
      sources.push(this);
    }
    addEventListener(type, listener) {
      (this.listeners[type] ??= []).push(listener);
    }
    close() {
      this.closed = true;
    }
    emit(type, data, lastEventId = '') {
      const event = { data: data === undefined ? undefined : JSON.stringify(data), lastEventId };
      for (const listener of this.listeners[type] ?? []) listener(event);
    }
  }
  return { EventSource: Scripted, sources };
}

describe('output, as the client orders it (a scripted stream)', () => {
  it('holds back a final state that overtook its output until the output is in', async (t) => {
    const jobId = await createJob();
    const job = await getJob(jobId);
    const { EventSource, sources } = scriptedEventSource();
    const seen = recorder();
    const watch = watchJob(jobId, { ...seen.options, EventSource, baseUrl: SERVER });
    t.after(() => watch.close());
    const source = await waitFor(() => sources[0], 'the stream');
    assert.match(source.url, /\/events\?output=1&ping=1$/);
    source.emit('open');
    source.emit('job', job, '1.0');
    source.emit('output', { jobId, chunks: [0, 1].map((offset) => ({ offset, data: offset })) });
    const done = { ...job, status: 'completed', version: 2, outputSize: 4 };
    source.emit('job', done, '2.4');
    assert.equal(watch.closed, false, 'two chunks are still to come');
    assert.deepEqual(seen.versions(), [1]);
    // A chunk again (a resend) and the two missing ones: then the final state, and the end.
    const chunks = [1, 2, 3].map((offset) => ({ offset, data: offset }));
    source.emit('output', { jobId, chunks });
    assert.equal(watch.closed, true);
    assert.deepEqual(
      seen.chunks.map((chunk) => chunk.offset),
      [0, 1, 2, 3],
    );
    assert.deepEqual(seen.versions(), [1, 2]);
    assert.equal(seen.events.at(-1).job.status, 'completed');
  });

  it(
    'reconnects at a gap in the output, resuming from the chunks it holds',
    { timeout: TIMEOUT },
    async (t) => {
      const jobId = await createJob();
      const job = await getJob(jobId);
      const { EventSource, sources } = scriptedEventSource();
      const seen = recorder();
      const watch = watchJob(jobId, { ...seen.options, EventSource, baseUrl: SERVER });
      t.after(() => watch.close());
      await waitFor(() => sources[0], 'the stream');
      sources[0].emit('open');
      sources[0].emit('job', job, '1.0');
      const chunk = (offset) => ({ offset, data: `c${offset}` });
      sources[0].emit('output', { jobId, chunks: [chunk(0), chunk(1)] });
      sources[0].emit('output', { jobId, chunks: [chunk(3)] }); // chunk 2 is missing
      assert.equal(sources[0].closed, true);
      assert.equal(seen.state(), 'reconnecting');
      await waitFor(() => sources.length === 2, 'the reconnect');
      assert.match(sources[1].url, /output=1&lastEventId=1\.2&ping=1$/);
      sources[1].emit('open');
      sources[1].emit('output', { jobId, chunks: [chunk(2), chunk(3)] });
      assert.deepEqual(
        seen.chunks.map((c) => c.data),
        ['c0', 'c1', 'c2', 'c3'],
      );
      assert.equal(watch.outputOffset, 4);
    },
  );
});
