// app.js: the sample tracking page. Plain JavaScript modules, no build step, nothing from outside
// the service (works offline). Three files:
//   model.js  events -> visits, durations, time zones, the time axis, the sample search (no DOM)
//   api.js    the contract's read endpoints, paging, the newest-first scan used by the name search
//   app.js    this file: the views, their rendering, the token, live refresh, the wiring
//
// Views, chosen by the query string (which holds everything but the token, so a view can be shared):
//   ?beamline=B[&range=1h|8h|24h|7d | &since=ISO&until=ISO]   a beamline's timeline (default: fit the data)
//   ?q=TEXT                      samples whose barcode or name contains TEXT
//   ?sample=BARCODE  or ?name=NAME   one sample's whole history, on every beamline the token may read
//   (none)                        the beamlines with recent events (straight to the one, if only one)
//   common: tz=UTC (times in UTC; default: the browser's zone), live=0 (no refresh), refresh=SECONDS
//
// The read token is kept in sessionStorage (this tab only) and sent as an Authorization header; it
// never goes into a URL. Data is inserted with textContent only (names and messages are data).
"use strict";

import { ApiError, client } from "./api.js";
import {
  DAY, HOUR, VISIT_KINDS, containerText, duration, eventKind, fitRange, intervals, matchesQuery,
  parseTime, positionText, sampleKey, sampleLabel, samples, sourceText, statusText, ticks, zone,
} from "./model.js";

const API = document.querySelector('meta[name="sampletrack-api"]').content;
const TOKEN_KEY = "sampletrack.token";
const DEFAULT_REFRESH_S = 15;
const RANGES = { "1h": HOUR, "8h": 8 * HOUR, "24h": DAY, "7d": 7 * DAY };
const BARCODE = /^[!-~]([ -~]{0,62}[!-~])?$/;
const NO_READS = new Set(["ERROR", "NOREAD"]);
const VIEWS = { home: loadHome, beamline: loadBeamline, search: loadSearch, sample: loadSample };
const STATUS_OF = { home: "home-status", beamline: "timeline-status", search: "search-status", sample: "sample-status" };
const MESSAGES = {
  noToken: "Paste a read token above to see the data (an administrator makes one with: " +
    "sampletrack-service token create --read-only).",
  checking: "Checking the token ...",
  accepted: "Token accepted (kept in this tab only).",
  refused: "The service refused this token: it is unknown or revoked. Paste another read token.",
};

const $ = (id) => document.getElementById(id);
const api = client(API, () => sessionStorage.getItem(TOKEN_KEY) || "");
const state = {
  view: "home",
  query: new URLSearchParams(),
  tz: zone(undefined),
  seq: 0, // the latest load: answers of older loads are dropped
  pending: 0,
  timer: null,
  refreshes: 0,
};

// --- small DOM helpers ----------------------------------------------------------------------------
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined && text !== null) {
    node.textContent = String(text);
  }
  return node;
}

function clear(node) {
  while (node.firstChild) {
    node.removeChild(node.firstChild);
  }
}

function setStatus(id, text, isError) {
  const node = $(id);
  node.textContent = text;
  node.classList.toggle("error", Boolean(isError));
}

function cell(row, content, className) {
  const td = el("td", className);
  if (content instanceof Node) {
    td.appendChild(content);
  } else {
    td.textContent = content === null || content === undefined ? "" : String(content);
  }
  row.appendChild(td);
  return td;
}

/** A link to another view of this page: a real href (open in a new tab works), no reload on click. */
function link(text, params, className) {
  const a = el("a", className, text);
  a.href = "?" + withCommon(params).toString();
  a.addEventListener("click", (event) => {
    if (event.button === 0 && !event.ctrlKey && !event.metaKey && !event.shiftKey) {
      event.preventDefault();
      go(params);
    }
  });
  return a;
}

function busy(delta) {
  state.pending += delta;
  document.body.dataset.state = state.pending > 0 ? "loading" : "ready";
}

// --- times ----------------------------------------------------------------------------------------
const ms = (iso) => Date.parse(iso);
const when = (iso) => (iso ? state.tz.format(ms(iso)) : "");

function visitDuration(visit, range, now) {
  const start = visit.start ? ms(visit.start) : null;
  const end = visit.end ? ms(visit.end) : now;
  if (start === null) {
    return "over " + duration(end - range[0]);
  }
  return duration(end - start) + (visit.end ? "" : " so far");
}

// --- the URL: view state --------------------------------------------------------------------------
function withCommon(params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value) {
      query.set(key, value);
    }
  }
  for (const key of ["tz", "live", "refresh"]) {
    if (state.query.get(key)) {
      query.set(key, state.query.get(key));
    }
  }
  return query;
}

function go(params, replace = false) {
  const search = withCommon(params).toString();
  const url = window.location.pathname + (search ? "?" + search : "");
  window.history[replace ? "replaceState" : "pushState"](null, "", url);
  route();
}

function setCommon(key, value) {
  const query = new URLSearchParams(window.location.search);
  if (value) {
    query.set(key, value);
  } else {
    query.delete(key);
  }
  window.history.replaceState(null, "", window.location.pathname + (query.toString() ? "?" + query : ""));
  state.query = query;
}

function viewOf(query) {
  if (query.get("sample") || query.get("barcode") || query.get("name")) {
    return "sample";
  }
  if (query.get("q")) {
    return "search";
  }
  return query.get("beamline") ? "beamline" : "home";
}

// --- the token and what went wrong ----------------------------------------------------------------
function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function authMessage(text, kind) {
  setStatus("auth-message", text, kind === "error");
  $("auth-message").classList.toggle("prompt", kind === "prompt");
  $("auth").classList.toggle("attention", kind !== "ok");
}

function hideViews() {
  for (const name of Object.keys(VIEWS)) {
    $(name + "-view").hidden = true;
  }
}

/** One message per failure, in one place: the token's (401) next to the token field, the rest in
 * the view's status line. */
function report(error, view) {
  if (error instanceof ApiError && error.status === 401) {
    const given = Boolean(token());
    sessionStorage.removeItem(TOKEN_KEY);
    stopRefresh("");
    hideViews();
    authMessage(given ? MESSAGES.refused : MESSAGES.noToken, given ? "error" : "prompt");
    $("token").focus();
    return;
  }
  let text;
  if (error instanceof ApiError && error.status === 403) {
    text = "Not allowed: " + error.message;
  } else if (error instanceof ApiError && error.status === 0) {
    text = error.message + (liveSeconds() ? "; trying again every " + liveSeconds() + " s" : "");
  } else if (error instanceof ApiError) {
    text = error.status + " " + error.message;
  } else {
    text = "the page failed: " + error.message;
  }
  setStatus(STATUS_OF[view], text, true);
}

// --- the legend and the timeline lanes ------------------------------------------------------------
function renderLegend(list) {
  clear(list);
  for (const [kind, meaning] of VISIT_KINDS) {
    const item = el("li", "legend-item");
    item.dataset.kind = kind;
    item.appendChild(el("span", "swatch " + kind, kind === "failed" ? "\u2715" : ""));
    item.appendChild(el("span", "legend-text", meaning));
    list.appendChild(item);
  }
  const now = el("li", "legend-item");
  now.appendChild(el("span", "swatch now"));
  now.appendChild(el("span", "legend-text", "now"));
  list.appendChild(now);
}

function tooltip(visit, range, now) {
  const lines = [sampleLabel(visit.sample) + " on " + visit.beamline];
  const by = (event) => (event ? " by " + sourceText(event.source) + (positionText(event) ? " (" + positionText(event) + ")" : "") : "");
  lines.push("mounted " + (visit.start ? when(visit.start) : "before " + state.tz.format(range[0])) + by(visit.mount));
  lines.push(visit.end ? "unmounted " + when(visit.end) + by(visit.unmount) : "not unmounted yet");
  lines.push(visitDuration(visit, range, now) + " \u00b7 " + statusText(visit));
  lines.push(...visit.notes);
  return lines.join("\n");
}

/** lanes: [{title, params (the lane title's link) or null, visits}]; range: [start, end] ms. */
function renderLanes(container, lanes, range, now) {
  clear(container);
  const [start, end] = range;
  const span = Math.max(end - start, 1);
  const pct = (t) => ((100 * (t - start)) / span).toFixed(3) + "%";
  for (const lane of lanes) {
    const row = el("div", "lane");
    const title = el("div", "lane-title");
    title.appendChild(lane.params ? link(lane.title, lane.params) : el("span", "", lane.title));
    row.appendChild(title);
    const body = el("div", "lane-body");
    const track = el("div", "track");
    track.setAttribute("role", "list");
    track.setAttribute("aria-label", "Mounted samples on " + lane.title);
    const bars = [];
    for (const visit of lane.visits) {
      const from = visit.start ? Math.max(ms(visit.start), start) : start;
      const to = visit.end ? Math.min(ms(visit.end), end) : Math.min(now, end);
      if (to < start || from > end) {
        continue;
      }
      const classes = ["bar", visit.kind];
      if (!visit.start) {
        classes.push("clipped");
      }
      if (visit.ongoing && visit.kind !== "open") {
        classes.push("ongoing");
      }
      const bar = el("div", classes.join(" "), (visit.kind === "failed" ? "\u2715 " : "") + sampleLabel(visit.sample));
      bar.setAttribute("role", "listitem");
      bar.dataset.kind = visit.kind;
      bar.dataset.sample = sampleKey(visit.sample);
      bar.style.left = pct(from);
      bar.style.width = Math.max((100 * (to - from)) / span, 0.15).toFixed(3) + "%";
      bar.title = tooltip(visit, range, now);
      track.appendChild(bar);
      bars.push(bar);
    }
    if (now >= start && now <= end) {
      const mark = el("span", "now-mark");
      mark.style.left = pct(now);
      mark.title = "now: " + state.tz.format(now);
      track.appendChild(mark);
    }
    body.appendChild(track);
    row.appendChild(body);
    container.appendChild(row);
    labelCutBars(body, track, bars);
  }
  const axisRow = el("div", "lane axis-row");
  axisRow.appendChild(el("div", "lane-title", state.tz.format(start).split(" ").pop()));
  const axis = el("div", "axis");
  axis.setAttribute("aria-hidden", "true");
  for (const tick of ticks(start, end, state.tz)) {
    const mark = el("span", "tick", tick.text);
    mark.style.left = pct(tick.at);
    axis.appendChild(mark);
  }
  axisRow.appendChild(axis);
  container.appendChild(axisRow);
}

/** Bars too short for their name get it written under the track, in up to 3 rows of labels that
 * do not overlap (the hover text has it in any case). Needs the lane laid out (in the document). */
function labelCutBars(body, track, bars) {
  const cut = bars.filter((bar) => bar.scrollWidth > bar.clientWidth + 1);
  if (!cut.length) {
    return;
  }
  const strip = el("div", "lane-labels");
  strip.setAttribute("aria-hidden", "true");
  body.appendChild(strip);
  const width = track.clientWidth;
  const ends = []; // per row: the right edge (px) of its last label
  for (const bar of cut) {
    const label = el("span", "bar-label " + bar.dataset.kind, bar.textContent);
    label.title = bar.title;
    strip.appendChild(label);
    const size = label.offsetWidth;
    const wanted = Math.max(0, Math.min(bar.offsetLeft, width - size));
    // the row where the label moves least to the right of its bar (at most 12 rem); else a new row
    let best = -1;
    let left = wanted;
    ends.forEach((right, row) => {
      const at = Math.max(wanted, right + 8);
      if (at + size <= width && at - wanted <= 192 && (best < 0 || at < left)) {
        best = row;
        left = at;
      }
    });
    if (best < 0 && ends.length < 4) {
      best = ends.push(0) - 1;
      left = wanted;
    }
    if (best < 0) {
      strip.removeChild(label);
      continue;
    }
    ends[best] = left + size;
    label.style.left = left + "px";
    label.style.top = best * 1.2 + "rem";
  }
  strip.style.height = ends.length * 1.2 + "rem";
}

function sampleLink(sample, text) {
  const params = sample.barcode !== null ? { sample: sample.barcode } : { name: sample.name };
  return link(text === undefined ? sampleLabel(sample) : text, params);
}

function visitCells(row, visit, range, now) {
  cell(row, visit.start ? when(visit.start) : "before " + state.tz.format(range[0]), "nowrap");
  cell(row, visit.end ? when(visit.end) : visit.kind === "failed" ? "not recorded" : "still mounted", "nowrap");
  cell(row, visitDuration(visit, range, now), "nowrap");
  const sources = [visit.mount, visit.unmount].filter(Boolean).map((e) => sourceText(e.source));
  cell(row, [...new Set(sources)].join(" / "));
  cell(row, positionText(visit.mount || visit.unmount));
  cell(row, statusText(visit), visit.kind === "visit" || visit.kind === "open" ? "" : "error " + visit.kind);
  cell(row, visit.notes.join("; "), "wrap");
}

function kindCounts(visits) {
  const counts = {};
  for (const visit of visits) {
    counts[visit.kind] = (counts[visit.kind] || 0) + 1;
  }
  const notes = ["failed", "doubtful"].filter((k) => counts[k]).map((k) => counts[k] + " " + k);
  return notes.length ? " (" + notes.join(", ") + ")" : "";
}

// --- view: the beamlines with recent events -------------------------------------------------------
async function loadHome(current) {
  const page = await api.recent({});
  if (!current()) {
    return;
  }
  const latest = new Map();
  for (const event of page.events) {
    latest.set(event.beamline, event.occurred_at);
  }
  if (latest.size === 1) {
    go({ beamline: [...latest.keys()][0] }, true);
    return;
  }
  const list = $("beamline-list");
  clear(list);
  for (const [beamline, last] of [...latest.entries()].sort()) {
    const item = el("li");
    item.appendChild(link(beamline, { beamline }));
    item.appendChild(el("span", "hint", " last event " + when(last)));
    list.appendChild(item);
  }
  setStatus(
    "home-status",
    latest.size ? "Beamlines with recent events (or type a beamline above):" : "No event stored yet that this token may read.",
    false,
  );
}

// --- view: a beamline's timeline ------------------------------------------------------------------
function rangeMode(query) {
  if (query.get("since") || query.get("until")) {
    return "custom";
  }
  return RANGES[query.get("range")] ? query.get("range") : "fit";
}

async function loadBeamline(current) {
  const beamline = state.query.get("beamline");
  const mode = rangeMode(state.query);
  const now = Date.now();
  let page;
  let range;
  if (mode === "fit") {
    page = await api.recent({ beamline }, now);
  } else {
    let since = now - (RANGES[mode] || DAY);
    let until = now;
    const params = { beamline };
    if (mode === "custom") {
      since = state.query.get("since") ? ms(state.query.get("since")) : now - DAY;
      until = state.query.get("until") ? ms(state.query.get("until")) : now;
      if (Number.isNaN(since) || Number.isNaN(until) || since >= until) {
        throw new ApiError(422, "range", "the time range is not valid: give From before To");
      }
      if (state.query.get("until")) {
        params.until = new Date(until).toISOString();
      }
    }
    params.since = new Date(since).toISOString();
    page = await api.events(params);
    range = [since, until];
  }
  const mounted = await api.get("/beamlines/" + encodeURIComponent(beamline) + "/mounted");
  if (!current()) {
    return;
  }
  const visits = intervals(page.events);
  if (!range) {
    range = page.events.length ? fitRange(page.events, visits, now) : [now - DAY, now];
  }
  $("beamline-title").textContent = "Beamline " + beamline;
  renderMountedNow(beamline, mounted.mounted, now);
  renderLanes($("timeline"), [{ title: beamline, params: null, visits }], range, now);
  const tbody = $("intervals").querySelector("tbody");
  clear(tbody);
  for (const visit of visits) {
    const row = el("tr", "visit-row " + visit.kind);
    cell(row, sampleLink(visit.sample, visit.sample.name || visit.sample.barcode), "name");
    cell(row, visit.sample.barcode, "nowrap");
    visitCells(row, visit, range, now);
    tbody.appendChild(row);
  }
  let text = page.events.length + " events, " + visits.length + " mounts" + kindCounts(visits);
  if (!page.events.length) {
    text = "No event on " + beamline + (mode === "fit" ? " that this token may read." : " in this time range.");
  } else if (mode === "fit" && range[1] < now) {
    text += "; the latest was " + duration(now - ms(page.events[page.events.length - 1].occurred_at)) + " ago";
  }
  if (page.truncated) {
    text += " (truncated: choose a shorter time range)";
  }
  setStatus("timeline-status", text, false);
}

function renderMountedNow(beamline, event, now) {
  const node = $("mounted-now");
  clear(node);
  node.classList.remove("error");
  if (!event) {
    node.textContent = "Nothing is mounted now on " + beamline + ".";
    return;
  }
  const kind = eventKind(event);
  const since = when(event.occurred_at) + " (" + duration(now - ms(event.occurred_at)) + " ago)";
  const text = (value) => node.appendChild(document.createTextNode(value));
  if (kind === "failed") {
    // the service answers the latest mount, even a failed one: say what it means
    text("Unknown what is mounted on " + beamline + ": the load of ");
    node.appendChild(sampleLink(event.sample));
    text(" failed at " + since + ": " + event.message);
  } else {
    text("Mounted now on " + beamline + ": ");
    node.appendChild(sampleLink(event.sample));
    text(
      " since " + when(event.occurred_at) + " (" + duration(now - ms(event.occurred_at)) + ")" +
        (positionText(event) ? ", from " + positionText(event) : "") +
        (kind === "doubtful" ? " \u2014 doubtful: " + event.message : ""),
    );
  }
  node.classList.toggle("error", kind !== "ok");
}

// --- view: the sample search ----------------------------------------------------------------------
async function loadSearch(current) {
  const query = state.query.get("q").trim();
  if (BARCODE.test(query) && !NO_READS.has(query)) {
    const exact = await api.get("/samples/" + encodeURIComponent(query) + "/history");
    if (!current()) {
      return;
    }
    if (exact.events.length) {
      go({ sample: query }, true);
      return;
    }
  }
  const found = await api.scan({}, (event) => matchesQuery(event.sample, query));
  if (!current()) {
    return;
  }
  const list = samples(found.kept);
  if (list.length === 1) {
    const sample = list[0].sample;
    go(sample.barcode !== null ? { sample: sample.barcode } : { name: sample.name }, true);
    return;
  }
  $("query").value = query;
  const tbody = $("search-results").querySelector("tbody");
  clear(tbody);
  for (const entry of list) {
    const row = el("tr");
    cell(row, sampleLink(entry.sample, entry.sample.name || entry.sample.barcode));
    cell(row, entry.sample.barcode, "nowrap");
    cell(row, entry.beamlines.join(", "));
    cell(row, when(entry.last), "nowrap");
    cell(row, entry.count);
    tbody.appendChild(row);
  }
  const scope = found.complete
    ? " (searched all " + found.read + " events)"
    : " (searched the " + found.read + " most recent events only)";
  const head = list.length ? list.length + " samples match" : "No sample matches";
  setStatus("search-status", head + " \u201c" + query + "\u201d by barcode or name" + scope, false);
}

// --- view: one sample's history -------------------------------------------------------------------
async function loadSample(current) {
  const barcode = state.query.get("sample") || state.query.get("barcode");
  const name = barcode ? null : state.query.get("name");
  let events;
  let note = "";
  if (barcode) {
    events = (await api.get("/samples/" + encodeURIComponent(barcode) + "/history")).events;
  } else {
    const found = await api.scan({}, (event) => event.sample.name === name);
    events = found.kept;
    note = found.complete ? "" : " (the " + found.read + " most recent events were searched)";
  }
  if (!current()) {
    return;
  }
  const now = Date.now();
  const wanted = barcode || name;
  $("sample-title").textContent = "Sample " + (events.length ? sampleLabel(events[events.length - 1].sample) : wanted);
  const byBeamline = new Map();
  for (const event of events) {
    if (!byBeamline.has(event.beamline)) {
      byBeamline.set(event.beamline, []);
    }
    byBeamline.get(event.beamline).push(event);
  }
  const lanes = [...byBeamline.entries()].map(([beamline, list]) => ({
    title: beamline, params: { beamline }, visits: intervals(list),
  }));
  const visits = lanes.flatMap((lane) => lane.visits);
  const range = events.length ? fitRange(events, visits, now) : [now - DAY, now];
  renderSampleFacts(events, byBeamline);
  renderSampleNow(events, now);
  renderLanes($("sample-timeline"), events.length ? lanes : [], range, now);
  visits.sort((a, b) => (a.start || a.end || "").localeCompare(b.start || b.end || ""));
  const vbody = $("visits").querySelector("tbody");
  clear(vbody);
  for (const visit of visits) {
    const row = el("tr", "visit-row " + visit.kind);
    cell(row, link(visit.beamline, { beamline: visit.beamline }));
    visitCells(row, visit, range, now);
    vbody.appendChild(row);
  }
  const hbody = $("history").querySelector("tbody");
  clear(hbody);
  for (const event of events) {
    const kind = eventKind(event);
    const row = el("tr", "event-row " + kind);
    cell(row, when(event.occurred_at), "nowrap");
    cell(row, event.beamline);
    cell(row, event.type);
    cell(row, event.status + (kind === "ok" ? "" : " (" + kind + ")"), kind === "ok" ? "" : "error " + kind);
    cell(row, sourceText(event.source));
    cell(row, positionText(event));
    cell(row, containerText(event.sample));
    cell(row, event.session);
    cell(row, event.proposal);
    cell(row, event.message, "wrap");
    hbody.appendChild(row);
  }
  setStatus(
    "sample-status",
    events.length
      ? events.length + " events on " + byBeamline.size + (byBeamline.size === 1 ? " beamline" : " beamlines") +
          kindCounts(visits) + note + " (only beamlines this token may read)"
      : "No event for " + wanted + " that this token may read" + note + ".",
    false,
  );
}

function renderSampleFacts(events, byBeamline) {
  const facts = $("sample-facts");
  clear(facts);
  if (!events.length) {
    return;
  }
  const sample = events[events.length - 1].sample;
  const rows = [
    ["Barcode", sample.barcode],
    ["Name", sample.name],
    ["Sample id", sample.sample_id],
    ["Parcel", sample.parcel_name || sample.parcel_id],
    ["Container", containerText(sample)],
    ["Beamlines", [...byBeamline.keys()].sort().join(", ")],
    ["First event", when(events[0].occurred_at)],
  ];
  for (const [label, value] of rows) {
    if (value) {
      facts.appendChild(el("dt", "", label));
      facts.appendChild(el("dd", "", value));
    }
  }
}

function renderSampleNow(events, now) {
  const node = $("sample-now");
  node.classList.remove("error");
  if (!events.length) {
    node.textContent = "";
    return;
  }
  const last = events[events.length - 1];
  const kind = eventKind(last);
  if (last.type === "mounted" && kind !== "failed") {
    node.textContent = "Mounted on " + last.beamline + " since " + when(last.occurred_at) + " (" +
      duration(now - ms(last.occurred_at)) + ")" + (kind === "doubtful" ? " \u2014 doubtful: " + last.message : "");
  } else if (last.type === "mounted") {
    node.textContent = "Last event: a failed load on " + last.beamline + " at " + when(last.occurred_at) + ": " + last.message;
  } else {
    node.textContent = "Not mounted: unmounted from " + last.beamline + " at " + when(last.occurred_at) +
      (kind === "ok" ? "" : " \u2014 doubtful: " + last.message);
  }
  node.classList.toggle("error", kind !== "ok");
}

// --- loading and live refresh ---------------------------------------------------------------------
function liveSeconds() {
  if (state.query.get("live") === "0") {
    return 0;
  }
  const seconds = Number(state.query.get("refresh") || DEFAULT_REFRESH_S);
  return Number.isFinite(seconds) && seconds >= 1 ? seconds : DEFAULT_REFRESH_S;
}

function stopRefresh(text) {
  clearTimeout(state.timer);
  state.timer = null;
  $("live-status").textContent = text;
}

function scheduleRefresh() {
  clearTimeout(state.timer);
  const seconds = liveSeconds();
  if (!seconds || !token() || state.view === "search") {
    state.timer = null;
    return;
  }
  state.timer = setTimeout(() => {
    if (document.hidden) {
      scheduleRefresh(); // not shown: wait; visibilitychange refreshes at once when shown again
    } else {
      load(true);
    }
  }, seconds * 1000);
}

/** Load the current view; ``background``: a live refresh (no "loading" state, same view). */
async function load(background) {
  const seq = ++state.seq;
  const view = state.view;
  clearTimeout(state.timer);
  if (!background) {
    busy(+1);
  }
  try {
    await VIEWS[view](() => seq === state.seq && view === state.view);
    if (seq === state.seq && token()) {
      authMessage(MESSAGES.accepted, "ok");
      if (background) {
        state.refreshes += 1;
        document.body.dataset.refreshes = String(state.refreshes);
      }
      const seconds = liveSeconds();
      $("live-status").textContent = "updated " + state.tz.clock(Date.now()) +
        (seconds && view !== "search" ? ", every " + seconds + " s" : "");
    }
  } catch (error) {
    if (seq === state.seq) {
      report(error, view);
    }
  } finally {
    if (!background) {
      busy(-1);
    }
    if (seq === state.seq && token()) {
      scheduleRefresh();
    }
  }
}

/** Show the view the URL names and load it. */
function route() {
  state.query = new URLSearchParams(window.location.search);
  state.view = viewOf(state.query);
  state.tz = zone(state.query.get("tz") || undefined);
  $("tz").value = state.query.get("tz") === "UTC" ? "UTC" : "";
  $("tz-note").textContent = state.tz.describe(Date.now());
  $("live").checked = liveSeconds() > 0;
  $("beamline").value = state.query.get("beamline") || "";
  $("query").value = state.query.get("q") || "";
  const mode = rangeMode(state.query);
  $("range").value = mode;
  $("custom-range").hidden = mode !== "custom";
  for (const key of ["since", "until"]) {
    const value = state.query.get(key);
    $(key).value = value && !Number.isNaN(ms(value)) ? state.tz.format(ms(value)).slice(0, 19) : "";
  }
  for (const id of Object.values(STATUS_OF)) {
    setStatus(id, "", false);
  }
  hideViews();
  if (!token()) {
    stopRefresh("");
    authMessage(MESSAGES.noToken, "prompt");
    document.body.dataset.state = "ready";
    return;
  }
  $(state.view + "-view").hidden = false;
  load(false);
}

// --- wiring ---------------------------------------------------------------------------------------
function init() {
  $("tz-local").textContent = "local time (" + zone(undefined).name + ")";
  renderLegend($("legend"));
  renderLegend($("sample-legend"));

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    if (!value) {
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, value);
    authMessage(MESSAGES.checking, "ok");
    route();
  });
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    route();
  });
  $("beamline-form").addEventListener("submit", (event) => {
    event.preventDefault();
    go({ beamline: $("beamline").value.trim().toLowerCase() });
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    go({ q: $("query").value.trim() });
  });
  $("range").addEventListener("change", () => {
    $("custom-range").hidden = $("range").value !== "custom";
  });
  $("range-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const beamline = state.query.get("beamline");
    const mode = $("range").value;
    if (mode !== "custom") {
      go({ beamline, range: mode === "fit" ? "" : mode }, true);
      return;
    }
    const bounds = {};
    for (const key of ["since", "until"]) {
      const text = $(key).value.trim();
      if (!text) {
        continue;
      }
      const at = parseTime(text, state.tz);
      if (Number.isNaN(at)) {
        setStatus("timeline-status", "not a date and time: " + text + " (e.g. 2026-11-24 08:00, in " + state.tz.name + ")", true);
        return;
      }
      bounds[key] = new Date(at).toISOString();
    }
    go({ beamline, since: bounds.since || new Date(Date.now() - DAY).toISOString(), until: bounds.until }, true);
  });
  $("tz").addEventListener("change", () => {
    setCommon("tz", $("tz").value);
    route();
  });
  $("live").addEventListener("change", () => {
    setCommon("live", $("live").checked ? "" : "0");
    if ($("live").checked) {
      load(true);
    } else {
      stopRefresh("live refresh off");
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.timer !== null) {
      load(true);
    }
  });
  window.addEventListener("popstate", route);
  route();
}

init();
