// Entry module: reads the server's configuration, creates the store with its
// REST client and socket, mounts the views. Nothing imports this module.
import { io } from "socket.io-client";
import { t } from "./lib/i18n.js";
import { Store } from "./store/store.js";
import { api, accessToken, session, deviceLabel } from "./store/api.js";
import { h, clear, toast } from "./views/dom.js";
import { ctx, readConfig } from "./views/context.js";
import { errorText } from "./views/format.js";
import { renderAuth, renderOAuthError } from "./views/auth.js";
import { buildShell, onRoute, renderBanner, wire, relabel } from "./views/shell.js";
import * as groupsView from "./views/groups.js";

const root = document.getElementById("app");
ctx.config = readConfig(root);

function createSocket() {
  return io("/chat", {
    transports: ["websocket", "polling"],
    auth: (cb) => { accessToken().then((token) => cb({ token }), () => cb({ token: "" })); },
    reconnectionDelay: 500,
    reconnectionDelayMax: 4000,
  });
}

const store = new Store({ api, createSocket });
ctx.store = store;
window.__parley = store; // handy in the console and for the browser tests

async function signOut() {
  // Socket first: ending the session drops it on the server, and a reconnect
  // racing the reload would try to refresh a token that no longer exists.
  store.socket?.disconnect();
  try { await api("POST", "/auth/logout"); } catch { /* already gone */ }
  signOutLocal();
}

function signOutLocal() {
  session.clear();
  localStorage.removeItem("parley.push_subscription"); // the server dropped it with the session
  store.socket?.disconnect();
  location.hash = "";
  location.reload();
}

/** The socket was refused or dropped by the server: refresh the token, else sign out. */
function reauth() {
  accessToken(true).then(() => setTimeout(() => store.socket?.connect(), 300), () => signOutLocal());
}

ctx.actions = { signOut, signOutLocal, relabel: () => relabel(root), reauth };

async function handleJoinPath() {
  const m = location.pathname.match(/^\/join\/([^/]+)$/);
  if (!m) return;
  history.replaceState(null, "", "/");
  if (ctx.config.groups) await groupsView.joinByToken(decodeURIComponent(m[1]));
}

async function startApp() {
  clear(root, h("div", { class: "boot" }, h("div", { class: "boot-logo" }, "Parley")));
  try {
    await store.load();
  } catch (err) {
    if (err.status === 401) return signOutLocal();
    if (err instanceof TypeError || err.status === 0 || !navigator.onLine) {
      // Offline start (the service worker served the shell): show the app, connecting.
      return startOffline();
    }
    clear(root, h("div", { class: "boot" }, h("p", {}, errorText(err)), h("button", { class: "primary", onclick: () => startApp() }, t("retry"))));
    return;
  }
  mount();
}

function mount() {
  buildShell(root);
  wire();
  onRoute();
  renderBanner();
  handleJoinPath();
  // The socket's first sync sends a cursor for every chat it knows: all of them
  // once the list is in. Should a page fail, sync brings the chats it missed.
  store.loadRest().catch(() => {}).finally(() => store.connect());
}

function startOffline() {
  // Enough of a user to draw the shell; everything else arrives once online.
  store.me = JSON.parse(localStorage.getItem("parley.me") || "null") || { id: "", display_name: "", username: "" };
  buildShell(root);
  wire();
  onRoute();
  renderBanner();
  const retry = () => { window.removeEventListener("online", retry); location.reload(); };
  window.addEventListener("online", retry);
}

store.on("connection", () => {
  if (store.me?.id) localStorage.setItem("parley.me", JSON.stringify(store.me));
});

window.addEventListener("storage", (e) => {
  // Signed out in another tab.
  if (e.key === "parley.refresh" && !e.newValue && store.me) signOutLocal();
});

/** Back from a provider: `#oauth_code=` (exchanged here for tokens: the code
 * is single-use and never sent to a server in a URL), `#oauth_linked=` or
 * `#oauth_error=`. Returns true when it took over the start. */
function handleOAuthReturn() {
  const p = new URLSearchParams(location.hash.slice(1));
  const signInPage = () => { history.replaceState(null, "", "/"); renderAuth(root, startApp); };
  if (p.has("oauth_error")) {
    history.replaceState(null, "", "/");
    renderOAuthError(root, p.get("oauth_error"), () => (session.signedIn ? startApp() : signInPage()));
    return true;
  }
  if (p.has("oauth_linked")) {
    const back = p.get("return_to") || "/";
    history.replaceState(null, "", back.startsWith("/") && !back.startsWith("//") && back !== "/" ? back : "/#/settings/account");
    return false;
  }
  if (!p.has("oauth_code")) return false;
  history.replaceState(null, "", "/");
  clear(root, h("div", { class: "boot" }, h("div", { class: "boot-logo" }, t("signingIn"))));
  api("POST", "/auth/oauth/exchange", { code: p.get("oauth_code"), device: deviceLabel() }, { auth: false })
    .then((tokens) => {
      session.store(tokens);
      // Where the sign-in started from (a local path the server checked).
      if (tokens.return_to?.startsWith("/") && !tokens.return_to.startsWith("//")) history.replaceState(null, "", tokens.return_to);
      startApp();
    },
      (err) => renderOAuthError(root, err.code, signInPage));
  return true;
}

store.on("security", ({ session: s }) => toast(t("newSession", { device: s.device || s.ip })));

if (handleOAuthReturn()) { /* started there */ }
else if (session.signedIn) startApp();
else renderAuth(root, startApp);

// A click on a push notification while this tab is open: the worker focused
// us and names the chat to open.
if ("serviceWorker" in navigator) {
  navigator.serviceWorker.addEventListener("message", (e) => {
    if (e.data?.type !== "parley:open" || typeof e.data.url !== "string") return;
    const url = new URL(e.data.url, location.origin);
    if (url.origin === location.origin && url.hash.startsWith("#/chats/")) location.hash = url.hash;
  });
}

// One service worker for the whole origin: caches the shell for offline starts.
if ("serviceWorker" in navigator && root.dataset.sw) {
  addEventListener("load", () => {
    setTimeout(() => navigator.serviceWorker.register(root.dataset.sw, { scope: "/" }).catch(() => {}), 1000);
  });
}
