// embodied-view page: one websocket to the server, panels drawn from its JSON payloads.
// Plain DOM + canvas, no library and nothing loaded from elsewhere (the viewer works offline).
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  ws: null, config: null, episode: null, live: null, shown: null, status: null,
  follow: true,                          // show the newest frame (false while scrubbing)
  orbit: { yaw: -0.9, pitch: 0.9, dist: 14, target: [0, 0, 0.8] },
};

// ------------------------------------------------------------------ connection
function connect() {
  const ws = new WebSocket(`ws://${location.host}/ws`);
  state.ws = ws;
  ws.onopen = () => setConnection(true);
  ws.onclose = () => { setConnection(false); setTimeout(connect, 1000); };
  ws.onmessage = (ev) => onMessage(JSON.parse(ev.data));
}

function setConnection(up) {
  const el = $("connection");
  el.textContent = up ? "connected" : "disconnected";
  el.className = "badge " + (up ? "live" : "off");
}

function send(msg) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(msg));
}
const command = (name, args = {}) => send({ type: "command", name, ...args });

function onMessage(msg) {
  if (msg.type === "hello") onHello(msg.config);
  else if (msg.type === "episode") onEpisode(msg.episode);
  else if (msg.type === "frame") onFrame(msg.frame, msg.live);
  else if (msg.type === "status") onStatus(msg.status);
  else if (msg.type === "error") $("message").textContent = msg.message;
}

function onHello(config) {
  state.config = config;
  document.body.className = "kind-" + config.kind;
  $("what").textContent = `${config.env} · policy ${config.policy}`;
  $("pose-label").textContent = config.kind === "nav" ? "pose" : "end effector";
  $("keys").textContent = config.kind === "nav"
    ? "keys: W forward · A/D turn · S or space STOP"
    : "keys: W/S x · A/D y · R/F z · Q/E yaw · space gripper";
}

function onEpisode(episode) {
  state.episode = episode;
  state.follow = true;
  $("episode").value = episode.seed;
  if (episode.scene) fitOrbit(episode.scene);
}

function onFrame(frame, live) {
  if (live) {
    state.live = frame;
    const slider = $("scrub");
    slider.max = frame.k;
    if (state.follow) { slider.value = frame.k; show(frame); }
  } else {
    show(frame);
  }
}

function onStatus(s) {
  state.status = s;
  const badges = [];
  badges.push(`<span class="badge ${s.driver === "human" ? "warn" : "live"}">${s.driver} drives</span>`);
  badges.push(`<span class="badge">${s.running ? "running" : "paused"}</span>`);
  if (s.busy) badges.push(`<span class="badge warn">policy thinking…</span>`);
  if (s.done) badges.push(`<span class="badge off">episode over</span>`);
  if (s.recording) badges.push(`<span class="badge rec">● recording</span>`);
  if (s.recorded.length) badges.push(`<span class="badge">recorded: ${s.recorded.join(", ")}</span>`);
  $("status").innerHTML = badges.join("");
  $("btn-record").classList.toggle("on", s.recording);
  $("btn-record").textContent = s.recording ? "Stop recording" : "Record";
  $("message").textContent = s.message || "";
  $("policy-ms").textContent = s.policy_ms == null ? "–" : `${s.policy_ms} ms`;
}

// ------------------------------------------------------------------ one frame on every panel
function show(frame) {
  state.shown = frame;
  const live = state.live && frame.k === state.live.k && frame.episode === state.live.episode;
  $("scrub-label").textContent = live ? `frame ${frame.k} (live)` : `frame ${frame.k} of ${state.live ? state.live.k : "?"}`;
  showCameras(frame.images || {});
  $("task-text").textContent = frame.task || "";
  $("frame-no").textContent = frame.k;
  $("last-action").textContent = frame.action == null ? "(reset)" : `${JSON.stringify(frame.action)} by ${frame.actor}`;
  if (frame.pose) {
    const [x, y, yaw] = frame.pose;
    $("pose").textContent = `x ${x.toFixed(2)}  y ${y.toFixed(2)}  yaw ${(yaw * 180 / Math.PI).toFixed(0)}°`;
  } else if (frame.robot) {
    const r = frame.robot;
    $("pose").textContent = `eef ${r.eef_pos.map((v) => v.toFixed(3)).join(" ")} · aa ${r.eef_axis_angle.map((v) => v.toFixed(2)).join(" ")} · gripper ${r.gripper_qpos.map((v) => v.toFixed(3)).join(" ")}`;
  }
  const metrics = { ...(frame.metrics || {}) };
  if (frame.success !== undefined) metrics.success = frame.success ? 1 : 0;
  $("metrics").tBodies[0].innerHTML = Object.entries(metrics)
    .map(([k, v]) => `<tr><th>${esc(k)}</th><td>${typeof v === "number" ? v.toFixed(3) : esc(String(v))}</td></tr>`).join("");
  showMemory(frame);
  if (state.config && state.config.kind === "nav") { drawMap(frame); draw3d(frame); }
}

function showCameras(images) {
  const box = $("cameras");
  for (const [name, url] of Object.entries(images)) {
    let img = $("cam-" + name);
    if (!img) {
      const fig = document.createElement("figure");
      img = document.createElement("img");
      img.id = "cam-" + name; img.alt = name;
      const cap = document.createElement("figcaption");
      cap.textContent = name;
      fig.append(img, cap); box.append(fig);
    }
    img.src = url;
  }
}

// ------------------------------------------------------------------ memory inspector
function showMemory(frame) {
  const box = $("memory");
  const reads = frame.memory || [];
  $("memory-title").textContent = frame.actor === "reset" ? "" :
    `read at frame ${frame.k - 1}, before action ${JSON.stringify(frame.action)} (${frame.actor})`;
  if (frame.actor === "reset") { box.innerHTML = `<p class="hint">Frame 0: the policy has not read yet.</p>`; return; }
  if (!reads.length) { box.innerHTML = `<p class="hint">This policy reads no memory (no trace).</p>`; return; }
  box.innerHTML = reads.map(readHtml).join("");
}

const bar = (w, cls = "") => `<span class="bar ${cls}" style="width:${Math.max(1, Math.round(w * 120))}px"></span>`;
const thumbs = (urls) => `<span class="thumbs">${urls.filter(Boolean).map((u) => `<img src="${u}">`).join("")}</span>`;

function readHtml(r) {
  const head = (text) => `<div class="read" data-kind="${r.kind}"><h3>${esc(r.name)} · ${r.kind} <span class="hint">${text}</span></h3>`;
  if (r.kind === "hcam") {
    const rows = r.chunks.map((c) => `<div class="row chunk"><span class="mono">steps ${c.start}–${c.end} (slot ${c.slot})</span>${bar(c.weight)}<span class="mono">${c.weight.toFixed(3)}</span>${thumbs(c.thumbs)}</div>`);
    return head(`${plural(r.occupancy, "chunk")} of ${r.chunk_size} steps stored${r.chunk_written ? " · this step completed one" : ""} · chose ${r.chunks.length}`) +
      (rows.join("") || `<p class="hint">no chunk completed yet (nothing to choose)</p>`) + "</div>";
  }
  if (r.kind === "place") {
    const rows = r.chunks.map((c) => `<div class="row chunk"><span class="mono">place ${c.place} (slot ${c.slot})</span>${bar(c.weight)}<span class="mono">${c.weight.toFixed(3)}</span></div>`);
    return head(`${r.occupancy} entries · chose ${r.chunks.length} place chunks`) + rows.join("") + "</div>";
  }
  if (r.kind === "pcmb") {
    const rows = r.entries.map((e) => `<div class="row entry"><span class="mono">t=${e.t}</span>${thumbs([e.thumb])}perceptual ${bar(e.per_weight)}<span class="mono">${e.per_weight.toFixed(3)}</span> cognitive ${bar(e.cog_weight, "cog")}<span class="mono">${e.cog_weight.toFixed(3)}</span></div>`);
    const merge = r.per_merge_similarity !== undefined ? ` · consolidation: merged entry ${r.per_merge_index} (similarity ${r.per_merge_similarity.toFixed(3)})` : "";
    return head(`${r.occupancy}/${r.capacity} entries${merge}`) + (rows.join("") || `<p class="hint">empty bank</p>`) + "</div>";
  }
  if (r.kind === "events") {
    const rows = r.events.map((e) => `<div class="row entry"><span class="mono">event ${e.ord} from step ${e.start}${e.contiguity ? " (neighbour)" : ""}</span>${thumbs([e.thumb])}${bar(e.weight)}<span class="mono">${e.weight.toFixed(3)}</span></div>`);
    return head(`${r.closed_events} closed events · retrieved ${r.events.length}`) + (rows.join("") || `<p class="hint">no closed event yet</p>`) + "</div>";
  }
  if (r.kind === "dual_kv") {
    return head(`${r.occupancy} frames cached (start window ${r.n_initial}, recent window ${r.n_recent})`) +
      `<div class="row">start window: ${thumbs(r.initial.map((f) => f.thumb))} <span class="mono">${r.initial.map((f) => f.t).join(" ")}</span></div>` +
      `<div class="row">recent window (${r.recent_count}, last 8 shown): ${thumbs(r.recent.map((f) => f.thumb))} <span class="mono">${r.recent.map((f) => f.t).join(" ")}</span></div></div>`;
  }
  if (r.kind === "voxel_map") {
    return head(`${r.voxels} voxels (${r.voxel_size} m) · ${r.points_written} points fused this frame · drawn in the 3D view`) + "</div>";
  }
  if (r.kind === "gru") return head(`hidden state norm ${r.hidden_norm.toFixed(3)}`) + "</div>";
  return head("(unknown kind)") + "</div>";
}

// ------------------------------------------------------------------ top-down map
function sceneBounds(scene, frame) {
  if (scene && scene.bounds) return scene.bounds;
  const pts = [...(frame.trajectory || []), ...((scene && scene.goals) || [])];
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  return [Math.min(...xs) - 2, Math.min(...ys) - 2, Math.max(...xs) + 2, Math.max(...ys) + 2];
}

function drawMap(frame) {
  const cv = $("map"), g = cv.getContext("2d"), scene = state.episode && state.episode.scene;
  g.fillStyle = "#0f1215"; g.fillRect(0, 0, cv.width, cv.height);
  if (!frame.pose) return;
  const [x0, y0, x1, y1] = sceneBounds(scene, frame);
  const s = Math.min(cv.width / (x1 - x0 + 1), cv.height / (y1 - y0 + 1));
  const ox = (cv.width - (x1 - x0) * s) / 2, oy = (cv.height - (y1 - y0) * s) / 2;
  const P = (x, y) => [ox + (x - x0) * s, cv.height - (oy + (y - y0) * s)];
  const box = (b, fill) => {               // [cx, cy, cz, sx, sy, sz, yaw]
    const [cx, cy, , sx, sy, , yaw] = b, c = Math.cos(yaw), sn = Math.sin(yaw);
    g.beginPath();
    [[-1, -1], [1, -1], [1, 1], [-1, 1]].forEach(([a, b2], i) => {
      const px = cx + c * a * sx / 2 - sn * b2 * sy / 2, py = cy + sn * a * sx / 2 + c * b2 * sy / 2;
      const [u, v] = P(px, py); i ? g.lineTo(u, v) : g.moveTo(u, v);
    });
    g.closePath(); g.fillStyle = fill; g.fill();
  };
  if (scene) {
    g.fillStyle = "#262c35";
    const [a, b] = P(x0, y1), [c, d] = P(x1, y0); g.fillRect(a, b, c - a, d - b);
    scene.walls.forEach((w) => box(w, "#7d8796"));
    scene.objects.forEach((o) => box(o, rgbCss(o[9])));
    line(g, scene.reference.map((p) => P(p[0], p[1])), "#4f9cf0", [5, 4]);
    // a point goal gets its success radius; an object's many view points get small dots
    const radius = scene.goals.length <= 3 ? Math.max(3, scene.success_distance * s) : 2.5;
    scene.goals.forEach((p) => {
      const [u, v] = P(p[0], p[1]); g.beginPath(); g.arc(u, v, radius, 0, 7);
      g.strokeStyle = "#3ddc84"; g.lineWidth = 2; g.stroke();
    });
  }
  line(g, (frame.trajectory || []).map((p) => P(p[0], p[1])), "#ffb347", []);
  const [u, v] = P(frame.pose[0], frame.pose[1]), yaw = frame.pose[2];
  g.save(); g.translate(u, v); g.rotate(-yaw);
  g.beginPath(); g.moveTo(10, 0); g.lineTo(-6, 6); g.lineTo(-6, -6); g.closePath();
  g.fillStyle = "#ff5a5a"; g.fill(); g.restore();
}

function line(g, pts, color, dash) {
  if (pts.length < 2) return;
  g.beginPath(); pts.forEach(([u, v], i) => (i ? g.lineTo(u, v) : g.moveTo(u, v)));
  g.setLineDash(dash); g.strokeStyle = color; g.lineWidth = 2; g.stroke(); g.setLineDash([]);
}

const rgbCss = (c) => `rgb(${c.map((v) => Math.round(v * 255)).join(",")})`;

// ------------------------------------------------------------------ 3D view (canvas projection, mouse orbit)
function fitOrbit(scene) {
  if (!scene.bounds) return;
  const [x0, y0, x1, y1] = scene.bounds;
  state.orbit.target = [(x0 + x1) / 2, (y0 + y1) / 2, 0.8];
  state.orbit.dist = Math.max(x1 - x0, y1 - y0) * 1.2;
}

function projector(cv) {
  const o = state.orbit, cy = Math.cos(o.yaw), sy = Math.sin(o.yaw), cp = Math.cos(o.pitch), sp = Math.sin(o.pitch);
  const eye = [o.target[0] + o.dist * cp * cy, o.target[1] + o.dist * cp * sy, o.target[2] + o.dist * sp];
  const f = [o.target[0] - eye[0], o.target[1] - eye[1], o.target[2] - eye[2]].map((v) => v / o.dist);
  const r = norm([f[1], -f[0], 0]), u = [r[1] * f[2] - r[2] * f[1], r[2] * f[0] - r[0] * f[2], r[0] * f[1] - r[1] * f[0]];
  const focal = cv.width / 1.4;
  return (p) => {
    const d = [p[0] - eye[0], p[1] - eye[1], p[2] - eye[2]];
    const z = d[0] * f[0] + d[1] * f[1] + d[2] * f[2];
    if (z < 0.1) return null;
    return [cv.width / 2 + focal * (d[0] * r[0] + d[1] * r[1] + d[2] * r[2]) / z,
      cv.height / 2 - focal * (d[0] * u[0] + d[1] * u[1] + d[2] * u[2]) / z, z];
  };
}

function norm(v) { const n = Math.hypot(...v) || 1; return v.map((x) => x / n); }

function draw3d(frame) {
  const cv = $("view3d"), g = cv.getContext("2d"), P = projector(cv), scene = state.episode && state.episode.scene;
  g.fillStyle = "#0f1215"; g.fillRect(0, 0, cv.width, cv.height);
  const edges = (b, color) => {
    const [cx, cy, cz, sx, sy, sz, yaw] = b, c = Math.cos(yaw), sn = Math.sin(yaw);
    const corner = (a, b2, h) => P([cx + c * a * sx / 2 - sn * b2 * sy / 2, cy + sn * a * sx / 2 + c * b2 * sy / 2, cz + h * sz / 2]);
    const k = [[-1, -1], [1, -1], [1, 1], [-1, 1]];
    g.strokeStyle = color; g.lineWidth = 1; g.beginPath();
    for (let i = 0; i < 4; i++) {
      const j = (i + 1) % 4;
      for (const h of [-1, 1]) seg(g, corner(...k[i], h), corner(...k[j], h));
      seg(g, corner(...k[i], -1), corner(...k[i], 1));
    }
    g.stroke();
  };
  if (scene) {
    scene.walls.forEach((w) => edges(w, "#4a5361"));
    scene.objects.forEach((o) => edges(o, rgbCss(o[9])));
  }
  const dots = (pts, size) => pts.forEach((p) => {
    const q = P(p); if (!q) return;
    g.fillStyle = `rgb(${p[3]},${p[4]},${p[5]})`; g.fillRect(q[0], q[1], size, size);
  });
  for (const r of frame.memory || []) if (r.kind === "voxel_map" && r.cloud) dots(r.cloud, 2);
  dots(frame.cloud || [], 2);
  if (frame.pose) {
    const a = P([frame.pose[0], frame.pose[1], 0]), b = P([frame.pose[0] + 0.6 * Math.cos(frame.pose[2]), frame.pose[1] + 0.6 * Math.sin(frame.pose[2]), 0]);
    g.strokeStyle = "#ff5a5a"; g.lineWidth = 3; g.beginPath(); seg(g, a, b); g.stroke();
  }
}

function seg(g, a, b) { if (a && b) { g.moveTo(a[0], a[1]); g.lineTo(b[0], b[1]); } }

function setupOrbit() {
  const cv = $("view3d");
  let drag = null;
  cv.addEventListener("mousedown", (e) => { drag = [e.clientX, e.clientY]; });
  window.addEventListener("mouseup", () => { drag = null; });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    state.orbit.yaw -= (e.clientX - drag[0]) * 0.01;
    state.orbit.pitch = Math.min(1.5, Math.max(0.05, state.orbit.pitch + (e.clientY - drag[1]) * 0.01));
    drag = [e.clientX, e.clientY];
    if (state.shown) draw3d(state.shown);
  });
  cv.addEventListener("wheel", (e) => {
    e.preventDefault();
    state.orbit.dist = Math.min(80, Math.max(1, state.orbit.dist * (e.deltaY > 0 ? 1.1 : 0.9)));
    if (state.shown) draw3d(state.shown);
  }, { passive: false });
}

// ------------------------------------------------------------------ controls
function setupControls() {
  $("btn-step").onclick = () => command("step");
  $("btn-run").onclick = () => command("run");
  $("btn-pause").onclick = () => command("pause");
  $("btn-takeover").onclick = () => command("takeover");
  $("btn-handback").onclick = () => command("handback");
  $("btn-reset").onclick = () => command("reset");
  $("btn-next").onclick = () => command("next");
  $("btn-next-scene").onclick = () => command("next_scene");
  $("btn-go").onclick = () => {
    const args = { episode: parseInt($("episode").value || "0", 10) };
    if (state.config.kind === "libero" && $("task").value !== "") args.task = parseInt($("task").value, 10);
    command("reset", args);
  };
  $("btn-record").onclick = () => command("record", { on: !(state.status && state.status.recording) });
  $("btn-live").onclick = () => { state.follow = true; if (state.live) { $("scrub").value = state.live.k; show(state.live); } };
  $("scrub").oninput = (e) => {
    const k = parseInt(e.target.value, 10);
    state.follow = state.live && k === state.live.k;
    send({ type: "scrub", frame: k });
  };
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.ctrlKey || e.metaKey || e.altKey || !state.config) return;
    const key = e.key.toLowerCase();
    if (!state.config.keys.includes(key)) return;
    e.preventDefault();
    state.follow = true;
    command("key", { key });
  });
}

function plural(n, word) { return `${n} ${word}${n === 1 ? "" : "s"}`; }

function esc(s) { return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]); }

setupControls();
setupOrbit();
connect();
