// Sample tracking page: a beamline's timeline of mounted samples and a sample's history.
// Vanilla JavaScript, no build step. The read token is kept in sessionStorage (this tab only) and
// sent as an Authorization header; it never goes into a URL. Data is inserted with textContent only.
"use strict";

(() => {
  const API = document.querySelector('meta[name="sampletrack-api"]').content;
  const TOKEN_KEY = "sampletrack.token";
  const MAX_PAGES = 20; // 20 pages of 1000 events per timeline
  const DAY_MS = 24 * 3600 * 1000;
  const $ = (id) => document.getElementById(id);
  let pending = 0;

  function busy(delta) {
    pending += delta;
    document.body.dataset.state = pending > 0 ? "loading" : "ready";
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function showTokenState() {
    $("token-state").textContent = token() ? "token set for this tab" : "no token yet: paste a read token";
  }

  function setStatus(id, text, isError) {
    const node = $(id);
    node.textContent = text;
    node.classList.toggle("error", Boolean(isError));
  }

  async function api(path) {
    const value = token();
    if (!value) {
      throw new Error("no token: paste a read token above first");
    }
    const response = await fetch(API + path, {
      headers: { Authorization: "Bearer " + value, Accept: "application/json" },
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const error = body && body.error ? body.error : { message: response.statusText, fields: {} };
      const details = Object.entries(error.fields || {})
        .map(([field, problem]) => field + ": " + problem)
        .join("; ");
      throw new Error(response.status + " " + error.message + (details ? " (" + details + ")" : ""));
    }
    return body;
  }

  async function allEvents(params) {
    const events = [];
    let cursor = null;
    let pages = 0;
    do {
      const query = new URLSearchParams(params);
      query.set("limit", "1000");
      if (cursor) {
        query.set("cursor", cursor);
      }
      const page = await api("/events?" + query.toString());
      events.push(...page.events);
      cursor = page.next_cursor;
      pages += 1;
    } while (cursor && pages < MAX_PAGES);
    return { events, truncated: Boolean(cursor) };
  }

  function sameSample(a, b) {
    if (a.barcode !== null || b.barcode !== null) {
      return a.barcode === b.barcode;
    }
    return a.name === b.name;
  }

  // Intervals of one beamline's events (oldest first): from a mount to the unmount that ends it.
  // start null: mounted before the range; end null: still mounted.
  function intervals(events) {
    const out = [];
    let open = null;
    for (const event of events) {
      if (event.type === "mounted") {
        if (open) {
          open.end = event.occurred_at;
          open.note = "no unmount event before the next mount";
          out.push(open);
        }
        open = {
          sample: event.sample, beamline: event.beamline, start: event.occurred_at, end: null,
          status: event.status, mountId: event.event_id, note: event.message,
        };
      } else if (open && (event.mount_event_id === open.mountId || sameSample(open.sample, event.sample))) {
        open.end = event.occurred_at;
        if (event.status === "ERROR") {
          open.status = "ERROR";
          open.note = event.message;
        }
        out.push(open);
        open = null;
      } else {
        if (open) {
          open.end = event.occurred_at;
          open.status = "ERROR";
          open.note = "unmount of another sample";
          out.push(open);
          open = null;
        }
        out.push({
          sample: event.sample, beamline: event.beamline, start: null, end: event.occurred_at,
          status: event.status, note: "mounted before the range shown",
        });
      }
    }
    if (open) {
      out.push(open);
    }
    return out;
  }

  function label(sample) {
    if (sample.name && sample.barcode) {
      return sample.name + " (" + sample.barcode + ")";
    }
    return sample.name || sample.barcode || "?";
  }

  function fmt(iso) {
    return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "";
  }

  function duration(startIso, endIso) {
    if (!startIso) {
      return "";
    }
    const ms = (endIso ? Date.parse(endIso) : Date.now()) - Date.parse(startIso);
    const minutes = Math.round(ms / 60000);
    if (minutes < 60) {
      return minutes + " min";
    }
    const hours = Math.floor(minutes / 60);
    return hours < 48 ? hours + " h " + (minutes % 60) + " min" : Math.round(hours / 24) + " days";
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (className) {
      td.className = className;
    }
    row.appendChild(td);
    return td;
  }

  function clear(node) {
    while (node.firstChild) {
      node.removeChild(node.firstChild);
    }
  }

  function renderTimeline(list, rangeStart, rangeEnd) {
    const lane = $("timeline");
    const axis = $("axis");
    const tbody = $("intervals").querySelector("tbody");
    clear(lane);
    clear(axis);
    clear(tbody);
    const span = Math.max(rangeEnd - rangeStart, 1);
    for (const item of list) {
      const start = item.start ? Math.max(Date.parse(item.start), rangeStart) : rangeStart;
      const end = item.end ? Math.min(Date.parse(item.end), rangeEnd) : rangeEnd;
      const bar = document.createElement("div");
      bar.className = "bar" + (item.status === "ERROR" ? " doubtful" : "") + (item.end ? "" : " open");
      bar.setAttribute("role", "listitem");
      bar.style.left = ((100 * (start - rangeStart)) / span).toFixed(3) + "%";
      bar.style.width = Math.max((100 * (end - start)) / span, 0.2).toFixed(3) + "%";
      bar.textContent = label(item.sample);
      bar.title = label(item.sample) + "\n" + (fmt(item.start) || "before the range") + " to " +
        (fmt(item.end) || "now") + (item.note ? "\n" + item.note : "");
      lane.appendChild(bar);

      const row = document.createElement("tr");
      cell(row, item.sample.name);
      cell(row, item.sample.barcode);
      cell(row, fmt(item.start) || "before " + fmt(new Date(rangeStart).toISOString()));
      cell(row, fmt(item.end) || "still mounted");
      cell(row, duration(item.start, item.end));
      cell(row, item.status + (item.note ? ": " + item.note : ""), item.status === "ERROR" ? "error" : "");
      tbody.appendChild(row);
    }
    for (let i = 0; i <= 4; i += 1) {
      const tick = document.createElement("span");
      tick.className = "tick";
      tick.style.left = i * 25 + "%";
      tick.textContent = fmt(new Date(rangeStart + (span * i) / 4).toISOString()).slice(0, 16);
      axis.appendChild(tick);
    }
  }

  function parseTime(text, fallback) {
    if (!text) {
      return fallback;
    }
    const ms = Date.parse(text);
    if (Number.isNaN(ms)) {
      throw new Error("not a date and time: " + text + " (use e.g. 2026-11-24T08:00:00Z)");
    }
    return ms;
  }

  async function loadTimeline() {
    const beamline = $("beamline").value.trim();
    if (!beamline) {
      return;
    }
    busy(+1);
    setStatus("timeline-status", "loading " + beamline + " ...", false);
    try {
      const now = Date.now();
      const rangeStart = parseTime($("since").value.trim(), now - 7 * DAY_MS);
      const rangeEnd = parseTime($("until").value.trim(), now);
      const params = { beamline, since: new Date(rangeStart).toISOString() };
      if ($("until").value.trim()) {
        params.until = new Date(rangeEnd).toISOString();
      }
      const [page, mounted] = await Promise.all([
        allEvents(params),
        api("/beamlines/" + encodeURIComponent(beamline) + "/mounted"),
      ]);
      const list = intervals(page.events);
      renderTimeline(list, rangeStart, rangeEnd);
      $("mounted-now").textContent = mounted.mounted
        ? "Mounted now on " + beamline + ": " + label(mounted.mounted.sample) + " since " +
          fmt(mounted.mounted.occurred_at) + (mounted.mounted.status === "ERROR" ? " (doubtful)" : "")
        : "Nothing mounted now on " + beamline + ".";
      setStatus(
        "timeline-status",
        page.events.length + " events, " + list.length + " mounts" +
          (page.truncated ? " (truncated: narrow the time range)" : ""),
        false,
      );
    } catch (error) {
      setStatus("timeline-status", error.message, true);
    } finally {
      busy(-1);
    }
  }

  function renderHistory(events) {
    const visits = $("visits").querySelector("tbody");
    const history = $("history").querySelector("tbody");
    clear(visits);
    clear(history);
    const byBeamline = new Map();
    for (const event of events) {
      if (!byBeamline.has(event.beamline)) {
        byBeamline.set(event.beamline, []);
      }
      byBeamline.get(event.beamline).push(event);
    }
    const all = [];
    for (const list of byBeamline.values()) {
      all.push(...intervals(list));
    }
    all.sort((a, b) => (a.start || a.end).localeCompare(b.start || b.end));
    for (const item of all) {
      const row = document.createElement("tr");
      cell(row, item.beamline);
      cell(row, label(item.sample));
      cell(row, fmt(item.start) || "unknown");
      cell(row, fmt(item.end) || "still mounted");
      cell(row, duration(item.start, item.end));
      cell(row, item.status + (item.note ? ": " + item.note : ""), item.status === "ERROR" ? "error" : "");
      visits.appendChild(row);
    }
    for (const event of events) {
      const row = document.createElement("tr");
      const where = [event.sample.container_name || event.sample.container_id, event.sample.container_position]
        .filter(Boolean)
        .join(" / ");
      const changer = event.sample_changer ? event.sample_changer.name + " " + (event.sample_changer.position || "") : "";
      cell(row, fmt(event.occurred_at));
      cell(row, event.beamline);
      cell(row, event.type);
      cell(row, event.status, event.status === "ERROR" ? "error" : "");
      cell(row, label(event.sample));
      cell(row, [where, changer.trim()].filter(Boolean).join("; "));
      cell(row, event.session);
      cell(row, event.proposal);
      cell(row, event.message);
      history.appendChild(row);
    }
  }

  async function loadHistory() {
    const barcode = $("barcode").value.trim();
    if (!barcode) {
      return;
    }
    busy(+1);
    setStatus("history-status", "searching " + barcode + " ...", false);
    try {
      const body = await api("/samples/" + encodeURIComponent(barcode) + "/history");
      renderHistory(body.events);
      setStatus(
        "history-status",
        body.events.length ? body.events.length + " events for " + barcode : "no event for " + barcode,
        false,
      );
    } catch (error) {
      setStatus("history-status", error.message, true);
    } finally {
      busy(-1);
    }
  }

  function remember(values) {
    const query = new URLSearchParams(window.location.search);
    for (const [key, value] of Object.entries(values)) {
      if (value) {
        query.set(key, value);
      } else {
        query.delete(key);
      }
    }
    const search = query.toString();
    window.history.replaceState(null, "", window.location.pathname + (search ? "?" + search : ""));
  }

  function init() {
    const query = new URLSearchParams(window.location.search);
    $("beamline").value = query.get("beamline") || "";
    $("since").value = query.get("since") || new Date(Date.now() - 7 * DAY_MS).toISOString();
    $("until").value = query.get("until") || "";
    $("barcode").value = query.get("barcode") || "";
    showTokenState();

    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token").value.trim();
      $("token").value = "";
      if (value) {
        sessionStorage.setItem(TOKEN_KEY, value);
      }
      showTokenState();
      loadTimeline();
      loadHistory();
    });
    $("forget-token").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showTokenState();
    });
    $("timeline-form").addEventListener("submit", (event) => {
      event.preventDefault();
      remember({ beamline: $("beamline").value.trim(), since: $("since").value.trim(), until: $("until").value.trim() });
      loadTimeline();
    });
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      remember({ barcode: $("barcode").value.trim() });
      loadHistory();
    });

    busy(+1);
    Promise.all([token() ? loadTimeline() : null, token() ? loadHistory() : null]).finally(() => busy(-1));
  }

  init();
})();
