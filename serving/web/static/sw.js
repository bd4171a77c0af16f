// The agent page's service worker: the page opens without a network, and the outbox is sent by
// Background Sync when the connection comes back, even with the page closed.
//
// The service writes the cache's version (a hash of the page's files) and the list of files into
// this script when it serves it (/sw.js), so a new release is a new worker: it caches the new files,
// takes over at once and deletes the old cache. Requests go to the network first and fall back to
// the cache only when the network fails, so nobody is kept on an old page while online.

import { sendOutbox } from "/static/outbox.js";

const VERSION = "__SHELL_VERSION__";
const SHELL = ["__SHELL__"];
const CACHE = `vipare-shell-${VERSION}`;
const SYNC_TAG = "vipare-outbox";

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    // One by one: a library that is not installed (npm ci not run) must not stop the page's shell.
    await Promise.all(SHELL.map(async (url) => {
      try {
        const response = await fetch(url, { cache: "reload", credentials: "same-origin" });
        if (response.ok) await cache.put(url, response);
      } catch {
        /* offline while installing: it is cached the next time it is fetched */
      }
    }));
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith("vipare-shell-") && name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

function cacheable(url) {
  return url.origin === self.location.origin && (SHELL.includes(url.pathname) || url.pathname.startsWith("/static/"));
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET") return;
  const url = new URL(request.url);
  const page = request.mode === "navigate" && url.origin === self.location.origin && url.pathname === "/";
  if (!page && !cacheable(url)) return; // the API and the manager's page: the network only
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    const key = page ? "/" : url.pathname;
    try {
      const response = await fetch(request);
      if (response.ok) await cache.put(key, response.clone());
      return response;
    } catch (error) {
      const cached = await cache.match(key);
      if (cached) return cached;
      throw error;
    }
  })());
});

async function tell(message) {
  for (const client of await self.clients.matchAll({ type: "window" })) client.postMessage(message);
}

self.addEventListener("sync", (event) => {
  if (event.tag !== SYNC_TAG) return;
  event.waitUntil((async () => {
    const result = await sendOutbox({
      onSent: (item, report, status) => tell({ type: "sent", item, report, status }),
      onChange: () => tell({ type: "outbox" }),
    });
    // Still offline or the server busy: fail the sync event, so that the browser tries it again later.
    if (result.outcome === "offline" || result.outcome === "retry") throw new Error(result.outcome);
  })());
});
