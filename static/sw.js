// Parley's one service worker (scope "/"). It keeps the app shell — the page
// and its fingerprinted assets — so a reload without network still opens the
// app, which then shows its "connecting" banner. Other features (e.g. push)
// add their own handlers to this file, next to these.
//
// The server prepends `self.PARLEY = {version, shell: [urls]}` when it serves
// this file, so a new build changes the worker's bytes and replaces it.
const { version = "dev", shell = [] } = self.PARLEY || {};
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
