// model.js: the page's logic without DOM or network. Contract events in, plain values out.
//
//   eventKind, intervals   events -> visits (what was mounted from when to when, and how sure)
//   duration               milliseconds -> "42 s", "3 min 20 s", "2 h 05 min", "3 d 4 h"
//   zone, parseTime        times in the chosen time zone (the browser's by default), with its name
//   fitRange, ticks        the time axis: a range that fits the data, and readable tick marks
//   matchesQuery, samples  the sample search: which events match, one summary per sample
//   sourceText, positionText, sampleLabel   how an event's fields read on the page
"use strict";

export const MINUTE = 60 * 1000;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

// --- kinds of events and visits -------------------------------------------------------------------
// The contract has one non-success status, ERROR: "a failed or doubtful mount/unmount", the message
// saying which. A mount whose message says it failed (the plugin writes "load of 3:16 by changer
// 'sc' failed: ...") is a failed load: the sample was probably not put on the goniometer. Any
// other ERROR is doubtful: something happened, but the record is contradicted or unconfirmed.
const FAILED_MESSAGE = /\bfail(?:ed|ure|s)?\b/i;

/** "ok", "failed" (a failed load: ERROR mount saying it failed) or "doubtful" (any other ERROR). */
export function eventKind(event) {
  if (event.status !== "ERROR") {
    return "ok";
  }
  return event.type === "mounted" && FAILED_MESSAGE.test(event.message || "") ? "failed" : "doubtful";
}

/** The kinds a visit is drawn as, in legend order, with what each means. */
export const VISIT_KINDS = [
  ["visit", "mounted, then unmounted"],
  ["open", "still mounted"],
  ["doubtful", "doubtful: an ERROR event (not observed, contradicted or unidentified)"],
  ["failed", "failed load: the changer reported a failure; the sample may not have been mounted"],
];

function sameSample(a, b) {
  if (a.barcode !== null || b.barcode !== null) {
    return a.barcode === b.barcode;
  }
  return a.name === b.name;
}

/**
 * The visits of one beamline's events (oldest first): from a mount to the unmount that ends it.
 * A visit: {beamline, sample, start, end (ISO text or null), mount, unmount (event or null),
 * kind: visit | open | doubtful | failed, ongoing (no end yet), notes: [text]}.
 * start null: mounted before the first event given; end null: nothing has ended it yet.
 */
export function intervals(events) {
  const out = [];
  let current = null;
  const finish = (end, unmount, note) => {
    current.end = end;
    current.unmount = unmount;
    current.ongoing = false;
    if (note) {
      current.notes.push(note);
      current.doubt = true;
    }
    if (unmount && unmount.status === "ERROR") {
      current.doubt = true;
      current.notes.push("unmount: " + (unmount.message || "ERROR"));
    }
    out.push(settle(current));
    current = null;
  };
  for (const event of events) {
    if (event.type === "mounted") {
      if (current) {
        finish(event.occurred_at, null, "no unmount recorded before the next mount");
      }
      const kind = eventKind(event);
      current = {
        beamline: event.beamline, sample: event.sample, start: event.occurred_at, end: null,
        mount: event, unmount: null, ongoing: true, failed: kind === "failed",
        doubt: kind === "doubtful", notes: event.message ? ["mount: " + event.message] : [],
      };
    } else if (current && (event.mount_event_id === current.mount.event_id || sameSample(current.sample, event.sample))) {
      finish(event.occurred_at, event, "");
    } else {
      if (current) {
        finish(event.occurred_at, null, "an unmount of another sample was recorded");
      }
      current = {
        beamline: event.beamline, sample: event.sample, start: null, end: null, mount: null,
        unmount: null, ongoing: true, failed: false, doubt: false, notes: ["mounted before the range shown"],
      };
      finish(event.occurred_at, event, "");
    }
  }
  if (current) {
    out.push(settle(current));
  }
  return out;
}

function settle(visit) {
  if (visit.failed) {
    visit.kind = "failed";
  } else if (visit.doubt) {
    visit.kind = "doubtful";
  } else {
    visit.kind = visit.ongoing ? "open" : "visit";
  }
  return visit;
}

/** "SUCCESS", or "ERROR (failed)" / "ERROR (doubtful)". */
export function statusText(visit) {
  return visit.kind === "failed" ? "ERROR (failed)" : visit.kind === "doubtful" ? "ERROR (doubtful)" : "SUCCESS";
}

// --- durations ------------------------------------------------------------------------------------
/** A duration for people: "0.4 s", "42 s", "3 min 20 s", "45 min", "2 h 05 min", "3 d 4 h". */
export function duration(ms) {
  if (!Number.isFinite(ms) || ms < 0) {
    return "";
  }
  const seconds = ms / 1000;
  if (seconds < 1) {
    return seconds.toFixed(1) + " s";
  }
  if (seconds < 60) {
    return Math.round(seconds) + " s";
  }
  const totalSeconds = Math.round(seconds);
  const minutes = Math.floor(totalSeconds / 60);
  if (minutes < 10) {
    const rest = totalSeconds % 60;
    return minutes + " min" + (rest ? " " + rest + " s" : "");
  }
  const totalMinutes = Math.round(seconds / 60);
  if (totalMinutes < 60) {
    return totalMinutes + " min";
  }
  const hours = Math.floor(totalMinutes / 60);
  if (hours < 48) {
    return hours + " h " + String(totalMinutes % 60).padStart(2, "0") + " min";
  }
  const days = Math.floor(hours / 24);
  return days + " d" + (hours % 24 ? " " + (hours % 24) + " h" : "");
}

// --- time zones -----------------------------------------------------------------------------------
/**
 * Formatting in one time zone (undefined: the browser's). Returns
 * {name: "Europe/Paris", offset(ms) -> ms east of UTC, format(ms) -> "2026-11-24 09:00:00 CET",
 *  clock(ms) -> "09:00:00", date(ms) -> "2026-11-24", describe(ms) -> "Europe/Paris, UTC+01:00"}.
 */
export function zone(timeZone) {
  const options = {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    second: "2-digit", hourCycle: "h23", timeZoneName: "short",
  };
  if (timeZone) {
    options.timeZone = timeZone;
  }
  const formatter = new Intl.DateTimeFormat("en-GB", options);
  const name = formatter.resolvedOptions().timeZone;
  const parts = (ms) => {
    const out = {};
    for (const part of formatter.formatToParts(new Date(ms))) {
      out[part.type] = part.value;
    }
    return out;
  };
  const offset = (ms) => {
    const p = parts(ms);
    const asUtc = Date.UTC(+p.year, +p.month - 1, +p.day, +p.hour, +p.minute, +p.second);
    return asUtc - Math.floor(ms / 1000) * 1000;
  };
  const offsetText = (ms) => {
    const minutes = Math.round(offset(ms) / MINUTE);
    const sign = minutes < 0 ? "-" : "+";
    const abs = Math.abs(minutes);
    return "UTC" + sign + String(Math.floor(abs / 60)).padStart(2, "0") + ":" + String(abs % 60).padStart(2, "0");
  };
  return {
    name,
    offset,
    format(ms) {
      const p = parts(ms);
      return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second} ${p.timeZoneName}`;
    },
    clock(ms) {
      const p = parts(ms);
      return `${p.hour}:${p.minute}:${p.second}`;
    },
    date(ms) {
      const p = parts(ms);
      return `${p.year}-${p.month}-${p.day}`;
    },
    describe(ms) {
      return name + ", " + offsetText(ms);
    },
  };
}

/**
 * A time typed by a person, in milliseconds: RFC 3339 with an offset ("2026-11-24T08:00:00Z"), or
 * "2026-11-24 08:00[:00]" read in ``tz`` (a ``zone()``). NaN when it is neither.
 */
export function parseTime(text, tz) {
  const value = text.trim();
  if (/[zZ]$|[+-]\d{2}:\d{2}$/.test(value)) {
    return Date.parse(value.replace(" ", "T"));
  }
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?$/.exec(value);
  if (!m) {
    return NaN;
  }
  const wall = Date.UTC(+m[1], +m[2] - 1, +m[3], +(m[4] || 0), +(m[5] || 0), +(m[6] || 0));
  let ms = wall - tz.offset(wall);
  ms = wall - tz.offset(ms); // once more: the offset at the instant itself (daylight saving)
  return ms;
}

// --- the time axis --------------------------------------------------------------------------------
/**
 * The range [start, end] in ms that shows ``events`` (oldest first, not empty) well: from the first
 * to the last event, with a small margin on both sides; up to ``now`` when something is still
 * mounted, or when the time since the last event is short beside the events' own span (a burst
 * of events 10 minutes ago is not squeezed against an empty 10 minutes).
 */
export function fitRange(events, visits, now) {
  const times = events.map((e) => Date.parse(e.occurred_at));
  const first = Math.min(...times);
  let last = Math.max(...times);
  if (visits.some((v) => v.ongoing) || now - last < 0.25 * (last - first)) {
    last = Math.max(last, now);
  }
  const margin = Math.max((last - first) * 0.03, 2000);
  return [first - margin, last + margin];
}

const STEPS = [
  1000, 5000, 10000, 30000, MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR,
  2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY, 90 * DAY, 365 * DAY,
];

/** Tick marks for [start, end] in ``tz``: [{at: ms, text}], at round times of that zone. */
export function ticks(start, end, tz, maxTicks = 8) {
  const span = Math.max(end - start, 1);
  const step = STEPS.find((s) => span / s <= maxTicks) || STEPS[STEPS.length - 1];
  const offset = tz.offset(start);
  const out = [];
  for (let at = Math.ceil((start + offset) / step) * step - offset; at <= end; at += step) {
    let text;
    if (step >= DAY) {
      text = tz.date(at);
    } else if (span > DAY) {
      text = tz.date(at).slice(5) + " " + tz.clock(at).slice(0, 5);
    } else {
      text = step < MINUTE ? tz.clock(at) : tz.clock(at).slice(0, 5);
    }
    out.push({ at, text });
  }
  return out;
}

// --- the sample search ----------------------------------------------------------------------------
/** True when ``sample``'s barcode, name or sample_id contains ``query`` (any case). */
export function matchesQuery(sample, query) {
  const needle = query.trim().toLowerCase();
  return [sample.barcode, sample.name, sample.sample_id].some(
    (value) => typeof value === "string" && value.toLowerCase().includes(needle),
  );
}

/** What identifies a sample on the page: its barcode, else its name. */
export function sampleKey(sample) {
  return sample.barcode !== null ? "barcode:" + sample.barcode : "name:" + sample.name;
}

/**
 * One summary per sample of ``events`` (any order): {sample (as in its latest event), beamlines
 * [sorted], last (ISO), count}, the most recently seen first.
 */
export function samples(events) {
  const byKey = new Map();
  for (const event of events) {
    const key = sampleKey(event.sample);
    const entry = byKey.get(key) || { sample: event.sample, beamlines: new Set(), last: "", count: 0 };
    entry.beamlines.add(event.beamline);
    entry.count += 1;
    if (event.occurred_at >= entry.last) {
      entry.last = event.occurred_at;
      entry.sample = event.sample;
    }
    byKey.set(key, entry);
  }
  return [...byKey.values()]
    .map((entry) => ({ ...entry, beamlines: [...entry.beamlines].sort() }))
    .sort((a, b) => b.last.localeCompare(a.last));
}

// --- how fields read ------------------------------------------------------------------------------
const SOURCES = { barcode_reader: "barcode reader", sample_changer: "sample changer", manual: "manual" };

export function sourceText(source) {
  return SOURCES[source] || source || "";
}

/** The changer and its position ("sc 3:05"), or "" when no changer was involved. */
export function positionText(event) {
  const changer = event && event.sample_changer;
  if (!changer) {
    return "";
  }
  return [changer.name, changer.position].filter(Boolean).join(" ");
}

/** The container and the position in it ("Puck 7 / 5"). */
export function containerText(sample) {
  return [sample.container_name || sample.container_id, sample.container_position].filter(Boolean).join(" / ");
}

export function sampleLabel(sample) {
  if (sample.name && sample.barcode) {
    return sample.name + " (" + sample.barcode + ")";
  }
  return sample.name || sample.barcode || "?";
}
