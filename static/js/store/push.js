// This browser's Web Push subscription, kept in step with the server's list of
// devices (POST/DELETE /push/subscriptions). Called from a click only: the
// permission prompt never appears on its own.
import { api } from "./api.js";

const KEY = "parley.push_subscription";

export function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

async function registration() {
  return (await navigator.serviceWorker.getRegistration("/")) ||
    navigator.serviceWorker.register("/sw.js", { scope: "/" });
}

function b64urlToBytes(text) {
  const pad = "=".repeat((4 - (text.length % 4)) % 4);
  const raw = atob((text + pad).replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

/** Whether this browser is subscribed and the server knows it. */
export async function pushActive() {
  if (!pushSupported() || Notification.permission !== "granted") return false;
  const reg = await navigator.serviceWorker.getRegistration("/");
  const sub = reg && await reg.pushManager.getSubscription();
  return Boolean(sub && localStorage.getItem(KEY));
}

/** Ask for permission (must run from a click), subscribe, register with the server. */
export async function enablePush() {
  if (!pushSupported()) throw new Error("unsupported");
  const permission = await Notification.requestPermission();
  if (permission !== "granted") return false;
  const reg = await registration();
  await navigator.serviceWorker.ready;
  const { key } = await api("GET", "/push/vapid-public-key");
  let sub = await reg.pushManager.getSubscription();
  if (!sub) sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64urlToBytes(key) });
  const { endpoint, keys } = sub.toJSON();
  const { subscription } = await api("POST", "/push/subscriptions", { kind: "webpush", endpoint, keys });
  localStorage.setItem(KEY, subscription.id);
  return true;
}

export async function disablePush() {
  const id = localStorage.getItem(KEY);
  localStorage.removeItem(KEY);
  if (id) await api("DELETE", `/push/subscriptions/${encodeURIComponent(id)}`).catch(() => {});
  const reg = pushSupported() && await navigator.serviceWorker.getRegistration("/");
  const sub = reg && await reg.pushManager.getSubscription();
  if (sub) await sub.unsubscribe();
}
