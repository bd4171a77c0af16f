// The agent's outbox, shared by the page and its service worker.
//
// Every photo is stored first in IndexedDB (its bytes, position, time, note and a client id), then
// uploaded, and removed only after a 2xx answer. One sender runs at a time across tabs and the
// service worker (a Web Lock); the service answers a repeated photo from the same key with its first
// report, so a photo whose answer was lost on the way still counts once. The page sends with
// progress (XMLHttpRequest); the service worker, woken by Background Sync, sends with fetch.
//
// Items: {id, bytes, type, name, size, lat, lon, accuracy_m, position, captured_at, note, anyway, after_of,
// queued_at, status: waiting|sending|retry|key|refused|place, message}. `place`: refused for lack of
// a position; the agent places it on a map and it waits again.

import { errorOf, refusalMessage } from "./common.js";

const DB_NAME = "vipare-agent";
const DB_VERSION = 2;
export const LOCK = "vipare-outbox";
const HELD = new Set(["refused", "key", "place"]); // waiting for the agent, not for the network

function request(action) {
  return new Promise((resolve, reject) => {
    action.onsuccess = () => resolve(action.result);
    action.onerror = () => reject(action.error);
  });
}

let opened = null;

/** The database (outbox and settings stores), or null where IndexedDB is missing or refused. */
export function openDb() {
  if (!opened) {
    opened = (async () => {
      if (!("indexedDB" in self)) return null;
      try {
        const open = indexedDB.open(DB_NAME, DB_VERSION);
        open.onupgradeneeded = () => {
          const db = open.result;
          if (!db.objectStoreNames.contains("outbox")) db.createObjectStore("outbox", { keyPath: "id" });
          if (!db.objectStoreNames.contains("settings")) db.createObjectStore("settings");
        };
        return await request(open);
      } catch {
        return null;
      }
    })();
  }
  return opened;
}

async function run(store, mode, action) {
  const db = await openDb();
  if (!db) return undefined;
  return new Promise((resolve, reject) => {
    const tx = db.transaction(store, mode);
    const req = action(tx.objectStore(store));
    tx.oncomplete = () => resolve(req ? req.result : undefined);
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error);
  });
}

export const outbox = {
  async all() {
    const items = (await run("outbox", "readonly", (s) => s.getAll())) || [];
    return items.sort((a, b) => a.queued_at.localeCompare(b.queued_at));
  },
  put: (item) => run("outbox", "readwrite", (s) => s.put(item)),
  remove: (id) => run("outbox", "readwrite", (s) => s.delete(id)),
};

/** The agent key, mirrored here for the service worker (which cannot read localStorage). */
export const storedKey = {
  get: async () => (await run("settings", "readonly", (s) => s.get("key"))) || "",
  set: (key) => run("settings", "readwrite", (s) => (key ? s.put(key, "key") : s.delete("key"))),
};

/** The upload's form: the photo and the fields the service reads. */
export function uploadForm(item) {
  const form = new FormData();
  form.append("photo", new Blob([item.bytes], { type: item.type }), item.name);
  for (const name of ["lat", "lon", "accuracy_m", "position", "captured_at", "note", "after_of"]) {
    const value = item[name];
    if (value !== null && value !== undefined && value !== "") form.append(name, String(value));
  }
  if (item.anyway) form.append("agent_says_deposit", "true");
  return form;
}

/** POST /v1/reports with fetch (the service worker's way: no upload progress there). */
export function fetchUpload(item, key) {
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  return fetch("/v1/reports", { method: "POST", body: uploadForm(item), headers, cache: "no-store" });
}

/**
 * Send one item: {outcome: "sent", report, status}, or "offline" (keep, retry), "retry" (keep,
 * later, `after` seconds), "key" (keep, another key), "place" (keep, place it) or "refused".
 */
export async function sendItem(item, key, upload = fetchUpload, maxBytes = 0) {
  let response;
  try {
    response = await upload(item, key);
  } catch {
    return { outcome: "offline" };
  }
  if (response.ok) {
    try {
      return { outcome: "sent", report: await response.json(), status: response.status };
    } catch {
      return { outcome: "offline" }; // the answer was cut: send again, the service knows the photo
    }
  }
  const { code, detail } = await errorOf(response);
  const message = refusalMessage(response.status, code, detail, { maxBytes });
  if (response.status === 401 || response.status === 403) return { outcome: "key", message };
  if (response.status >= 500 || response.status === 408 || response.status === 429) {
    return { outcome: "retry", message, after: Number(response.headers.get("Retry-After")) || 0 };
  }
  if (response.status === 422 && (code === "location_missing" || code === "invalid_location")) {
    return { outcome: "place", message };
  }
  return { outcome: "refused", message };
}

/**
 * Upload what waits, oldest first, one at a time, under the Web Lock. Stops at the first network
 * failure, server trouble or key refusal and returns that result ({outcome: "done"} otherwise).
 * Callbacks: onSent(item, report, status), onChange() after each change of the outbox.
 */
export async function sendOutbox({ onSent = () => {}, onChange = () => {}, upload = fetchUpload, key = null,
  maxBytes = 0 } = {}) {
  const once = async () => {
    const token = key ?? (await storedKey.get());
    for (const item of await outbox.all()) {
      if (HELD.has(item.status)) continue;
      if (self.navigator && self.navigator.onLine === false) return { outcome: "offline" };
      await outbox.put({ ...item, status: "sending" });
      await onChange();
      const result = await sendItem(item, token, upload, maxBytes);
      if (result.outcome === "sent") {
        await outbox.remove(item.id); // only now: the service has the photo
        await onChange();
        await onSent(item, result.report, result.status);
        continue;
      }
      const status = result.outcome === "offline" ? "waiting" : result.outcome;
      await outbox.put({ ...item, status, message: result.message || "", fromQueue: true });
      await onChange();
      if (result.outcome !== "refused" && result.outcome !== "place") return result;
    }
    return { outcome: "done" };
  };
  if (self.navigator && self.navigator.locks) return self.navigator.locks.request(LOCK, once);
  return once();
}

/** Ask for Background Sync of the outbox; false where the browser has none (the page's retries then). */
export async function requestSync() {
  try {
    const registration = navigator.serviceWorker && (await navigator.serviceWorker.getRegistration());
    if (!registration || !registration.sync || !registration.active) return false;
    await registration.sync.register(LOCK);
    return true;
  } catch {
    return false;
  }
}
