// corecast live-room demo: a goim v2 client in plain JavaScript (no build step, no
// dependencies, works offline). It joins a room over WebSocket with goim's binary protocol,
// shows every push as danmaku and in a list, follows the room's online count, and pushes
// through goim's HTTP API (POST /goim/push/room) from a form.
//
// goim frames (all big-endian): packLen u32 (16 + body), headerLen u16 (16), ver u16, op u32,
// seq u32, then the body. One frame per WebSocket binary message; a push arrives as op 9 whose
// body holds one or more complete inner frames (op = the pushed operation).
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);

  // ---- goim's binary protocol --------------------------------------------------------------

  const HEADER_LEN = 16;
  const OP = {
    HEARTBEAT: 2,
    HEARTBEAT_REPLY: 3,
    DISCONNECT_REPLY: 6,
    AUTH: 7,
    AUTH_REPLY: 8,
    RAW: 9,
    RECOVER: 26,
    RECOVER_REPLY: 27,
  };
  const OP_NAMES = {
    2: 'heartbeat', 3: 'heartbeat reply', 4: 'send msg', 6: 'disconnect reply', 7: 'auth',
    8: 'auth reply', 9: 'raw batch', 12: 'change room', 13: 'change room reply', 14: 'sub',
    15: 'sub reply', 16: 'unsub', 17: 'unsub reply', 22: 'join room', 23: 'join room reply',
    24: 'leave room', 25: 'leave room reply', 26: 'recover', 27: 'recover reply',
  };
  const encoder = new TextEncoder();
  const decoder = new TextDecoder('utf-8');

  /** One goim frame: the 16-byte header and `body` (a string or bytes). */
  function encodeFrame(op, seq, body) {
    const bytes = typeof body === 'string' ? encoder.encode(body) : (body || new Uint8Array(0));
    const buf = new ArrayBuffer(HEADER_LEN + bytes.length);
    const view = new DataView(buf); // DataView is big-endian unless told otherwise
    view.setUint32(0, HEADER_LEN + bytes.length); // packLen
    view.setUint16(4, HEADER_LEN); // headerLen
    view.setUint16(6, 1); // ver
    view.setInt32(8, op);
    view.setInt32(12, seq);
    new Uint8Array(buf, HEADER_LEN).set(bytes);
    return buf;
  }

  /** The frame at byte `at` of `buf`, which must end by `end`; throws on a malformed one. */
  function decodeFrame(buf, at, end) {
    if (end - at < HEADER_LEN) {
      throw new Error(`a frame of ${end - at} bytes is shorter than goim's 16-byte header`);
    }
    const view = new DataView(buf);
    const packLen = view.getUint32(at);
    const headerLen = view.getUint16(at + 4);
    if (headerLen !== HEADER_LEN) throw new Error(`headerLen ${headerLen}, not 16`);
    if (packLen < HEADER_LEN || packLen > end - at) {
      throw new Error(`packLen ${packLen} does not fit the ${end - at} bytes left`);
    }
    return {
      ver: view.getUint16(at + 6),
      op: view.getInt32(at + 8),
      seq: view.getInt32(at + 12),
      start: at,
      packLen,
      body: new Uint8Array(buf, at + HEADER_LEN, packLen - HEADER_LEN),
    };
  }

  /** The inner frames of an op-9 frame, in order. */
  function innerFrames(buf, outer) {
    const frames = [];
    const end = outer.start + outer.packLen;
    for (let at = outer.start + HEADER_LEN; at < end;) {
      const f = decodeFrame(buf, at, end);
      frames.push(f);
      at += f.packLen;
    }
    return frames;
  }

  // ---- page state ---------------------------------------------------------------------------

  const hbSecs = Math.max(1, Number(params.get('hb')) || 5);
  const POLL_SECS = 2;
  const AUTH_TIMEOUT_MS = 10000;
  const MAX_RETRIES = 10;
  const MAX_LIST = 200;

  const conn = {
    gen: 0, // bumped on every connect/disconnect: events of older sockets are ignored
    ws: null,
    url: '',
    room: '',
    seq: 0,
    opened: false,
    authed: false,
    userClosed: false,
    retries: 0,
    lastReason: '', // the body of an op-6 (DisconnectReply), if one came
    hints: null, // goim's backoff hints from /goim/nodes/weighted
    timers: [],
    // The room offset (seq) of the last room message shown, and its room: after a reconnect
    // to the same room the page asks for what it missed (op 26).
    lastOffset: null,
    offsetRoom: '',
  };
  let wsSource = ''; // 'query', 'typed' or 'discovered'
  let msgCount = 0;
  const online = { hb: null, http: null };

  function now() {
    const d = new Date();
    const p = (n, w = 2) => String(n).padStart(w, '0');
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
  }

  function log(text, bad = false) {
    const li = document.createElement('li');
    if (bad) li.className = 'bad';
    const t = document.createElement('span');
    t.className = 'log-time';
    t.textContent = now();
    const b = document.createElement('span');
    b.textContent = text;
    li.append(t, b);
    const list = $('log');
    list.prepend(li);
    while (list.children.length > 100) list.lastElementChild.remove();
  }

  function setState(state, text) {
    const el = $('state');
    el.dataset.state = state;
    el.textContent = state;
    $('stage-state').textContent = text || state;
    const active = state === 'connected' || state === 'connecting' ||
      state === 'authenticating' || state === 'discovering' || state === 'reconnecting';
    $('disconnect').disabled = !active;
    $('drop').disabled = state !== 'connected';
  }

  function setError(text) {
    $('error').textContent = text || '';
    if (text) log(text, true);
  }

  /** Stops on an error: the state says so and the error says why. */
  function fail(text) {
    stopSocket();
    setState('error', 'not connected: see the error');
    setError(text);
  }

  function roomKey() {
    return `${$('room-type').value.trim()}://${$('room-id').value.trim()}`;
  }

  function authHeaders() {
    const secret = $('bearer').value.trim();
    return secret ? { Authorization: `Bearer ${secret}` } : {};
  }

  // ---- finding a gateway -------------------------------------------------------------------

  const isLoopback = (h) => h === 'localhost' || h === '::1' || h.startsWith('127.');

  /** The host of a node from /goim/nodes/weighted: `host:port`, `[v6]:port` or a bare host. */
  function nodeHost(node) {
    if (node.startsWith('[')) return node.slice(1, node.indexOf(']'));
    const colons = node.split(':').length - 1;
    if (colons === 1) return node.slice(0, node.indexOf(':'));
    return node; // a bare host or a bare IPv6 address
  }

  /** Asks the dispatcher for its best gateway and builds its WebSocket address. */
  async function discover() {
    setState('discovering', 'asking the dispatcher for a gateway');
    let r;
    try {
      r = await fetch('goim/nodes/weighted', { headers: authHeaders() });
    } catch (e) {
      throw new Error(`GET /goim/nodes/weighted failed: ${e.message}`);
    }
    let j;
    try {
      j = await r.json();
    } catch (e) {
      throw new Error(`GET /goim/nodes/weighted: HTTP ${r.status}, not goim's JSON envelope`);
    }
    if (j.code !== 0) {
      throw new Error(`GET /goim/nodes/weighted: code ${j.code}: ${j.message}` +
        (j.code === -401 ? ' (fill in the bearer secret, or pass ?ws=ws://host:port/sub)' : ''));
    }
    const d = j.data || {};
    conn.hints = d.backoff || null;
    const secure = location.protocol === 'https:';
    const port = secure ? d.wss_port : d.ws_port;
    if (!port) {
      throw new Error(`/goim/nodes/weighted advertises no ${secure ? 'wss_port' : 'ws_port'} ` +
        '(set [node] in dispatcher.toml, or pass ?ws=ws://host:port/sub)');
    }
    const nodes = d.nodes || [];
    if (nodes.length === 0) throw new Error('/goim/nodes/weighted lists no gateway');
    let host = nodeHost(nodes[0]);
    let note = `gateway ${nodes[0]} from /goim/nodes/weighted (best of ${nodes.length}), ` +
      `${secure ? 'wss_port' : 'ws_port'} ${port}`;
    if (isLoopback(host) && !isLoopback(location.hostname)) {
      // The dispatcher advertises a loopback address; a browser elsewhere reaches the host
      // that served this page instead.
      host = location.hostname;
      note += `; the node is a loopback address, so this page's host ${host} is used`;
    }
    const h = host.includes(':') ? `[${host}]` : host;
    return { url: `${secure ? 'wss' : 'ws'}://${h}:${port}/sub`, note };
  }

  // ---- the connection ----------------------------------------------------------------------

  function later(fn, ms) {
    const id = setTimeout(fn, ms);
    conn.timers.push(id);
    return id;
  }

  function every(fn, ms) {
    const id = setInterval(fn, ms);
    conn.timers.push(id);
    return id;
  }

  /** Closes the current socket (if any) without reporting its close. */
  function stopSocket() {
    conn.gen += 1;
    for (const id of conn.timers) {
      clearTimeout(id);
      clearInterval(id);
    }
    conn.timers = [];
    if (conn.ws) {
      try {
        conn.ws.close(1000, 'page disconnect');
      } catch (e) {
        // already closed
      }
    }
    conn.ws = null;
  }

  function buildToken(room) {
    const pasted = $('token').value.trim();
    if (pasted) return pasted;
    const accepts = $('accepts').value.split(',').map((s) => s.trim()).filter(Boolean)
      .map(Number).filter(Number.isInteger);
    return JSON.stringify({
      mid: Number($('mid').value) || 0,
      key: $('key').value.trim(),
      room_id: room,
      platform: 'web',
      accepts,
    });
  }

  async function connect(retry = false) {
    stopSocket();
    const gen = conn.gen;
    conn.userClosed = false;
    if (!retry) {
      conn.retries = 0;
      setError('');
    }
    const room = roomKey();
    conn.room = room;
    $('stage-room').textContent = room;
    startPolling(room);

    let url = $('ws').value.trim();
    if (!url || wsSource === 'discovered') {
      try {
        const found = await discover();
        if (gen !== conn.gen) return;
        url = found.url;
        wsSource = 'discovered';
        $('ws').value = url;
        $('ws-source').textContent = found.note;
      } catch (e) {
        if (gen !== conn.gen) return;
        if (retry) return retryLater(e.message);
        return fail(`no gateway address: ${e.message}`);
      }
    }
    if (!/^wss?:\/\//.test(url)) {
      return fail(`gateway address ${JSON.stringify(url)} is not ws://host:port/sub or wss://...`);
    }
    open(url, room, gen);
  }

  function open(url, room, gen) {
    conn.url = url;
    conn.opened = false;
    conn.authed = false;
    conn.lastReason = '';
    setState('connecting', `opening ${url}`);
    log(`opening ${url} for room ${room}`);
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      return fail(`cannot open ${url}: ${e.message}`);
    }
    ws.binaryType = 'arraybuffer';
    conn.ws = ws;

    ws.onopen = () => {
      if (gen !== conn.gen) return;
      conn.opened = true;
      setState('authenticating', `authenticating on ${url}`);
      const token = buildToken(room);
      log(`sent auth (op 7): ${token.length > 200 ? `${token.slice(0, 200)}...` : token}`);
      ws.send(encodeFrame(OP.AUTH, ++conn.seq, token));
      later(() => {
        if (gen === conn.gen && !conn.authed) {
          fail(`no auth reply (op 8) from ${url} within ${AUTH_TIMEOUT_MS / 1000} s`);
        }
      }, AUTH_TIMEOUT_MS);
    };

    ws.onmessage = (ev) => {
      if (gen !== conn.gen) return;
      if (!(ev.data instanceof ArrayBuffer)) {
        return fail('the gateway sent a text message; goim speaks binary frames');
      }
      try {
        onFrame(ev.data, decodeFrame(ev.data, 0, ev.data.byteLength));
      } catch (e) {
        fail(`malformed frame from the gateway: ${e.message}`);
      }
    };

    ws.onerror = () => {
      if (gen !== conn.gen) return;
      log(`WebSocket error on ${url}`, true);
    };

    ws.onclose = (ev) => {
      if (gen !== conn.gen) return;
      onClose(ev, url);
    };
  }

  function heartbeat() {
    if (conn.ws && conn.ws.readyState === WebSocket.OPEN) {
      conn.ws.send(encodeFrame(OP.HEARTBEAT, ++conn.seq, ''));
    }
  }

  function onFrame(buf, f) {
    switch (f.op) {
      case OP.AUTH_REPLY:
        conn.authed = true;
        conn.retries = 0;
        setError('');
        setState('connected', `in ${conn.room} on ${conn.url}`);
        log(`auth reply (op 8): joined ${conn.room}`);
        if (conn.lastOffset !== null && conn.offsetRoom === conn.room) {
          // Back after a drop: the gateway sends what the room got after the last offset
          // shown (op 27, then the messages), then the live stream.
          const body = `${conn.lastOffset} ${conn.room}`;
          conn.ws.send(encodeFrame(OP.RECOVER, ++conn.seq, body));
          log(`sent recover (op 26): ${body}`);
        }
        heartbeat();
        every(heartbeat, hbSecs * 1000);
        break;
      case OP.HEARTBEAT_REPLY:
        if (f.body.length >= 4) {
          const n = new DataView(buf, f.start + HEADER_LEN, 4).getInt32(0);
          setOnline('hb', n);
        }
        break;
      case OP.RAW:
        for (const inner of innerFrames(buf, f)) onPush(inner);
        break;
      case OP.RECOVER_REPLY: {
        const text = decoder.decode(f.body);
        const ok = /^ok (\d+) (\d+) /.exec(text);
        $('recovery').textContent = ok
          ? `recovered ${ok[1]} missed message${ok[1] === '1' ? '' : 's'} (up to offset ${ok[2]})`
          : `not recovered: ${text.replace(/^error: /, '')}`;
        $('recovery').dataset.outcome = ok ? 'ok' : 'error';
        log(`recover reply (op 27): ${text}`, !ok);
        break;
      }
      case OP.DISCONNECT_REPLY:
        conn.lastReason = decoder.decode(f.body);
        log(`the gateway is closing the connection (op 6): ${conn.lastReason}`, true);
        break;
      default:
        if (f.op >= 1000) {
          onPush(f);
        } else {
          const body = decoder.decode(f.body);
          log(`op ${f.op} (${OP_NAMES[f.op] || 'unknown'})${body ? `: ${body}` : ''}`);
        }
    }
  }

  const CLOSE_NAMES = {
    1000: 'normal', 1001: 'going away', 1002: 'protocol error', 1003: 'unsupported data',
    1006: 'abnormal: no Close frame', 1007: 'invalid data', 1008: 'policy violation',
    1009: 'message too big', 1011: 'server error', 1013: 'try again later',
  };

  function onClose(ev, url) {
    for (const id of conn.timers) {
      clearTimeout(id);
      clearInterval(id);
    }
    conn.timers = [];
    conn.ws = null;
    const code = `close code ${ev.code}${CLOSE_NAMES[ev.code] ? ` (${CLOSE_NAMES[ev.code]})` : ''}`;
    const reason = ev.reason || conn.lastReason;
    log(`WebSocket closed: ${code}${reason ? `, reason: ${reason}` : ''}`, !conn.userClosed);
    if (conn.userClosed) {
      setState('closed', 'disconnected');
      return;
    }
    if (!conn.opened) {
      const text = `could not open a WebSocket to ${url} (${code}): wrong address, gateway ` +
        'down, or the gateway refused the upgrade (an HTTP refusal such as 403 origin not ' +
        'allowed or 429/503 over a limit shows in the browser console)';
      if (conn.retries > 0) return retryLater(text);
      return fail(text);
    }
    if (!conn.authed) {
      return fail(`auth refused by the gateway: ${reason || 'closed without a reason'} (${code})`);
    }
    retryLater(`connection closed by the gateway: ${reason || 'no reason given'} (${code})`);
  }

  /** goim's backoff: min(max, base * factor^n) seconds, +/- jitter. */
  function backoffMs(n) {
    const h = conn.hints || {};
    const base = h.base_delay > 0 ? h.base_delay : 1;
    const factor = h.factor > 0 ? h.factor : 1.8;
    const max = h.max_delay > 0 ? h.max_delay : 30;
    const jitter = h.jitter > 0 ? h.jitter : 0;
    const secs = Math.min(max, base * factor ** n) * (1 + jitter * (2 * Math.random() - 1));
    return Math.max(0, secs * 1000);
  }

  function retryLater(why) {
    if (conn.retries >= MAX_RETRIES) {
      return fail(`${why}; gave up after ${MAX_RETRIES} reconnects`);
    }
    const ms = backoffMs(conn.retries);
    conn.retries += 1;
    stopSocket();
    setError(why);
    setState('reconnecting', `reconnecting in ${(ms / 1000).toFixed(1)} s`);
    log(`reconnect ${conn.retries} of ${MAX_RETRIES} in ${(ms / 1000).toFixed(1)} s`);
    later(() => connect(true), ms);
  }

  function disconnect() {
    conn.userClosed = true;
    stopSocket();
    setState('closed', 'disconnected');
    log('disconnected by the page');
  }

  // ---- messages ----------------------------------------------------------------------------

  function onPush(f) {
    const text = decoder.decode(f.body);
    // Room messages carry the room's offset in seq (key pushes and broadcasts: 0).
    const offset = f.seq >>> 0;
    if (offset !== 0) {
      conn.lastOffset = offset;
      conn.offsetRoom = conn.room;
    }
    msgCount += 1;
    $('msg-count').textContent = String(msgCount);

    const li = document.createElement('li');
    li.className = 'msg';
    li.dataset.op = String(f.op);
    if (offset !== 0) li.dataset.offset = String(offset);
    const t = document.createElement('span');
    t.className = 'msg-time';
    t.textContent = now();
    const o = document.createElement('span');
    o.className = 'msg-op';
    o.textContent = `op ${f.op}`;
    const b = document.createElement('span');
    b.className = 'msg-body';
    b.textContent = text;
    li.append(t, o, b);
    const list = $('messages');
    list.prepend(li);
    while (list.children.length > MAX_LIST) list.lastElementChild.remove();

    danmaku(text, f.op);
  }

  const SPEED_PX_PER_S = 150;
  const LANE_PX = 30;
  const laneFreeAt = [];

  /** Flies `text` across the stage in the lane that frees up first. */
  function danmaku(text, op) {
    const layer = $('danmaku');
    const lanes = Math.max(1, Math.floor(layer.clientHeight / LANE_PX));
    // The first free lane from the top; when all are busy, the one that frees up first.
    let lane = 0;
    for (let i = 0; i < lanes; i += 1) {
      const free = laneFreeAt[i] || 0;
      if (free <= performance.now()) {
        lane = i;
        break;
      }
      if (free < (laneFreeAt[lane] || 0)) lane = i;
    }
    const el = document.createElement('span');
    el.className = `danmaku op-${op}`;
    el.textContent = text.length > 120 ? `${text.slice(0, 120)}...` : text;
    el.style.top = `${lane * LANE_PX}px`;
    layer.append(el);
    // Measured before the animation starts: the flight takes as long as its length needs.
    const width = el.offsetWidth;
    const secs = (layer.clientWidth + width) / SPEED_PX_PER_S;
    el.style.animation = `fly ${secs.toFixed(2)}s linear forwards`;
    // The lane is free again once this one has fully entered and left a gap behind it.
    laneFreeAt[lane] = performance.now() + ((width + 40) / SPEED_PX_PER_S) * 1000;
    el.addEventListener('animationend', () => el.remove());
    setTimeout(() => el.remove(), secs * 1000 + 2000);
  }

  // ---- the online count --------------------------------------------------------------------

  function setOnline(source, n) {
    online[source] = n;
    $(source === 'hb' ? 'online-hb' : 'online-http').textContent = String(n);
    $('online').textContent = String(n);
    $('stage-online').textContent = String(n);
    const what = source === 'hb'
      ? 'heartbeat reply (op 3): the 4-byte room count the gateway sends back'
      : 'GET /goim/online/room on the dispatcher';
    $('online-source').textContent = `${now()} from the ${what}`;
    $('online').dataset.source = source;
  }

  let pollTimer = 0;
  let pollRoom = '';

  function startPolling(room) {
    pollRoom = room;
    if (pollTimer) return;
    pollOnce();
    pollTimer = setInterval(pollOnce, POLL_SECS * 1000);
  }

  async function pollOnce() {
    const room = pollRoom;
    const cut = room.indexOf('://');
    if (cut < 0) {
      $('online-http').textContent = 'n/a (room key is not type://id)';
      return;
    }
    const type = room.slice(0, cut);
    const id = room.slice(cut + 3);
    try {
      const r = await fetch(
        `goim/online/room?type=${encodeURIComponent(type)}&rooms=${encodeURIComponent(id)}`,
        { headers: authHeaders() },
      );
      const j = await r.json();
      if (room !== pollRoom) return;
      if (j.code !== 0) {
        $('online-http').textContent = `code ${j.code}: ${j.message}`;
        return;
      }
      const n = (j.data || {})[id];
      if (typeof n === 'number') setOnline('http', n);
    } catch (e) {
      $('online-http').textContent = `failed: ${e.message}`;
    }
  }

  // ---- pushing through the HTTP API --------------------------------------------------------

  async function push(ev) {
    ev.preventDefault();
    const out = $('push-result');
    const op = $('push-op').value.trim();
    const type = $('push-type').value.trim();
    const room = $('push-room').value.trim();
    const body = $('push-body').value;
    const url = `goim/push/room?operation=${encodeURIComponent(op)}` +
      `&type=${encodeURIComponent(type)}&room=${encodeURIComponent(room)}`;
    out.className = 'result';
    out.dataset.code = '';
    out.textContent = `POST /${url} ...`;
    let r;
    let text;
    try {
      r = await fetch(url, {
        method: 'POST',
        body,
        headers: { ...authHeaders(), 'Content-Type': 'text/plain; charset=utf-8' },
      });
      text = await r.text();
    } catch (e) {
      out.className = 'result bad';
      out.dataset.code = 'network';
      out.textContent = `request failed: ${e.message}`;
      return;
    }
    let j;
    try {
      j = JSON.parse(text);
    } catch (e) {
      out.className = 'result bad';
      out.dataset.code = `http-${r.status}`;
      out.textContent = `HTTP ${r.status}: ${text.slice(0, 300)}`;
      return;
    }
    out.dataset.code = String(j.code);
    if (j.code === 0) {
      out.textContent = `code 0: accepted (${type}://${room}, op ${op}); it comes back through the gateway`;
      $('push-body').value = '';
    } else {
      out.className = 'result bad';
      out.textContent = `code ${j.code}: ${j.message || '(no message)'} (HTTP ${r.status})`;
    }
  }

  // ---- start -------------------------------------------------------------------------------

  function applyParams() {
    const room = params.get('room');
    if (room) {
      const cut = room.indexOf('://');
      if (cut >= 0) {
        $('room-type').value = room.slice(0, cut);
        $('room-id').value = room.slice(cut + 3);
      } else {
        $('room-type').value = '';
        $('room-id').value = room;
      }
    }
    for (const k of ['mid', 'key', 'accepts']) {
      if (params.get(k) !== null) $(k).value = params.get(k);
    }
    $('push-type').value = $('room-type').value;
    $('push-room').value = $('room-id').value;
    const ws = params.get('ws');
    if (ws) {
      $('ws').value = ws;
      wsSource = 'query';
      $('ws-source').textContent = 'from ?ws= in the page address';
    } else {
      $('ws-source').textContent = 'asked of the dispatcher on connect (GET /goim/nodes/weighted)';
    }
    $('hb-every').textContent = String(hbSecs);
    $('poll-every').textContent = String(POLL_SECS);
  }

  $('ws').addEventListener('input', () => {
    wsSource = 'typed';
    $('ws-source').textContent = 'typed in; empty it to ask the dispatcher again';
  });
  $('connect-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    $('push-type').value = $('room-type').value.trim();
    $('push-room').value = $('room-id').value.trim();
    connect(false);
  });
  $('disconnect').addEventListener('click', disconnect);
  // A network cut, as a tunnel or a switch of networks makes one: the socket goes, the page
  // reconnects with the dispatcher's backoff hints and recovers what it missed.
  $('drop').addEventListener('click', () => {
    if (conn.ws) {
      log('dropping the connection (simulated network cut)');
      conn.ws.close(4000, 'simulated network cut');
    }
  });
  $('push-form').addEventListener('submit', push);

  applyParams();
  if (params.get('connect') === '0') {
    setState('idle', 'not connected: press Connect');
  } else {
    connect(false);
  }
})();
