// The status-indicator page: every job as a live row, built on jobcast.js.
//
// Rows are keyed by jobId and updated in place; every change lands in `pending`
// and the DOM is written once per animation frame, so hundreds of jobs changing
// at once cost one layout per frame and nothing flickers. A running job with
// output (LLM tokens, log lines) shows its tail under its row (see "Output").

import { isTerminal, watchJob, watchJobs } from './jobcast.js';

const LINGER_MS = 20_000; // finished rows stay this long, then fade out
const LEAVE_MS = 400; // the fade-out (matches app.css)
const ANNOUNCE_MS = 1_000; // status announcements are gathered this long
const STALE_AFTER_MS = 3_000; // reconnecting this long marks the rows as last known
const OUTPUT_POLL_MS = 500; // how often a polled output watch asks (see "Output")
const OUTPUT_QUIET_MS = 30_000; // a job's output watch that brought nothing this long ends
// A tab hidden this long lets go of its connections (see watchOptions); a quick look at
// another tab costs no reconnection.
const HIDDEN_GRACE_MS = 10_000;
const COPIED_MS = 2_000; // how long a copy button says "Copied"
const CONFIRM_MS = 8_000; // how long a Delete waits for the click that confirms it
const CONFIRM_AFTER_MS = 500; // a click sooner than this after the first (a double-click) is not one
// An unfinished job this long without a change looks abandoned (its worker gone): a viewer
// who may write can delete it. A server with JOBS_STALE_TTL fails such jobs by itself.
const IDLE_AFTER_MS = 5 * 60_000;
const SHORT_ID = 8; // characters of the id after `job_` a row shows
const DISMISSED_KEY = 'jobcast.dismissed'; // sessionStorage: ids of jobs the user closed
const DISMISSED_MAX = 1_000;
const SVG = 'http://www.w3.org/2000/svg';
const COPY_ICON = ['M9 9h10v10H9z', 'M5 15V5h10'];
const CHECK_ICON = ['M5 12.5l4.5 4.5L19 7'];
const CLOSE_ICON = ['M6 6l12 12', 'M18 6 6 18'];
const OUTPUT_TEXT_MAX = 4_096; // characters of streamed `token` text a row shows: the last
const OUTPUT_LINES = 20; // lines of other output (`log`, …) a row shows: the last

const TYPES = {
  file_processing: {
    label: 'File processing',
    icon: ['M14 3H7a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h10a2 2 0 0 0 2-2V8z', 'M14 3v5h5', 'M12 18v-6', 'M9.5 14.5 12 12l2.5 2.5'],
  },
  document_analysis: {
    label: 'Document analysis',
    icon: ['M10.5 17a6.5 6.5 0 1 0 0-13 6.5 6.5 0 0 0 0 13z', 'M15.5 15.5 20 20', 'M8 12.5v-1.5', 'M10.5 12.5V8.5', 'M13 12.5v-3'],
  },
  llm_agent: {
    label: 'LLM agent',
    icon: ['M10 3.5l1.6 4.4L16 9.5l-4.4 1.6L10 15.5l-1.6-4.4L4 9.5l4.4-1.6z', 'M17.5 13.5l.8 2.2 2.2.8-2.2.8-.8 2.2-.8-2.2-2.2-.8 2.2-.8z'],
  },
  generic: {
    label: 'Generic',
    icon: ['M12 3.5 3.5 8 12 12.5 20.5 8z', 'M3.5 12 12 16.5 20.5 12', 'M3.5 16 12 20.5 20.5 16'],
  },
};
const STATUS_TEXT = { queued: 'Queued', processing: 'Processing', completed: 'Completed', error: 'Error' };
const STATE_TEXT = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  paused: 'Paused',
  closed: 'Closed',
  unauthorized: 'Token needed',
  forbidden: 'Not allowed',
};
const TRANSPORT_TEXT = { sse: 'SSE', ws: 'WebSocket', poll: 'Polling' };

const $ = (id) => document.getElementById(id);
const list = $('job-list');

/** jobId → row: {id, job, created, leaveAt, leaving, el: {...}} */
const rows = new Map();
/** Rows in display order: newest createdAt first. */
const ordered = [];
/** jobId → latest job, or null for a removal, waiting for the next frame. */
const pending = new Map();
/** Finished jobs whose rows already faded out: a later snapshot must not revive them. */
const faded = new Set();
/** Finished jobs the user closed: hidden for this tab's session, reloads included. */
const dismissed = loadDismissed();
/** jobId → the tail of its output shown: {text (tokens), lines (the rest)}. */
const tails = new Map();
/** Jobs whose tail changed since the last frame. */
const tailsChanged = new Set();
let frame = 0;

// The server's clock, for elapsed times: offset = client time - server time. Every
// estimate (the Date header, "this event was sent at updatedAt") can only be late,
// so the smallest one seen is the best.
let clockOffset = Infinity;
const serverNow = () => Date.now() - (Number.isFinite(clockOffset) ? clockOffset : 0);
function observeClock(serverTime) {
  if (Number.isFinite(serverTime)) clockOffset = Math.min(clockOffset, Date.now() - serverTime);
}

// Connection ----------------------------------------------------------------------

const params = new URLSearchParams(location.search);
const transport = ['sse', 'ws', 'poll'].includes(params.get('transport')) ? params.get('transport') : 'sse';
const token = params.get('token') || undefined; // a read token, for servers with JOBS_API_KEY
// A job token (what `POST /api/jobs` answers) reads its one job and no list: watch that job.
const onlyJob = /^job:(.+)$/.exec(tokenScope(token) ?? '')?.[1] ?? null;

for (const link of document.querySelectorAll('.transports a')) {
  // Switching transport keeps the rest of the address (the token above all).
  const target = new URLSearchParams(params);
  target.set('transport', link.dataset.transport);
  link.search = target.toString();
  if (link.dataset.transport === transport) link.setAttribute('aria-current', 'page');
}

let connectedAt = 0; // server time of the first live connection
let announceTimer = 0;
let connection = 'connecting'; // the watch's state
let connectionTransport = transport;
let currentUntil = 0; // while not live: when the rows were last known to be current
let quietSince = 0; // when the connection last left 'live', or came back from a pause
let stale = false; // rows show the last known state (see updateStale)
let writable = false; // the viewer may cancel and delete jobs (see updateWritable)
let writesRefused = false; // the server refused a write: offer none again

function showState({ state, transport: used, problem }) {
  if (connection === 'live' && state !== 'live' && !stale) currentUntil = Date.now();
  // Coming back to a tab reconnects it: as brief as a server restart, not worth marking
  // (rows stale before the tab was hidden stay so until live: see updateStale).
  const resuming = connection === 'paused';
  if ((connection === 'live' && state !== 'live') || resuming) quietSince = Date.now();
  connection = state;
  connectionTransport = used;
  // Jobs created from now on are announced as new; those already running are not.
  if (state === 'live' && !connectedAt) connectedAt = serverNow();
  if (problem) showGate(state, problem);
  renderConnection();
  updateStale();
  updateWritable();
}

// Writing. A token only reads, and a server with an API key takes writes only with that
// key, which no page holds. A server without one answers reads with no credential at all,
// so a page with no token that went live is on an open server, whose writes are open too
// (to this machine: the server answers anyone else 403, and the page then says so).
function updateWritable() {
  const refused = connection === 'unauthorized' || connection === 'forbidden';
  const next = !token && Boolean(connectedAt) && !refused && !writesRefused;
  if (next === writable) return;
  writable = next;
  for (const row of rows.values()) renderActions(row);
}

function renderConnection() {
  // A browser that says it is offline is, whatever an idle stream has not noticed yet.
  const trying = ['connecting', 'live', 'reconnecting'].includes(connection);
  const state = navigator.onLine === false && trying ? 'offline' : connection;
  const box = $('connection');
  box.dataset.state = state;
  box.dataset.transport = connectionTransport;
  const label = state === 'unauthorized' && token ? 'Token invalid' : STATE_TEXT[state] ?? state;
  $('connection-label').textContent = label;
  $('connection-transport').textContent = TRANSPORT_TEXT[connectionTransport] ?? connectionTransport;
}

// A tab hidden for HIDDEN_GRACE_MS holds no connection: over SSE, every tab of a browser
// shares its six connections per origin (HTTP/1.1), so tabs in the background must not
// starve the one in front. Shown again, the watch resumes from its last event, missing
// nothing.
const watchOptions = {
  transport,
  token,
  pauseWhenHidden: HIDDEN_GRACE_MS,
  onJob: (job) => schedule(job.jobId, job),
  onRemoved: (jobId) => {
    faded.delete(jobId);
    if (dismissed.delete(jobId)) saveDismissed(); // gone for good: nothing left to hide
    schedule(jobId, null);
  },
  onReset: () => faded.clear(),
  onState: showState,
};
// A page for one job follows its output on the one watch it has; the page of every job
// opens a watch per job for it (see "Output").
if (onlyJob) watchJob(onlyJob, { ...watchOptions, onOutput: (chunks) => addOutput(onlyJob, chunks) });
else watchJobs(watchOptions);

/** The `scope` claim of a read token (a JWT: its payload is readable, not secret). */
function tokenScope(value) {
  try {
    const payload = value.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const scope = JSON.parse(atob(payload)).scope;
    return typeof scope === 'string' ? scope : null;
  } catch {
    return null;
  }
}

// The server refused the credential (the watch has stopped): say what is needed and how
// to get it, instead of "No active jobs".
function showGate(state, problem) {
  const origin = location.origin;
  let title = 'This server needs a token';
  let why = 'Jobcast runs protected here (an API key is set): this page shows jobs only with a read token.';
  if (state === 'forbidden') {
    title = token ? 'This token cannot read these jobs' : 'The server refused this page';
    why = '';
  } else if (token) {
    title = 'This token is not valid';
    why = 'It may have expired, or have been signed with another key.';
  }
  $('gate-title').textContent = title;
  $('gate-body').replaceChildren(
    ...(why ? [h('p', '', why)] : []),
    ...(problem.detail ? [h('p', 'gate-detail', `The server says: ${problem.detail}`)] : []),
    h('p', '', `Open the page with ${token ? 'a new' : 'a'} read token:`),
    h('pre', 'gate-code', `${origin}/?token=<read token>`),
    h('p', '', "For one owner's jobs, whoever holds the API key mints one:"),
    h(
      'pre',
      'gate-code',
      [
        `curl -X POST ${origin}/api/tokens \\`,
        '  -H "Authorization: Bearer $JOBS_API_KEY" \\',
        `  -H "Content-Type: application/json" -d '{"owner": "alice"}'`,
      ].join('\n'),
    ),
    h('p', '', 'For one job, use the token that creating it (POST /api/jobs) answers.'),
  );
  $('gate').hidden = false;
  $('empty').hidden = true;
}

function schedule(jobId, job) {
  if (job) observeClock(Date.parse(job.updatedAt));
  pending.set(jobId, job);
  if (!frame) frame = requestAnimationFrame(flush);
}

// Rendering -----------------------------------------------------------------------

function flush() {
  frame = 0;
  const entering = [];
  for (const [jobId, job] of pending) {
    if (job === null) leave(rows.get(jobId));
    else {
      const row = upsert(job);
      if (row?.entering) entering.push(row);
    }
  }
  pending.clear();
  for (const jobId of tailsChanged) {
    const row = rows.get(jobId);
    if (row && !row.leaving) renderOutput(row);
  }
  tailsChanged.clear();
  if (entering.length) {
    void list.offsetHeight; // commit the collapsed state, so the reveal transitions
    for (const row of entering) {
      row.entering = false;
      row.el.root.classList.remove('is-entering');
    }
  }
  renderSummary();
}

function upsert(job) {
  let row = rows.get(job.jobId);
  if (!row) {
    if (dismissed.has(job.jobId)) return null;
    if (isTerminal(job) && !onlyJob) {
      // A finished job we have not shown: show it only for what is left of its linger.
      const age = serverNow() - Date.parse(job.updatedAt);
      if (faded.has(job.jobId) || !(age < LINGER_MS)) {
        remember(job.jobId);
        return null;
      }
    }
    row = createRow(job);
    if (connectedAt && Date.parse(job.createdAt) >= connectedAt) queueAnnouncement(job, null);
  } else if (row.leaving) {
    return row; // removed or faded out already; a late update does not revive it
  } else if (row.job.status !== job.status) {
    queueAnnouncement(job, row.job.status);
  } else if (job.cancelRequested && !row.job.cancelRequested) {
    queueCancelAnnouncement(job);
  }
  render(row, job);
  return row;
}

function createRow(job) {
  const type = TYPES[job.jobType] ?? TYPES.generic;
  const el = {};
  el.root = h('li', 'job is-entering');
  el.root.dataset.jobId = job.jobId;
  const clip = h('div', 'job-clip');
  const body = h('div', 'job-body');

  el.icon = h('span', 'job-icon');
  el.icon.append(icon(type.icon));

  const title = h('p', 'job-title');
  el.type = h('span', 'job-type', type.label);
  el.id = h('button', 'job-id');
  el.id.type = 'button';
  el.id.title = `${job.jobId} (copy)`;
  el.id.setAttribute('aria-label', `Copy job ID ${job.jobId}`);
  el.idIcon = h('span', 'job-id-icon');
  el.idIcon.append(icon(COPY_ICON));
  el.idLabel = h('span', 'job-id-label', shortId(job.jobId));
  el.id.append(el.idIcon, el.idLabel);
  el.id.addEventListener('click', () => copyId(row));
  el.fullId = h('code', 'job-id-full', job.jobId);
  el.fullId.hidden = true;
  el.subject = h('span', 'job-subject');
  el.cancelTag = h('span', 'cancel-tag', 'Cancel requested');
  el.cancelTag.hidden = true;
  title.append(el.type, el.id, el.fullId, el.subject, el.cancelTag);

  const state = h('span', 'job-state');
  el.badge = h('span', 'badge');
  el.status = h('span', 'badge-text');
  el.badge.append(h('span', 'badge-dot'), el.status);
  state.append(h('span', 'stale-tag', 'Stale'), el.badge);

  const line = h('p', 'job-line');
  el.message = h('span', 'job-message');
  el.detail = h('span', 'job-detail');
  el.reason = h('span', 'job-reason');
  el.reason.hidden = true;
  el.problem = h('span', 'job-problem');
  el.problem.hidden = true;
  line.append(el.message, el.detail, el.reason, el.problem);

  el.elapsed = h('span', 'job-elapsed');

  const progress = h('div', 'job-progress');
  el.bar = h('div', 'bar');
  el.bar.setAttribute('role', 'progressbar');
  el.bar.setAttribute('aria-valuemin', '0');
  el.bar.setAttribute('aria-valuemax', '100');
  el.bar.setAttribute('aria-label', `${type.label} progress`);
  el.fill = h('div', 'bar-fill');
  el.bar.append(el.fill);
  el.percent = h('span', 'job-percent');
  el.percent.setAttribute('aria-hidden', 'true');
  progress.append(el.bar, el.percent);

  el.actions = h('div', 'job-actions');
  el.actions.hidden = true;

  el.body = body; // the output's tail joins it once there is one (renderOutput)
  body.append(el.icon, title, state, line, el.elapsed, progress, el.actions);
  clip.append(body);
  el.root.append(clip);

  const row = { id: job.jobId, job: null, detail: '', created: Date.parse(job.createdAt) || 0, el, entering: true, leaveAt: 0, leaving: false };
  row.actions = ''; // the buttons shown, as renderActions keys them
  rows.set(row.id, row);
  insertOrdered(row);
  return row;
}

function render(row, job) {
  const old = row.job ?? {};
  const { el } = row;
  row.job = job;
  if (job.status !== old.status) {
    el.root.dataset.status = job.status;
    el.status.textContent = STATUS_TEXT[job.status] ?? job.status;
  }
  const subject = subjectOf(job);
  if (subject !== subjectOf(old)) {
    el.subject.textContent = subject;
    el.subject.title = subject;
    el.subject.hidden = !subject;
  }
  if (job.message !== old.message) {
    el.message.textContent = job.message || STATUS_TEXT[job.status] || '';
    el.message.title = job.message ?? '';
  }
  const detail = job.status === 'error' ? job.error ?? '' : job.documentId ?? '';
  if (detail !== row.detail) {
    row.detail = detail;
    if (job.status === 'error') {
      el.detail.className = 'job-detail is-error';
      el.detail.textContent = detail;
      el.detail.title = detail;
    } else {
      el.detail.className = 'job-detail is-document';
      el.detail.replaceChildren(...(detail ? [h('span', 'detail-label', 'Document '), h('code', 'detail-id', detail)] : []));
      el.detail.title = detail ? `Document ${detail}` : '';
    }
  }
  if (job.cancelRequested !== old.cancelRequested || job.cancelReason !== old.cancelReason) {
    renderCancelRequest(row);
  }
  const progress = clamp(Number(job.progress) || 0);
  if (old.progress === undefined || progress !== clamp(Number(old.progress) || 0)) {
    el.fill.style.transform = `scaleX(${progress / 100})`;
    el.bar.setAttribute('aria-valuenow', String(Math.round(progress)));
    el.percent.textContent = `${Math.round(progress)}%`;
  }
  if (isTerminal(job) && !el.dismiss) {
    el.dismiss = h('button', 'job-dismiss');
    el.dismiss.type = 'button';
    el.dismiss.title = 'Dismiss';
    el.dismiss.setAttribute('aria-label', `Dismiss ${TYPES[job.jobType]?.label ?? 'Generic'} job ${shortId(job.jobId)}`);
    el.dismiss.append(icon(CLOSE_ICON));
    el.dismiss.addEventListener('click', () => dismiss(row));
    el.icon.parentElement.append(el.dismiss);
  }
  if (isTerminal(job) && !row.leaveAt && !onlyJob) {
    // A page opened for one job (a job token) keeps it until the user closes it.
    const age = old.status ? 0 : Math.max(0, serverNow() - Date.parse(job.updatedAt));
    row.leaveAt = Date.now() + LINGER_MS - age;
  }
  renderElapsed(row);
  renderActions(row);
  if (!onlyJob) wantOutput(row);
  if (tails.has(row.id) && !row.el.output) renderOutput(row);
}

/** "Cancel requested", and why, while the job's worker has been asked to stop. */
function renderCancelRequest(row) {
  const { el, job } = row;
  const given = typeof job.cancelReason === 'string' ? job.cancelReason : '';
  const reason = job.cancelRequested ? given : '';
  el.cancelTag.hidden = !job.cancelRequested;
  el.cancelTag.title = reason ? `Reason: ${reason}` : 'Its worker was asked to stop';
  el.reason.hidden = !reason;
  el.reason.textContent = reason ? `Reason: ${reason}` : '';
  el.reason.title = reason;
}

function renderElapsed(row) {
  const { job } = row;
  const end = isTerminal(job) ? Date.parse(job.updatedAt) : serverNow();
  const text = duration(end - row.created);
  if (text !== row.elapsedText) {
    row.elapsedText = text;
    row.el.elapsed.textContent = text;
    row.el.elapsed.title = isTerminal(job) ? `Took ${text}` : `Running for ${text}`;
  }
}

function leave(row) {
  if (!row || row.leaving) return;
  row.leaving = true;
  remember(row.id);
  endOutputWatch(row.id, true);
  if (row.el.root.contains(document.activeElement)) focusNear(row); // not lost to <body>
  row.el.root.classList.add('is-leaving');
  setTimeout(() => {
    row.el.root.remove();
    rows.delete(row.id);
    tails.delete(row.id);
    ordered.splice(ordered.indexOf(row), 1);
    renderSummary();
  }, LEAVE_MS);
}

function remember(jobId) {
  faded.add(jobId);
  if (faded.size > 10_000) faded.delete(faded.values().next().value);
}

// Dismissing: a finished row's close button hides it for the rest of the session.

function dismiss(row) {
  if (row.leaving) return;
  dismissed.add(row.id);
  saveDismissed();
  leave(row);
  renderSummary();
}

/** After a row goes, focus moves to its neighbour's close (or copy) button, else the heading. */
function focusNear(row) {
  const index = ordered.indexOf(row);
  const around = [...ordered.slice(index + 1), ...ordered.slice(0, index).reverse()];
  const next = around.find((other) => !other.leaving);
  (next ? next.el.dismiss ?? next.el.id : $('jobs-title')).focus();
}

function loadDismissed() {
  try {
    const ids = JSON.parse(sessionStorage.getItem(DISMISSED_KEY) ?? '[]');
    return new Set(Array.isArray(ids) ? ids.filter((id) => typeof id === 'string') : []);
  } catch {
    return new Set(); // storage disabled or unreadable: dismissals last until a reload
  }
}

function saveDismissed() {
  try {
    sessionStorage.setItem(DISMISSED_KEY, JSON.stringify([...dismissed].slice(-DISMISSED_MAX)));
  } catch {
    // Storage full or disabled: the row is hidden all the same, until a reload.
  }
}

// Cancel and Delete: offered only to a viewer who may write (updateWritable). A click
// changes nothing on the page by itself: the change comes back over the live stream (a
// new version with cancelRequested, or `removed`), as any other client's would. Delete
// cannot be undone, for anyone: its first click asks for a second, which counts from
// CONFIRM_AFTER_MS on (a double-click is one gesture) until CONFIRM_MS or the button
// loses focus.

const ACTIONS = {
  cancel: {
    label: 'Cancel',
    title: 'Ask its worker to stop',
    failed: 'Could not cancel',
    request: (jobId) => ({
      url: `/api/jobs/${encodeURIComponent(jobId)}/cancel`,
      init: { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' },
    }),
  },
  delete: {
    label: 'Delete',
    confirm: 'Confirm delete',
    title: 'Delete it on the server, for everyone',
    failed: 'Could not delete',
    request: (jobId) => ({
      url: `/api/jobs/${encodeURIComponent(jobId)}`,
      init: { method: 'DELETE' },
    }),
  },
};

/** What a viewer who may write can do to a job: cancel what runs, delete what is over. */
function actionsFor(job) {
  if (isTerminal(job)) return ['delete'];
  const actions = job.cancelRequested ? [] : ['cancel']; // asking twice changes nothing
  if (looksAbandoned(job)) actions.push('delete');
  return actions;
}

function looksAbandoned(job) {
  return serverNow() - Date.parse(job.updatedAt) >= IDLE_AFTER_MS;
}

function renderActions(row) {
  const wanted = writable && !row.leaving ? actionsFor(row.job) : [];
  const key = wanted.join(' ');
  if (key === row.actions) return;
  row.actions = key;
  const { el } = row;
  const names = Object.keys(ACTIONS);
  const focused = names.find((name) => el[name] && el[name] === document.activeElement);
  for (const name of names) {
    const shown = wanted.includes(name);
    if (shown && !el[name]) {
      el[name] = actionButton(row, name);
      el.actions.append(el[name]);
    }
    if (!el[name]) continue;
    el[name].hidden = !shown;
    if (!shown) {
      el[name].removeAttribute('aria-busy');
      disarm(row, name);
    }
  }
  el.actions.hidden = !wanted.length;
  el.root.classList.toggle('has-actions', wanted.length > 0);
  // A button that went away under the keyboard hands focus on, not to <body>.
  if (focused && !wanted.includes(focused)) (el[wanted[0]] ?? el.dismiss ?? el.id).focus();
}

function actionButton(row, name) {
  const action = ACTIONS[name];
  const button = h('button', `job-action is-${name}`, action.label);
  button.type = 'button';
  button.title = action.title;
  labelAction(row, button, action.label);
  button.addEventListener('click', () => act(row, name));
  button.addEventListener('blur', () => disarm(row, name));
  return button;
}

function labelAction(row, button, text) {
  const label = TYPES[row.job.jobType]?.label ?? 'Generic';
  button.textContent = text;
  button.setAttribute('aria-label', `${text} ${label} job ${shortId(row.id)}`);
}

/** The first click of an action that asks for a second: the button asks, for a while. */
function arm(row, name) {
  const button = row.el[name];
  labelAction(row, button, ACTIONS[name].confirm);
  button.classList.add('is-armed');
  row.armedAt = Date.now();
  row.armedTimer = setTimeout(() => disarm(row, name), CONFIRM_MS);
  say(`${button.getAttribute('aria-label')}: press again to confirm.`);
}

function disarm(row, name) {
  const button = row.el[name];
  if (!button?.classList.contains('is-armed')) return;
  clearTimeout(row.armedTimer);
  button.classList.remove('is-armed');
  labelAction(row, button, ACTIONS[name].label);
}

async function act(row, name) {
  const button = row.el[name];
  if (button.getAttribute('aria-busy') === 'true') return;
  if (ACTIONS[name].confirm) {
    if (!button.classList.contains('is-armed')) return arm(row, name);
    if (Date.now() - row.armedAt < CONFIRM_AFTER_MS) return; // unread: the same gesture
  }
  disarm(row, name);
  // A job about to go needs no output watch: its next poll would only hear 410.
  if (name === 'delete') endOutputWatch(row.id, false);
  // Busy until the server's change arrives and redraws the row (or removes it).
  button.setAttribute('aria-busy', 'true');
  showProblem(row, '');
  const { url, init } = ACTIONS[name].request(row.id);
  let problem;
  try {
    const response = await fetch(url, init);
    // A delete answered 410 found the job gone already: its `removed` is on its way too.
    if (response.ok || (name === 'delete' && response.status === 410)) return;
    problem = await problemOf(response);
  } catch {
    problem = { detail: 'the server could not be reached' };
  }
  button.removeAttribute('aria-busy');
  showProblem(row, `${ACTIONS[name].failed}: ${problem.detail}`);
  if (problem.status === 401 || problem.status === 403) {
    writesRefused = true; // the page was wrong that it may write: it stops offering to
    updateWritable();
  }
}

async function problemOf(response) {
  const body = await response.json().catch(() => null);
  const { status } = response;
  const detail = typeof body?.detail === 'string' ? body.detail : `the server answered ${status}`;
  return { status, detail };
}

function showProblem(row, text) {
  row.el.problem.textContent = text;
  row.el.problem.hidden = !text;
  if (text) say(text);
}

// Copying a job's id: the Clipboard API, or else the full id, selected, for the user to copy.

async function copyId(row) {
  const { el } = row;
  let copied = false;
  try {
    await navigator.clipboard.writeText(row.id);
    copied = true;
  } catch {
    // No Clipboard API (a page served over plain HTTP to another machine) or no permission.
    el.fullId.hidden = false;
    getSelection()?.selectAllChildren(el.fullId);
    try {
      copied = document.execCommand('copy');
    } catch {
      copied = false;
    }
  }
  clearTimeout(row.copiedTimer);
  el.id.classList.toggle('is-copied', copied);
  el.id.classList.toggle('is-selected', !copied);
  el.idIcon.replaceChildren(icon(copied ? CHECK_ICON : COPY_ICON));
  el.idLabel.textContent = copied ? 'Copied' : 'Selected';
  say(copied ? `Job ID ${row.id} copied.` : `Job ID ${row.id} selected: press Control C to copy it.`);
  row.copiedTimer = setTimeout(() => {
    el.id.classList.remove('is-copied', 'is-selected');
    el.idIcon.replaceChildren(icon(COPY_ICON));
    el.idLabel.textContent = shortId(row.id);
    if (copied) el.fullId.hidden = true;
  }, COPIED_MS);
}

function shortId(jobId) {
  return jobId.replace(/^job_/, '').slice(0, SHORT_ID);
}

// Output: a running job's tail under its row, live.
//
// The list's stream carries no output (only a stream of one job does), so the page opens
// a watch of one job, with `output: true`, for each unfinished job it shows that is
// processing or has output (`outputSize`), six at most. Appending output changes no
// version: a worker that streams tokens and reports nothing else until the end would
// show nothing live if the page waited for the list to tell of output. A job that brings
// no output in OUTPUT_QUIET_MS of watching gives its place up (and is watched again once
// the list says it has output), and so does one that brought none yet when a job known to
// have output waits: jobs that never write hold no place for long.
//
// Over WebSocket each watch is a socket. Over SSE each would be a stream, and a browser
// keeps six connections per origin over HTTP/1.1 for all its tabs together: a few tabs
// with running jobs would take them all, and the next tab, and every write, would wait.
// So over SSE on HTTP/1.1 the page polls output (the job every OUTPUT_POLL_MS, its new
// chunks when `outputSize` grew) and each tab holds one stream, the list's. Served over
// HTTP/2 or HTTP/3 (an HTTPS proxy), every stream shares one connection: output streams.
// Newer jobs (those on top) go first; a job waits for a free watch, and its output comes
// from its first chunk once it has one. A watch ends with its job (after its last chunk), and the job's tail stays
// on its row until the row goes.
//
// The tail is bounded: the last OUTPUT_TEXT_MAX characters of `token` chunks, joined as
// they stream, and the last OUTPUT_LINES lines of every other kind (`log` lines; other
// data as JSON).

const OUTPUT_WATCHES = 6;
// How the page itself came: 'h2' or 'h3' when one connection carries every request.
const MULTIPLEXED = ['h2', 'h3'].includes(
  performance.getEntriesByType?.('navigation')[0]?.nextHopProtocol,
);
const OUTPUT_TRANSPORT = transport === 'sse' && !MULTIPLEXED ? 'poll' : transport;
/** jobId → the watch of its output (a jobcast handle). */
const outputWatches = new Map();
/** Jobs that wait for a watch of their output. */
const outputWaiting = new Set();
/** Jobs whose output watch has ended, never to open again. */
const outputEnded = new Set();
/** Running jobs whose watch brought no output and gave its place up: watched again once
 * the list says they have output. */
const outputQuiet = new Set();
let outputRefused = false; // the token may read the list but not one job's stream
let outputStarting = false; // startOutputWatches is due, once this frame's rows are in

/** A row's job runs, or has output: watch its output, now or when a watch is free. */
function wantOutput(row) {
  const { id, job } = row;
  if (outputWatches.has(id) || outputEnded.has(id) || outputRefused) return;
  if (job.outputSize > 0) outputQuiet.delete(id);
  const mayWrite = job.outputSize > 0 || (job.status === 'processing' && !outputQuiet.has(id));
  if (row.leaving || isTerminal(job) || !mayWrite) {
    outputWaiting.delete(id);
    return;
  }
  outputWaiting.add(id);
  scheduleOutputWatches();
}

/** After the rows of this frame (a snapshot's, say), so the newest of them go first. */
function scheduleOutputWatches() {
  if (outputStarting) return;
  outputStarting = true;
  queueMicrotask(startOutputWatches);
}

/** Whether `row` goes before `other` for a watch: one known to have output, else newer. */
function outranks(row, other) {
  const hasOutput = (r) => r.job.outputSize > 0;
  if (hasOutput(row) !== hasOutput(other)) return hasOutput(row);
  return row.created > other.created;
}

function startOutputWatches() {
  outputStarting = false;
  while (outputWaiting.size && !outputRefused) {
    let best = null;
    for (const jobId of outputWaiting) {
      const row = rows.get(jobId);
      if (!row || row.leaving || isTerminal(row.job)) outputWaiting.delete(jobId);
      else if (!best || outranks(row, best)) best = row;
    }
    if (!best) return;
    // All taken: a job known to have output may have the place of one that showed none.
    if (outputWatches.size >= OUTPUT_WATCHES && !(best.job.outputSize > 0 && quietenOne())) return;
    outputWaiting.delete(best.id);
    startOutputWatch(best.id);
  }
}

function startOutputWatch(jobId) {
  const watch = watchJob(jobId, {
    transport: OUTPUT_TRANSPORT,
    pollInterval: OUTPUT_POLL_MS,
    pauseWhenHidden: HIDDEN_GRACE_MS,
    token,
    output: true,
    onOutput: (chunks) => addOutput(jobId, chunks),
    // The final state comes after the last chunk: the watch is over.
    onJob: (job) => {
      if (isTerminal(job)) endOutputWatch(jobId, true);
    },
    onRemoved: () => endOutputWatch(jobId, true),
    onState: ({ state }) => {
      if (state !== 'unauthorized' && state !== 'forbidden') return;
      outputRefused = true;
      endOutputWatch(jobId, true);
    },
  });
  outputWatches.set(jobId, { watch, since: Date.now() });
}

/** Ends the watch of the oldest job that has shown no output in `minAge` ms of watching:
 * whether there was one. The job waits until the list says it has output. */
function quietenOne(minAge = 0) {
  let oldest = null;
  const now = Date.now();
  for (const [jobId, { since }] of outputWatches) {
    const row = rows.get(jobId) ?? { id: jobId, created: '', job: {} };
    // Output shown, or known to be there (its chunks are on their way): not quiet.
    if (tails.has(jobId) || row.job.outputSize > 0 || now - since < minAge) continue;
    if (!oldest || row.created < oldest.created) oldest = row;
  }
  if (!oldest) return false;
  outputQuiet.add(oldest.id);
  endOutputWatch(oldest.id, false);
  return true;
}

/** Closes a job's output watch (`done`: for good) and hands its place to a waiting job. */
function endOutputWatch(jobId, done) {
  outputWaiting.delete(jobId);
  if (done) {
    outputEnded.add(jobId);
    outputQuiet.delete(jobId);
    if (outputEnded.size > 10_000) outputEnded.delete(outputEnded.values().next().value);
  }
  const watched = outputWatches.get(jobId);
  if (!watched) return;
  outputWatches.delete(jobId);
  watched.watch.close();
  scheduleOutputWatches(); // not from inside the ending watch's own callback
}

/** The last `most` UTF-16 units of `text`, never starting with half a character. */
function lastChars(text, most) {
  return text.slice(-most).replace(/^[\udc00-\udfff]/, '');
}

function addOutput(jobId, chunks) {
  let tail = tails.get(jobId);
  if (!tail) tails.set(jobId, (tail = { text: '', lines: [] }));
  for (const { data, kind } of chunks) {
    const text = typeof data === 'string' ? data : JSON.stringify(data);
    if (kind === 'token') {
      tail.text += text;
      if (tail.text.length > 2 * OUTPUT_TEXT_MAX) tail.text = lastChars(tail.text, OUTPUT_TEXT_MAX);
    } else {
      tail.lines.push(...text.replace(/\r?\n$/, '').split(/\r?\n/).slice(-OUTPUT_LINES));
      if (tail.lines.length > 2 * OUTPUT_LINES) tail.lines.splice(0, tail.lines.length - OUTPUT_LINES);
    }
  }
  if (tail.text.length > OUTPUT_TEXT_MAX) tail.text = lastChars(tail.text, OUTPUT_TEXT_MAX);
  if (tail.lines.length > OUTPUT_LINES) tail.lines.splice(0, tail.lines.length - OUTPUT_LINES);
  tailsChanged.add(jobId);
  if (!frame) frame = requestAnimationFrame(flush);
}

function renderOutput(row) {
  const tail = tails.get(row.id);
  const { el } = row;
  if (!tail) return;
  if (!el.output) {
    // A log of what the job produced, not announced as it grows (tokens would be too many).
    el.output = h('div', 'job-output');
    el.output.setAttribute('role', 'log');
    el.output.setAttribute('aria-live', 'off');
    el.output.setAttribute('aria-label', `${TYPES[row.job.jobType]?.label ?? 'Generic'} job output`);
    el.outputText = h('p', 'job-output-text');
    el.outputLines = h('pre', 'job-output-lines');
    el.output.append(el.outputText, el.outputLines);
    el.body.append(el.output);
  }
  const box = el.output;
  const following = box.scrollTop + box.clientHeight >= box.scrollHeight - 4; // at the end
  const lines = tail.lines.join('\n');
  if (el.outputText.textContent !== tail.text) el.outputText.textContent = tail.text;
  if (el.outputLines.textContent !== lines) el.outputLines.textContent = lines;
  el.outputText.hidden = !tail.text;
  el.outputLines.hidden = !lines;
  if (following) box.scrollTop = box.scrollHeight; // keeps to the newest, unless scrolled up
}

// Stale rows: while the page cannot hear the server its rows show the last known state,
// and nothing on them moves by itself (no elapsed ticking, no fading out).

function updateStale() {
  if (connection === 'paused') return; // a hidden tab: its rows stay as they were till shown
  const now = Date.now();
  let next = false; // before the first live connection there is nothing to be stale
  if (connectedAt && connection !== 'live') {
    // A short reconnect (a server restart, a tab shown again) is not worth marking;
    // anything else is, and stale rows stay so until the connection is live.
    const brief = connection === 'connecting' || connection === 'reconnecting';
    next = stale || !brief || now - quietSince >= STALE_AFTER_MS;
  }
  if (connectedAt && navigator.onLine === false) next = true;
  if (next === stale) return;
  stale = next;
  if (stale && connection === 'live') currentUntil = now; // the browser went offline
  list.classList.toggle('is-stale', stale);
  $('stale-note').hidden = !stale;
  if (stale) {
    const when = new Date(currentUntil || now).toLocaleTimeString();
    $('stale-text').textContent = `Not connected: showing the last known state, as of ${when}. Updates resume when the connection is back.`;
  } else {
    for (const row of rows.values()) if (!row.leaving && !isTerminal(row.job)) renderElapsed(row);
  }
}

for (const event of ['offline', 'online']) {
  addEventListener(event, () => {
    renderConnection();
    updateStale();
  });
}

function insertOrdered(row) {
  // Newest first; a new job is almost always the newest, so look from the top.
  let index = 0;
  while (index < ordered.length && ordered[index].created > row.created) index += 1;
  list.insertBefore(row.el.root, ordered[index]?.el.root ?? null);
  ordered.splice(index, 0, row);
}

function renderSummary() {
  const counts = { processing: 0, queued: 0, completed: 0, error: 0 };
  let visible = 0;
  for (const row of rows.values()) {
    if (row.leaving) continue;
    visible += 1;
    counts[row.job.status] = (counts[row.job.status] ?? 0) + 1;
  }
  const summary = $('summary');
  const text = Object.entries(counts)
    .filter(([, count]) => count)
    .map(([status, count]) => `${status}:${count}`)
    .join(' ');
  if (summary.dataset.text !== text) {
    summary.dataset.text = text;
    summary.replaceChildren(
      ...Object.entries(counts)
        .filter(([, count]) => count)
        .map(([status, count]) => {
          const item = h('li', `summary-item is-${status}`);
          item.append(h('span', 'summary-dot'), h('span', 'summary-count', String(count)), ` ${STATUS_TEXT[status].toLowerCase()}`);
          return item;
        }),
    );
  }
  $('empty').hidden = visible > 0 || !$('gate').hidden;
}

// Every second: elapsed times, and finished rows whose time is up fade out.
setInterval(() => {
  while (quietenOne(OUTPUT_QUIET_MS)); // watches that brought nothing give their place up
  updateStale();
  if (stale) return;
  const now = Date.now();
  for (const row of rows.values()) {
    if (row.leaving) continue;
    if (row.leaveAt && now >= row.leaveAt) leave(row);
    else if (!isTerminal(row.job)) {
      renderElapsed(row);
      renderActions(row); // an idle job may now look abandoned
    }
  }
}, 1_000);

// Announcements: status changes, gathered and spoken politely, never progress ticks.

const announcements = [];

function queueAnnouncement(job, previous) {
  const label = (TYPES[job.jobType] ?? TYPES.generic).label;
  let text;
  if (job.status === 'completed') text = `${label} job completed${job.documentId ? `, document ${job.documentId}` : ''}.`;
  else if (job.status === 'error') text = `${label} job failed: ${job.error ?? job.message}.`;
  else if (job.status === 'processing' && previous === 'queued') text = `${label} job started.`;
  else if (previous === null) text = `New ${label.toLowerCase()} job ${STATUS_TEXT[job.status].toLowerCase()}.`;
  if (!text) return;
  announcements.push({ status: job.status, text });
  if (!announceTimer) announceTimer = setTimeout(announce, ANNOUNCE_MS);
}

function queueCancelAnnouncement(job) {
  const label = (TYPES[job.jobType] ?? TYPES.generic).label;
  const text = `Cancel requested for ${label.toLowerCase()} job ${shortId(job.jobId)}.`;
  announcements.push({ status: 'cancel', text });
  if (!announceTimer) announceTimer = setTimeout(announce, ANNOUNCE_MS);
}

function announce() {
  announceTimer = 0;
  const items = announcements.splice(0);
  let text = items.map((item) => item.text).join(' ');
  if (items.length > 3) {
    const count = (status) => items.filter((item) => item.status === status).length;
    text = [
      [count('completed'), 'completed'],
      [count('error'), 'failed'],
      [count('processing'), 'started'],
      [count('queued'), 'queued'],
      [count('cancel'), 'asked to stop'],
    ]
      .filter(([n]) => n)
      .map(([n, what]) => `${n} ${n === 1 ? 'job' : 'jobs'} ${what}`)
      .join(', ') + '.';
  }
  say(text);
}

function say(text) {
  const region = $('announcer');
  // The same words twice in a row would not be spoken again: vary the whitespace.
  region.textContent = region.textContent === text ? `${text}\u00a0` : text;
}

// Demo panel ------------------------------------------------------------------------

async function setUpDemo() {
  let info = null;
  try {
    const response = await fetch('/api/demo', { cache: 'no-store' });
    observeClock(Date.parse(response.headers.get('date')));
    if (response.ok) info = await response.json();
  } catch {
    // No server right now: no demo panel.
  }
  if (!info?.enabled) return;
  const actions = $('demo-actions');
  for (const jobType of info.jobTypes ?? Object.keys(TYPES)) {
    const type = TYPES[jobType];
    if (!type) continue;
    const button = h('button', 'demo-button');
    button.type = 'button';
    button.dataset.jobType = jobType;
    button.append(icon(type.icon), h('span', '', type.label));
    button.addEventListener('click', () => startDemo(button, jobType));
    actions.append(button);
  }
  $('demo').hidden = false;
}

async function startDemo(button, jobType) {
  const message = $('demo-message');
  button.setAttribute('aria-busy', 'true');
  try {
    const response = await fetch('/api/demo/jobs', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ jobType }),
    });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      throw new Error(problem.detail ?? `the server answered ${response.status}`);
    }
    message.textContent = '';
  } catch (error) {
    message.textContent = `Could not start the job: ${error.message}`;
  } finally {
    button.removeAttribute('aria-busy');
  }
}

setUpDemo();

// Helpers ---------------------------------------------------------------------------

function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function icon(paths) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  svg.setAttribute('class', 'icon');
  for (const d of paths) {
    const path = document.createElementNS(SVG, 'path');
    path.setAttribute('d', d);
    svg.append(path);
  }
  return svg;
}

function subjectOf(job) {
  const meta = job.metadata ?? {};
  const subject = meta.fileName ?? meta.title ?? meta.name ?? meta.task ?? '';
  return typeof subject === 'string' ? subject : '';
}

function clamp(value) {
  return Math.min(100, Math.max(0, value));
}

function duration(ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m ${String(seconds % 60).padStart(2, '0')}s`;
  return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, '0')}m`;
}
