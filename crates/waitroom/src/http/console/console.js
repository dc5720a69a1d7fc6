// The operator's console (GET /admin): plain ES2020, no build step, no library, no CDN.
//
// - Signed in with the admin token, kept in this tab's sessionStorage only and sent as
//   `Authorization: Bearer`; never in a URL (the view is chosen by the fragment: `#/` the rooms,
//   `#/rooms/{roomId}` one room).
// - Every REFRESH_INTERVAL_MS it reads GET /api/waiting-room/rooms (one request for every room)
//   and redraws the view; every figure comes from that answer.
// - The charts' history is kept here, in the browser (docs/operations.md says why): one sample
//   per room per refresh, at most HISTORY_SPAN_MS old and HISTORY_SAMPLES_MAX per room, for at
//   most HISTORY_ROOMS_MAX rooms, copied to sessionStorage so a reload of the tab keeps it.
// - Text from the API only ever reaches the page through textContent and attributes.
'use strict';

(() => {
  const API = '/api/waiting-room';
  const TOKEN_KEY = 'waitroom:console:token';
  const HISTORY_KEY = 'waitroom:console:history';
  const REFRESH_INTERVAL_MS = 2000;
  const REQUEST_TIMEOUT_MS = 10000;
  const HISTORY_SPAN_MS = 60 * 60 * 1000;
  const HISTORY_SAMPLES_MAX = 3600;
  const HISTORY_ROOMS_MAX = 50;
  const HISTORY_SAVE_INTERVAL_MS = 10000;
  // A chart spans the history it has, from its first sample to now, but at least this long (a
  // console opened a moment ago shows its first samples across a readable width) and at most
  // HISTORY_SPAN_MS.
  const CHART_SPAN_MIN_MS = 30 * 1000;
  // A gap in a chart where two samples are further apart than this (the tab slept, the node was
  // unreachable): no line is drawn across it.
  const HISTORY_GAP_MS = 3 * REFRESH_INTERVAL_MS + 2000;
  const ROOM_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
  const SESSION_ID = /^[A-Za-z0-9_-]{1,128}$/;
  const REASONS = ['timeout', 'left', 'completed', 'evicted', 'closed'];
  // The configuration's integer fields and their ranges: those of the API (docs/api.md,
  // RoomConfigBody); the server checks them again.
  const INTEGER_FIELDS = {
    capacity: { label: 'Capacity', min: 1, max: 1000000, optional: false },
    admitPerMinute: { label: 'Admissions per minute', min: 1, max: 10000000, optional: true },
    maxWaiting: { label: 'People waiting at most', min: 1, max: 100000000, optional: true },
    activeIdleTimeoutSeconds: { label: 'Active idle timeout', min: 1, max: 86400, optional: false },
    maxActiveSeconds: { label: 'Longest turn', min: 1, max: 86400, optional: false },
    waitingIdleTimeoutSeconds: { label: 'Waiting idle timeout', min: 1, max: 86400, optional: false },
    heartbeatIntervalSeconds: { label: 'Heartbeat interval', min: 1, max: 86400, optional: false },
    challengeDifficultyBits: { label: 'Join challenge', min: 0, max: 28, optional: false },
  };
  const TEXT_FIELDS = ['opensAt', 'targetUrl'];
  const TARGET_URL = /^[Hh][Tt][Tt][Pp][Ss]?:\/\/[!"$-.0-9:->@-~][!-~]*$/;
  const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

  const $ = (id) => document.getElementById(id);
  const numberFormat = new Intl.NumberFormat('en-US');
  const fmt = (n) => numberFormat.format(n);

  let token = sessionStorage.getItem(TOKEN_KEY);
  let rooms = new Map(); // roomId -> RoomBody, from the latest refresh
  let refreshTimer = null;
  let refreshing = false;
  let lastSaved = 0;
  let configFilledFrom = null; // JSON of the configuration the form was filled from
  let configDirty = false;
  const history = loadHistory();

  // ------------------------------------------------------------------------------------------
  // The API

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
    }
  }

  async function api(method, path, body, bearer = token) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), REQUEST_TIMEOUT_MS);
    const headers = { Accept: 'application/json' };
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(API + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
        signal: controller.signal,
      });
    } catch (e) {
      throw new ApiError(0, { title: 'The node did not answer' });
    } finally {
      clearTimeout(timer);
    }
    let json = null;
    try {
      json = await response.json();
    } catch (e) {
      json = null;
    }
    if (!response.ok) throw new ApiError(response.status, json);
    return json;
  }

  // ------------------------------------------------------------------------------------------
  // Views

  function show(view) {
    document.body.dataset.view = view;
    for (const id of ['sign-in-view', 'rooms-view', 'room-view']) {
      $(id).hidden = id !== `${view}-view`;
    }
    $('nav').hidden = view === 'sign-in';
  }

  function setText(id, text) {
    const node = $(id);
    if (node.textContent !== text) node.textContent = text;
  }

  function message(id, text, kind) {
    const node = $(id);
    node.hidden = !text;
    node.textContent = text || '';
    node.className = kind || '';
  }

  function notice(text) {
    message('notice', text, 'notice');
  }

  // `#/rooms/{roomId}` -> roomId; anything else -> null (the rooms list).
  function currentRoom() {
    const match = /^#\/rooms\/(.+)$/.exec(location.hash);
    if (!match) return null;
    let id;
    try {
      id = decodeURIComponent(match[1]);
    } catch (e) {
      return null;
    }
    return ROOM_ID.test(id) ? id : null;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return '—';
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) {
      const rest = s % 60;
      return rest ? `${Math.floor(s / 60)} min ${rest} s` : `${s / 60} min`;
    }
    const minutes = Math.floor((s % 3600) / 60);
    return `${Math.floor(s / 3600)} h ${String(minutes).padStart(2, '0')} min`;
  }

  function roomState(room) {
    if (room.config.paused) return { text: 'Paused', kind: 'paused' };
    if (room.config.opensAt && Date.parse(room.config.opensAt) > Date.now()) {
      return { text: 'Pre-queue', kind: 'prequeue' };
    }
    if (room.config.queueingMethod === 'reject') return { text: 'Refusing joins', kind: 'paused' };
    if (room.config.queueingMethod === 'inviteOnly') return { text: 'Invite-only', kind: 'paused' };
    if (room.config.queueingMethod === 'passthrough') return { text: 'Passthrough', kind: 'open' };
    if (room.stats.activeCount >= (room.stats.capacityNow ?? room.config.capacity)) return { text: 'Full', kind: 'full' };
    return { text: 'Admitting', kind: 'open' };
  }

  function expiredText(stats, reasons) {
    return reasons.map((r) => fmt(stats.expiredTotal[r])).join(' · ');
  }

  // ------------------------------------------------------------------------------------------
  // Sign in and out

  async function signIn(event) {
    event.preventDefault();
    const given = $('token').value.trim();
    if (!given) {
      message('sign-in-error', 'Enter the admin token.', 'error');
      return;
    }
    $('sign-in').disabled = true;
    message('sign-in-error', '');
    try {
      const list = await api('GET', '/rooms', undefined, given);
      token = given;
      sessionStorage.setItem(TOKEN_KEY, token);
      $('token').value = '';
      received(list);
      route();
    } catch (e) {
      message('sign-in-error', e.status === 401
        ? 'That token was refused: it is not this node\'s admin token.'
        : `Could not sign in: ${e.message}`, 'error');
    } finally {
      $('sign-in').disabled = false;
    }
  }

  function signOut(why) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(refreshTimer);
    refreshTimer = null;
    rooms = new Map();
    notice('');
    show('sign-in');
    message('sign-in-error', why || '', 'error');
    $('token').focus();
  }

  // ------------------------------------------------------------------------------------------
  // Refresh

  function schedule() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(refresh, REFRESH_INTERVAL_MS);
  }

  async function refresh() {
    if (!token || refreshing) return;
    refreshing = true;
    try {
      received(await api('GET', '/rooms'));
      notice('');
      render();
    } catch (e) {
      if (e.status === 401) {
        signOut('The node refused the admin token (was it changed?). Sign in again.');
        return;
      }
      notice(e.status === 0
        ? 'Cannot reach the node: retrying. The figures below are from the last answer.'
        : `The node answered ${e.status}: ${e.message}. Retrying.`);
    } finally {
      refreshing = false;
      if (token) schedule();
    }
  }

  function received(list) {
    const now = Date.now();
    rooms = new Map(list.rooms.map((room) => [room.roomId, room]));
    // A room closed (here or elsewhere) takes its history with it.
    for (const id of history.keys()) if (!rooms.has(id)) history.delete(id);
    for (const room of list.rooms) record(room, now);
    setText('updated', `Updated ${new Date(now).toLocaleTimeString('en-GB')}`);
    if (now - lastSaved >= HISTORY_SAVE_INTERVAL_MS) saveHistory();
  }

  function route() {
    if (!token) {
      show('sign-in');
      return;
    }
    const room = currentRoom();
    if (room === null) {
      show('rooms');
    } else {
      show('room');
      configFilledFrom = null;
      configDirty = false;
      message('config-message', '');
      message('evict-message', '');
      message('action-message', '');
      $('evict-id').value = '';
    }
    render();
    schedule();
  }

  function render() {
    if (!token) return;
    const room = currentRoom();
    if (room === null) renderRooms();
    else renderRoom(room);
  }

  // ------------------------------------------------------------------------------------------
  // The rooms list

  function renderRooms() {
    const body = $('rooms-body');
    $('rooms-empty').hidden = rooms.size > 0;
    $('rooms-table').hidden = rooms.size === 0;
    const rows = [];
    for (const room of rooms.values()) {
      const { stats, config } = room;
      const state = roomState(room);
      const row = document.createElement('tr');
      row.dataset.room = room.roomId;
      const link = document.createElement('a');
      link.href = `#/rooms/${encodeURIComponent(room.roomId)}`;
      link.textContent = room.roomId;
      const cells = [
        [link],
        [badge(state)],
        fmt(stats.waitingCount),
        `${fmt(stats.activeCount)} / ${fmt(stats.capacityNow ?? config.capacity)}`,
        fmt(stats.admissionsPerMinute),
        duration(stats.oldestWaitingSeconds),
        duration(stats.newcomerWaitSeconds),
        expiredText(stats, REASONS),
      ];
      cells.forEach((content, i) => {
        const cell = document.createElement(i === 0 ? 'th' : 'td');
        if (i === 0) cell.scope = 'row';
        if (i >= 2) cell.className = 'num';
        if (typeof content === 'string') cell.textContent = content;
        else cell.append(...content);
        row.append(cell);
      });
      rows.push(row);
    }
    body.replaceChildren(...rows);
  }

  function badge(state) {
    const node = document.createElement('span');
    node.className = `badge ${state.kind}`;
    node.textContent = state.text;
    return node;
  }

  // ------------------------------------------------------------------------------------------
  // One room

  function renderRoom(id) {
    const room = rooms.get(id);
    setText('room-title', id);
    document.title = `${id} · Console · waitroom`;
    $('room-live').hidden = !room;
    if (!room) {
      $('room-state').hidden = true;
      message('room-gone', `There is no room ${id} (never created, or closed).`, 'error');
      return;
    }
    message('room-gone', '');
    const { stats, config } = room;
    const state = roomState(room);
    const stateNode = $('room-state');
    stateNode.hidden = false;
    stateNode.className = `badge ${state.kind}`;
    setText('room-state', state.text);
    setText('fig-waiting', fmt(stats.waitingCount));
    // The capacity in force: a running event's, else the room's.
    setText('fig-active', `${fmt(stats.activeCount)} / ${fmt(stats.capacityNow ?? config.capacity)}`);
    setText('fig-apm', fmt(stats.admissionsPerMinute));
    setText('fig-oldest', duration(stats.oldestWaitingSeconds));
    setText('fig-newcomer', duration(stats.newcomerWaitSeconds));
    setText('fig-passes', fmt(stats.passesOutstanding));
    setText('fig-event', eventText(stats, config.events || []));
    setText('fig-admitted', fmt(stats.admittedTotal));
    setText('fig-expired', expiredText(stats, REASONS));
    setText('pause', config.paused ? 'Resume admissions' : 'Pause admissions');
    $('preview').href = `/room/${encodeURIComponent(id)}?preview`;
    $('close-room').textContent = `Close ${id}…`;
    fillConfig(config);
    renderCharts(id, config);
  }

  // The running and the next scheduled event, in this browser's time zone.
  function eventText(stats, events) {
    const byName = (name) => events.find((e) => e.name === name);
    const local = (text) => new Date(Date.parse(text)).toLocaleString('en-GB');
    const settings = (e) => [
      e.capacity === null ? null : `capacity ${fmt(e.capacity)}`,
      e.admitPerMinute === null ? null : `${fmt(e.admitPerMinute)} a minute`,
    ].filter(Boolean).join(', ');
    const parts = [];
    const current = stats.currentEvent && byName(stats.currentEvent);
    if (current) {
      const own = settings(current);
      parts.push(`${current.name} until ${local(current.endsAt)}${own ? ` (${own})` : ''}`);
    }
    const next = stats.nextEvent && byName(stats.nextEvent);
    if (next) {
      const queue = next.preQueueMinutes === null ? '' : `, pre-queue from ${next.preQueueMinutes} min before`;
      parts.push(`next: ${next.name} at ${local(next.startsAt)}${queue}`);
    }
    if (parts.length) return parts.join('; ');
    return events.length ? 'None left (all ended)' : 'None scheduled';
  }

  // The form follows the server's configuration until the operator edits it; then it says when
  // the configuration changed on the node meanwhile (the pause aside: a save keeps the room's).
  function fillConfig(config, force) {
    const json = JSON.stringify({ ...config, paused: null });
    if (!force && json === configFilledFrom) return;
    if (!force && configDirty) {
      setText('config-dirty', 'Unsaved changes, and the room\'s configuration changed on the node '
        + 'meanwhile (“Undo my changes” shows it).');
      return;
    }
    configFilledFrom = json;
    configDirty = false;
    $('config-dirty').hidden = true;
    setText('config-dirty', 'Unsaved changes');
    for (const name of Object.keys(INTEGER_FIELDS)) {
      const value = config[name];
      $(`cfg-${name}`).value = value === null || value === undefined ? '' : String(value);
    }
    for (const name of TEXT_FIELDS) $(`cfg-${name}`).value = config[name] || '';
    $('cfg-queueingMethod').value = config.queueingMethod || 'fifo';
    const events = config.events || [];
    setText('cfg-events', events.length
      ? `${events.length} scheduled event${events.length === 1 ? '' : 's'} (${events.map((e) => e.name).join(', ')}): `
        + 'saving keeps them as they are on the node; change them with PUT …/rooms/{roomId} or the rooms file.'
      : 'No scheduled events (add them with PUT …/rooms/{roomId} or the rooms file).');
    for (const name of [...Object.keys(INTEGER_FIELDS), ...TEXT_FIELDS]) fieldError(name, '');
    showOpensAtLocal();
  }

  function fieldError(name, text) {
    const node = $(`err-${name}`);
    node.textContent = text;
    $(`cfg-${name}`).setAttribute('aria-invalid', text ? 'true' : 'false');
  }

  function showOpensAtLocal() {
    const text = $('cfg-opensAt').value.trim();
    const ms = RFC3339.test(text) ? Date.parse(text) : NaN;
    $('opens-at-local').textContent = !text
      ? 'empty: open'
      : Number.isNaN(ms) ? 'like 2026-12-07T10:00:00Z' : `= ${new Date(ms).toLocaleString('en-GB')} here`;
  }

  // The form's values as a configuration body, or null after marking what is wrong.
  function readConfig(paused) {
    const body = { paused };
    let ok = true;
    for (const [name, field] of Object.entries(INTEGER_FIELDS)) {
      const text = $(`cfg-${name}`).value.trim();
      fieldError(name, '');
      if (text === '') {
        if (field.optional) {
          body[name] = null;
          continue;
        }
        fieldError(name, `${field.label} is required.`);
        ok = false;
        continue;
      }
      const n = Number(text);
      if (!/^\d+$/.test(text) || n < field.min || n > field.max) {
        fieldError(name, `${field.label} must be a whole number from ${fmt(field.min)} to ${fmt(field.max)}.`);
        ok = false;
        continue;
      }
      body[name] = n;
    }
    const heartbeat = body.heartbeatIntervalSeconds;
    if (ok && (heartbeat >= body.activeIdleTimeoutSeconds || heartbeat >= body.waitingIdleTimeoutSeconds)) {
      fieldError('heartbeatIntervalSeconds', 'The heartbeat interval must be below both idle timeouts.');
      ok = false;
    }
    const opensAt = $('cfg-opensAt').value.trim();
    fieldError('opensAt', '');
    if (opensAt && !RFC3339.test(opensAt)) {
      fieldError('opensAt', 'Opens at must be an RFC 3339 date-time, like 2026-12-07T10:00:00Z (or empty).');
      ok = false;
    }
    body.opensAt = opensAt || null;
    const targetUrl = $('cfg-targetUrl').value.trim();
    fieldError('targetUrl', '');
    if (targetUrl && (!TARGET_URL.test(targetUrl) || targetUrl.length > 2048)) {
      fieldError('targetUrl', 'The target URL must be an absolute http:// or https:// URL (or empty).');
      ok = false;
    }
    body.targetUrl = targetUrl || null;
    body.queueingMethod = $('cfg-queueingMethod').value;
    return ok ? body : null;
  }

  // The room as the node has it now (not the last refresh): a PUT replaces the whole
  // configuration, so it starts from the latest one.
  async function freshRoom(id) {
    return api('GET', `/rooms/${encodeURIComponent(id)}`);
  }

  async function saveConfig(event) {
    event.preventDefault();
    const id = currentRoom();
    if (!id) return;
    message('config-message', '');
    const button = $('save-config');
    button.disabled = true;
    try {
      const latest = await freshRoom(id);
      const body = readConfig(latest.config.paused);
      if (!body) {
        message('config-message', 'Nothing was saved: correct the fields marked above.', 'error');
        return;
      }
      // The form does not edit events: a PUT replaces the whole configuration, so they go back
      // as the node has them.
      body.events = latest.config.events || [];
      const saved = await api('PUT', `/rooms/${encodeURIComponent(id)}`, body);
      rooms.set(id, saved);
      record(saved, Date.now());
      configDirty = false;
      fillConfig(saved.config, true);
      message('config-message', `Saved: capacity ${fmt(saved.config.capacity)}`
        + (saved.config.queueingMethod && saved.config.queueingMethod !== 'fifo'
          ? `, ${saved.config.queueingMethod}` : '')
        + (saved.config.challengeDifficultyBits
          ? `, a ${saved.config.challengeDifficultyBits}-bit join challenge.` : '.'), 'ok');
      render();
    } catch (e) {
      failed('config-message', e, 'Not saved');
    } finally {
      button.disabled = false;
    }
  }

  async function togglePause() {
    const id = currentRoom();
    if (!id) return;
    const button = $('pause');
    button.disabled = true;
    message('action-message', '');
    try {
      const latest = await freshRoom(id);
      const config = { ...latest.config, paused: !latest.config.paused };
      const saved = await api('PUT', `/rooms/${encodeURIComponent(id)}`, config);
      rooms.set(id, saved);
      record(saved, Date.now());
      message('action-message', saved.config.paused
        ? 'Paused: nobody is admitted until you resume. Joins, heartbeats and timeouts go on.'
        : 'Resumed: admissions go on.', 'ok');
      render();
    } catch (e) {
      failed('action-message', e, 'Could not change the pause');
    } finally {
      button.disabled = false;
    }
  }

  async function evict(event) {
    event.preventDefault();
    const id = currentRoom();
    const session = $('evict-id').value.trim();
    message('evict-message', '');
    if (!SESSION_ID.test(session)) {
      message('evict-message', 'Enter a session id (wr_ followed by letters, digits, - and _).', 'error');
      return;
    }
    const button = $('evict');
    button.disabled = true;
    try {
      // Reading a session needs no token; it tells which room it is in, so a session of another
      // room is not evicted from this one's page by mistake.
      const view = await api('GET', `/sessions/${encodeURIComponent(session)}`, undefined, null);
      if (view.roomId !== id) {
        message('evict-message', `${session} is in room ${view.roomId}, not ${id}: not evicted.`, 'error');
        return;
      }
      if (view.status === 'EXPIRED') {
        message('evict-message', `${session} has already ended (${view.expiredReason || 'unknown reason'}).`, 'error');
        return;
      }
      await api('POST', `/sessions/${encodeURIComponent(session)}:evict`);
      $('evict-id').value = '';
      message('evict-message', `Evicted ${session} (it was ${view.status.toLowerCase()}).`, 'ok');
      refreshNow();
    } catch (e) {
      if (e.status === 404) message('evict-message', `There is no session ${session}.`, 'error');
      else failed('evict-message', e, 'Not evicted');
    } finally {
      button.disabled = false;
    }
  }

  // Passes: the codes are in the answer only (the node keeps their hashes), so they are shown
  // once, here, with a copy button and a download; nothing keeps them after this page.
  let passesUrl = null;

  function clearPasses() {
    $('passes-codes').value = '';
    $('passes-result').hidden = true;
    if (passesUrl) URL.revokeObjectURL(passesUrl);
    passesUrl = null;
  }

  async function issuePasses(event) {
    event.preventDefault();
    const id = currentRoom();
    message('passes-message', '');
    clearPasses();
    const count = Number($('passes-count').value);
    const hours = Number($('passes-hours').value);
    if (!Number.isInteger(count) || count < 1 || count > 10000) {
      message('passes-message', 'How many: a whole number from 1 to 10,000.', 'error');
      return;
    }
    if (!Number.isInteger(hours) || hours < 1 || hours > 720) {
      message('passes-message', 'Valid for: a whole number of hours from 1 to 720.', 'error');
      return;
    }
    const button = $('issue-passes');
    button.disabled = true;
    try {
      const body = await api('POST', `/rooms/${encodeURIComponent(id)}/passes`, {
        count,
        expiresInSeconds: hours * 3600,
      });
      const text = body.passes.join('\n') + '\n';
      $('passes-codes').value = text;
      passesUrl = URL.createObjectURL(new Blob([text], { type: 'text/plain' }));
      $('passes-download').href = passesUrl;
      $('passes-download').download = `passes-${id}.txt`;
      $('passes-result').hidden = false;
      message('passes-message', `Issued ${body.passes.length} passes for ${id}, valid until ${body.expiresAt}. They are not shown again.`, 'ok');
    } catch (e) {
      failed('passes-message', e, 'No passes issued');
    } finally {
      button.disabled = false;
    }
  }

  async function copyPasses() {
    const codes = $('passes-codes');
    try {
      await navigator.clipboard.writeText(codes.value);
      message('passes-message', 'Copied.', 'ok');
    } catch (e) {
      codes.select();
      message('passes-message', 'Select the codes and copy them (the browser refused the clipboard).', 'error');
    }
  }

  function openClose() {
    const id = currentRoom();
    const room = id && rooms.get(id);
    if (!room) return;
    setText('close-title', `Close ${id}?`);
    setText('close-what', `Everyone in ${id} is sent away now: ${fmt(room.stats.waitingCount)} waiting and `
      + `${fmt(room.stats.activeCount)} active (their pages say the room closed). The room is gone `
      + 'afterwards; this cannot be undone.');
    setText('close-confirm-label', `Type ${id} to confirm`);
    setText('close-confirm', `Close ${id}`);
    $('close-confirm-input').value = '';
    $('close-confirm').disabled = true;
    message('close-error', '');
    $('close-dialog').showModal();
    $('close-cancel').focus();
  }

  async function confirmClose() {
    const id = currentRoom();
    if (!id || $('close-confirm-input').value.trim() !== id) return;
    $('close-confirm').disabled = true;
    try {
      await api('DELETE', `/rooms/${encodeURIComponent(id)}`);
      rooms.delete(id);
      history.delete(id);
      saveHistory();
      $('close-dialog').close();
      location.hash = '#/';
      message('rooms-message', `Closed ${id}.`, 'ok');
      refreshNow();
    } catch (e) {
      failed('close-error', e, 'Not closed');
      $('close-confirm').disabled = false;
    }
  }

  function failed(id, e, what) {
    if (e.status === 401) {
      signOut('The node refused the admin token (was it changed?). Sign in again.');
      return;
    }
    message(id, `${what}: ${e.message}`, 'error');
  }

  function refreshNow() {
    clearTimeout(refreshTimer);
    refresh();
  }

  // ------------------------------------------------------------------------------------------
  // History and charts

  function loadHistory() {
    const map = new Map();
    try {
      const saved = JSON.parse(sessionStorage.getItem(HISTORY_KEY) || '{}');
      const since = Date.now() - HISTORY_SPAN_MS;
      for (const [id, samples] of Object.entries(saved)) {
        if (ROOM_ID.test(id) && Array.isArray(samples)) {
          map.set(id, samples.filter((s) => Array.isArray(s) && s.length === 6 && s[0] >= since));
        }
      }
    } catch (e) {
      // Unreadable: start afresh.
    }
    return map;
  }

  function saveHistory() {
    lastSaved = Date.now();
    try {
      sessionStorage.setItem(HISTORY_KEY, JSON.stringify(Object.fromEntries(history)));
    } catch (e) {
      // Over the storage quota: the history stays in memory (lost on reload).
    }
  }

  // One sample: [time ms, waiting, active, capacity in force, admissions/min, newcomer's wait s or -1].
  function record(room, now) {
    const id = room.roomId;
    let samples = history.get(id);
    if (!samples) {
      if (history.size >= HISTORY_ROOMS_MAX && id !== currentRoom()) return;
      samples = [];
      history.set(id, samples);
    }
    const s = room.stats;
    const wait = s.newcomerWaitSeconds === null ? -1 : s.newcomerWaitSeconds;
    samples.push([now, s.waitingCount, s.activeCount, s.capacityNow ?? room.config.capacity, s.admissionsPerMinute, wait]);
    const since = now - HISTORY_SPAN_MS;
    let drop = 0;
    while (drop < samples.length && samples[drop][0] < since) drop += 1;
    drop = Math.max(drop, samples.length - HISTORY_SAMPLES_MAX);
    if (drop > 0) samples.splice(0, drop);
  }

  const SVG = 'http://www.w3.org/2000/svg';
  const CHART = { width: 480, height: 170, left: 56, right: 10, top: 12, bottom: 26 };

  function svg(name, attributes) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
    return node;
  }

  function renderCharts(id) {
    const samples = history.get(id) || [];
    const first = samples.length ? samples[0][0] : Date.now();
    const minutes = Math.max(0, Math.round((Date.now() - first) / 60000));
    setText('history-note', samples.length
      ? `(kept by this tab since ${new Date(first).toLocaleTimeString('en-GB')}, ${minutes} min)`
      : '(kept by this tab while it is open)');
    chart('chart-waiting', samples, [{ index: 1, kind: 'waiting' }], fmt);
    chart('chart-active', samples, [{ index: 2, kind: 'active' }, { index: 3, kind: 'capacity' }], fmt);
    chart('chart-apm', samples, [{ index: 4, kind: 'apm' }], fmt);
    chart('chart-newcomer', samples, [{ index: 5, kind: 'newcomer' }], duration);
  }

  // A line chart of the history (at most the last hour): x from its first sample (or
  // CHART_SPAN_MIN_MS ago) to now, y from 0 to a round maximum.
  function chart(figureId, samples, series, label) {
    const figure = $(figureId);
    const { width, height, left, right, top, bottom } = CHART;
    const now = Date.now();
    const first = samples.length ? samples[0][0] : now;
    const span = Math.min(HISTORY_SPAN_MS, Math.max(CHART_SPAN_MIN_MS, now - first));
    const from = now - span;
    const plotWidth = width - left - right;
    const plotHeight = height - top - bottom;
    let max = 0;
    for (const s of samples) for (const { index } of series) max = Math.max(max, s[index]);
    const top_ = niceMax(max);
    const x = (t) => left + ((t - from) / span) * plotWidth;
    const y = (v) => top + plotHeight - (v / top_) * plotHeight;
    const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', class: 'chart' });
    const latest = samples.length ? samples[samples.length - 1] : null;
    const describe = latest
      ? series.map(({ index, kind }) => `${kind} ${latest[index] < 0 ? 'unknown' : label(latest[index])}`).join(', ')
      : 'no samples yet';
    root.setAttribute('aria-label', `${figure.querySelector('figcaption').textContent}: ${describe}`);
    for (const fraction of [0, 0.5, 1]) {
      const v = top_ * fraction;
      root.append(svg('line', { x1: left, x2: width - right, y1: y(v), y2: y(v), class: 'grid' }));
      const text = svg('text', { x: left - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' });
      text.textContent = label(v);
      root.append(text);
    }
    for (const [ago, anchor] of [[span, 'start'], [span / 2, 'middle'], [0, 'end']]) {
      const text = svg('text', { x: x(now - ago), y: height - 6, 'text-anchor': anchor, class: 'axis' });
      text.textContent = ago === 0 ? 'now' : `−${ago >= 120000 ? `${Math.round(ago / 60000)} min` : `${Math.round(ago / 1000)} s`}`;
      root.append(text);
    }
    for (const { index, kind } of series) {
      // One polyline per stretch without a gap; an unknown value (-1) is a gap too.
      let points = [];
      const flush = () => {
        if (points.length === 1) {
          const [px, py] = points[0].split(',');
          root.append(svg('circle', { cx: px, cy: py, r: 2.5, class: `dot ${kind}` }));
        } else if (points.length > 1) {
          root.append(svg('polyline', { points: points.join(' '), class: `series ${kind}` }));
        }
        points = [];
      };
      let previous = null;
      for (const s of samples) {
        if (s[index] < 0 || (previous !== null && s[0] - previous > HISTORY_GAP_MS)) flush();
        if (s[index] >= 0) points.push(`${x(s[0]).toFixed(1)},${y(s[index]).toFixed(1)}`);
        previous = s[0];
      }
      flush();
    }
    const old = figure.querySelector('svg');
    if (old) old.replaceWith(root);
    else figure.append(root);
    figure.dataset.samples = String(samples.length);
  }

  // 1, 2 or 5 times a power of ten, at least `max` (and at least 1).
  function niceMax(max) {
    if (max <= 1) return 1;
    const power = 10 ** Math.floor(Math.log10(max));
    for (const step of [1, 2, 5, 10]) if (step * power >= max) return step * power;
    return 10 * power;
  }

  // ------------------------------------------------------------------------------------------
  // Start

  function start() {
    $('sign-in-form').addEventListener('submit', signIn);
    $('sign-out').addEventListener('click', () => signOut(''));
    $('config-form').addEventListener('submit', saveConfig);
    $('config-form').addEventListener('input', () => {
      configDirty = true;
      $('config-dirty').hidden = false;
      showOpensAtLocal();
    });
    $('reset-config').addEventListener('click', () => {
      const room = rooms.get(currentRoom());
      if (room) fillConfig(room.config, true);
      message('config-message', '');
    });
    $('pause').addEventListener('click', togglePause);
    $('evict-form').addEventListener('submit', evict);
    $('passes-form').addEventListener('submit', issuePasses);
    $('passes-copy').addEventListener('click', copyPasses);
    window.addEventListener('hashchange', clearPasses);
    $('close-room').addEventListener('click', openClose);
    $('close-cancel').addEventListener('click', () => $('close-dialog').close());
    $('close-confirm-input').addEventListener('input', () => {
      $('close-confirm').disabled = $('close-confirm-input').value.trim() !== currentRoom();
    });
    $('close-confirm').addEventListener('click', confirmClose);
    window.addEventListener('hashchange', () => {
      if ($('close-dialog').open) $('close-dialog').close();
      if (currentRoom() === null) {
        // Keep a "Closed …" message only on the way back from closing.
      } else {
        message('rooms-message', '');
      }
      route();
    });
    window.addEventListener('pagehide', saveHistory);
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') refreshNow();
    });
    if (token) {
      // Signed in earlier in this tab: check the token still works before showing anything.
      show('loading');
      api('GET', '/rooms').then((list) => {
        received(list);
        route();
      }, (e) => {
        if (e.status === 401) signOut('The node refused the admin token (was it changed?). Sign in again.');
        else {
          route();
          notice(`Cannot read the rooms yet (${e.message}): retrying.`);
        }
      });
    } else {
      show('sign-in');
      $('token').focus();
    }
  }

  start();
})();
