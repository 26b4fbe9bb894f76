/**
 * The arithmetic of the shared stream (channel-leader.js), pure: which
 * channels it carries, and the composite ids of GET /stream.
 *
 * A composite id is `<fingerprint>.<position 1>.<position 2>...`, one
 * position per channel in the order the stream asked for them, the
 * fingerprint naming that list (sse/protocol/multiplex.py). An id of one
 * list means nothing to a stream of another, so when the set of channels
 * changes the page writes the id for the new list from the positions it
 * learned: channels it knew resume exactly, a channel new to the stream has
 * no position and starts with a `gap` of its own (the views then fetch what
 * they show, as they would anyway).
 */

import { fingerprint } from "./blake2b.js";

/**
 * The union of the tabs' channels (`lists`: arrays of [channel, usedAt]), at
 * most `max`, the most recently taken kept; in the order the stream asks for them.
 */
export function unionOf(lists, max) {
  const latest = new Map();
  for (const list of lists) {
    for (const entry of Array.isArray(list) ? list : []) {
      if (!Array.isArray(entry) || typeof entry[0] !== "string") continue;
      const usedAt = Number.isFinite(entry[1]) ? entry[1] : 0;
      latest.set(entry[0], Math.max(latest.get(entry[0]) ?? 0, usedAt));
    }
  }
  const kept = [...latest].sort((a, b) => b[1] - a[1]).slice(0, max);
  return kept.map(([channel]) => channel).sort();
}

/**
 * The position of each channel in composite id `id` of a stream on `channels`,
 * or null. A later position sharing the first one's `<epoch>-` comes as its
 * `<seq>` alone; it is written out whole here, as any list's id may hold it.
 */
export function positionsOf(id, channels) {
  const parts = typeof id === "string" ? id.split(".") : [];
  if (parts.length !== channels.length + 1) return null;
  const first = parts[1];
  const base = /^[0-9]+-[0-9]+$/.test(first) ? first.slice(0, first.indexOf("-") + 1) : "";
  const positions = {};
  channels.forEach((channel, i) => {
    const part = parts[i + 1];
    if (/^[0-9]+-[0-9]+$/.test(part)) positions[channel] = part;
    else if (base !== "" && /^[0-9]+$/.test(part)) positions[channel] = base + part;
  });
  return positions;
}

/**
 * Note `update` (channel -> position, or null) in `positions` (a Map, in the
 * order channels were last seen), keeping the `max` seen last: a channel left
 * long ago would resume with a gap anyway.
 */
export function notePositions(positions, update, max) {
  for (const [channel, position] of Object.entries(update ?? {})) {
    positions.delete(channel);
    positions.set(channel, position);
  }
  while (positions.size > max) positions.delete(positions.keys().next().value);
}

/** The composite id resuming `channels` from `positions`, or null when none is known. */
export function compositeFor(channels, positions) {
  const parts = channels.map((channel) => positions.get(channel) ?? "");
  if (parts.every((part) => part === "")) return null;
  return [fingerprint(channels), ...parts].join(".");
}

/** The same channels in the same order. */
export function sameList(a, b) {
  return a.length === b.length && a.every((channel, i) => channel === b[i]);
}

/** An event's data as a JSON object, or null. */
export function parseObject(data) {
  try {
    const parsed = JSON.parse(data);
    return parsed !== null && typeof parsed === "object" ? parsed : null;
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    return null;
  }
}
