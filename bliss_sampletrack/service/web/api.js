// api.js: the service's read endpoints as the page uses them (the contract's, nothing else).
//
//   ApiError                     an answer that is not 2xx, or no answer (status 0)
//   client(base, token)          -> {get, events, recent, scan}; ``token()`` gives the current token
//     get(path)                  one GET, JSON answer; throws ApiError
//     events(params, maxPages)   GET /events page after page (1000 each): {events, truncated}
//     recent(params)             the most recent events: the first non-empty look-back window
//     scan(params, keep, max)    every event, newest windows first, kept when keep(event): the
//                                search by name (the contract searches by barcode only)
"use strict";

import { DAY, HOUR } from "./model.js";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status; // 0: no answer (network error, service down)
    this.code = code;
  }
}

const PAGE = 1000;
const LOOK_BACK = [DAY, 7 * DAY, 30 * DAY, 365 * DAY, null]; // null: everything

export function client(base, token) {
  async function get(path) {
    const value = token();
    if (!value) {
      throw new ApiError(401, "no_token", "no token given");
    }
    let response;
    try {
      response = await fetch(base + path, {
        headers: { Authorization: "Bearer " + value, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
        referrerPolicy: "no-referrer",
      });
    } catch (_) {
      throw new ApiError(0, "network", "the service does not answer (network error or service down)");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const error = body && body.error ? body.error : { code: "http_" + response.status, message: response.statusText };
      throw new ApiError(response.status, error.code, error.message || "HTTP " + response.status);
    }
    return body;
  }

  async function events(params, maxPages = 20) {
    const out = [];
    let cursor = null;
    let pages = 0;
    do {
      const query = new URLSearchParams(params);
      query.set("limit", String(PAGE));
      if (cursor) {
        query.set("cursor", cursor);
      }
      const page = await get("/events?" + query.toString());
      out.push(...page.events);
      cursor = page.next_cursor;
      pages += 1;
    } while (cursor && pages < maxPages);
    return { events: out, truncated: Boolean(cursor) };
  }

  // The most recent events: the events of the last day, else of the last 7 days, 30 days, year,
  // else all of them (the first window that has any). {events, truncated, since}.
  async function recent(params, now = Date.now()) {
    for (const span of LOOK_BACK) {
      const query = { ...params };
      if (span !== null) {
        query.since = new Date(now - span).toISOString();
      }
      const page = await events(query);
      if (page.events.length || span === null) {
        return { ...page, since: span === null ? null : now - span };
      }
    }
    return { events: [], truncated: false, since: null };
  }

  // Every readable event, the newest first by windows (1 h, then doubling), keeping those for
  // which keep(event) is true, until ``maxEvents`` were read. {kept (oldest first), read, complete}.
  async function scan(params, keep, maxEvents = 50000, now = Date.now()) {
    let kept = [];
    let read = 0;
    let until = null;
    let span = HOUR;
    for (;;) {
      const since = (until === null ? now : until) - span;
      const query = { ...params, since: new Date(since).toISOString() };
      if (until !== null) {
        query.until = new Date(until).toISOString();
      }
      const left = Math.max(1, Math.ceil((maxEvents - read) / PAGE));
      const page = await events(query, left);
      read += page.events.length;
      kept = page.events.filter(keep).concat(kept);
      if (page.truncated || read >= maxEvents) {
        return { kept, read, complete: false };
      }
      const older = await get("/events?" + new URLSearchParams({ ...params, until: query.since, limit: "1" }));
      if (!older.events.length) {
        return { kept, read, complete: true };
      }
      until = since;
      // skip the empty years in one step: the next window reaches the oldest event left
      span = Math.max(span * 2, Math.min(until - Date.parse(older.events[0].occurred_at) + 1, 64 * span));
    }
  }

  return { get, events, recent, scan };
}
