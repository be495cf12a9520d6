// Parley's one service worker (scope "/"). It keeps the app shell — the page
// and its fingerprinted assets — so a reload without network still opens the
// app, which then shows its "connecting" banner. Other features (e.g. push)
// add their own handlers to this file, next to these.
//
// The server prepends `self.PARLEY = {version, shell: [urls]}` when it serves
// this file, so a new build changes the worker's bytes and replaces it.
const { version = "dev", shell = [], icon = "" } = self.PARLEY || {};
const CACHE = `parley-shell-${version}`;

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(["/", ...shell]);
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) {
      if (key.startsWith("parley-shell-") && key !== CACHE) await caches.delete(key);
    }
    await self.clients.claim();
  })());
});

function isShellPage(url) {
  return url.origin === self.location.origin && (url.pathname === "/" || url.pathname.startsWith("/join/"));
}

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET") return;
  const url = new URL(req.url);
  if (req.mode === "navigate" && isShellPage(url)) {
    // The page: network first (it is never stale when online), the cached copy offline.
    event.respondWith((async () => {
      try {
        const res = await fetch(req);
        if (res.ok) (await caches.open(CACHE)).put("/", res.clone());
        return res;
      } catch {
        return (await caches.match("/")) || Response.error();
      }
    })());
    return;
  }
  if (shell.includes(url.href) || shell.includes(url.pathname)) {
    // Fingerprinted assets never change under their URL: cache first.
    event.respondWith(caches.match(req).then((hit) => hit || fetch(req)));
  }
  // Everything else (API, socket, media) goes to the network untouched.
});

// --- push notifications (docs/push.md) -------------------------------------
// The server's payload: {type: "message" | "recall" | "badge", tag, title, body,
// badge, conversation_id, message_id, url}. One notification per chat (tag):
// a newer push, or a recall follow-up, replaces it in place.

async function setBadge(count) {
  if (typeof count !== "number" || !self.navigator.setAppBadge) return;
  try {
    if (count > 0) await self.navigator.setAppBadge(count);
    else await self.navigator.clearAppBadge();
  } catch { /* the platform has no badge */ }
}

async function showPush(p) {
  await setBadge(p.badge);
  if (p.type === "badge") return;
  await self.registration.showNotification(String(p.title || "Parley"), {
    body: String(p.body || ""),
    tag: String(p.tag || "parley"),
    // A new message alerts again; a recall only replaces the text quietly.
    renotify: p.type === "message",
    icon: icon || undefined,
    data: { url: String(p.url || "/"), conversation_id: p.conversation_id || null },
  });
}

self.addEventListener("push", (event) => {
  let payload = {};
  try {
    payload = event.data ? event.data.json() : {};
  } catch {
    payload = { title: "Parley", body: "" };
  }
  event.waitUntil(showPush(payload));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const { url = "/" } = event.notification.data || {};
  const target = new URL(url, self.location.origin);
  if (target.origin !== self.location.origin) return;
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    const tab = windows.find((c) => new URL(c.url).origin === self.location.origin);
    if (tab) {
      // An open Parley tab: bring it forward and let it open the chat itself.
      try {
        await tab.focus();
      } catch { /* focusing needs the click's user activation; open the chat anyway */ }
      tab.postMessage({ type: "parley:open", url: target.pathname + target.search + target.hash });
      return;
    }
    await self.clients.openWindow(target.href);
  })());
});
