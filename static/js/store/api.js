// REST calls and the session: the refresh token lives in localStorage so a
// reload (or another tab) stays signed in. Refresh tokens are single-use, so
// tabs take turns through a Web Lock and always read the newest one first.

const K_REFRESH = "parley.refresh";
const K_ACCESS = "parley.access";
const K_ACCESS_EXP = "parley.access_exp";

export class ApiError extends Error {
  constructor(status, body) {
    const err = body?.error || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "internal";
    this.details = err.details;
  }
}

export const session = {
  get refreshToken() { return localStorage.getItem(K_REFRESH); },
  get signedIn() { return !!localStorage.getItem(K_REFRESH); },
  store(tokens) {
    localStorage.setItem(K_REFRESH, tokens.refresh_token);
    localStorage.setItem(K_ACCESS, tokens.access_token);
    localStorage.setItem(K_ACCESS_EXP, String(Date.now() + (tokens.expires_in - 60) * 1000));
  },
  clear() {
    for (const k of [K_REFRESH, K_ACCESS, K_ACCESS_EXP]) localStorage.removeItem(k);
  },
  freshAccess() {
    const exp = Number(localStorage.getItem(K_ACCESS_EXP) || 0);
    return exp > Date.now() ? localStorage.getItem(K_ACCESS) : null;
  },
};

async function withLock(fn) {
  if (navigator.locks?.request) return navigator.locks.request("parley-refresh", fn);
  return fn();
}

let refreshing = null;

/** A valid access token, refreshing it when needed (`force` after a 401). */
export async function accessToken(force = false) {
  if (!force) {
    const t = session.freshAccess();
    if (t) return t;
  }
  if (refreshing) return refreshing;
  const stale = session.freshAccess();
  refreshing = withLock(async () => {
    // Another tab may have refreshed while we waited for the lock.
    const now = session.freshAccess();
    if (now && (!force || now !== stale)) return now;
    const rt = session.refreshToken;
    if (!rt) throw new ApiError(401, { error: { code: "unauthorized" } });
    const res = await fetch("/api/v1/auth/refresh", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: rt }),
    });
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      if (res.status === 401 && session.refreshToken === rt) session.clear();
      throw new ApiError(res.status, body);
    }
    session.store(body);
    return body.access_token;
  }).finally(() => { refreshing = null; });
  return refreshing;
}

/** JSON request; `auth` adds the bearer token and retries once after a refresh. */
export async function api(method, path, body, { auth = true } = {}) {
  const go = async (token) => {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    return fetch(`/api/v1${path}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  };
  let res = await go(auth ? await accessToken() : null);
  if (auth && res.status === 401) res = await go(await accessToken(true));
  if (res.status === 204) return null;
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** Multipart upload with progress (XMLHttpRequest: fetch has no upload progress). */
export async function upload(path, formData, onProgress) {
  const token = await accessToken();
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/v1${path}`);
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable && onProgress) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      let data = {};
      try { data = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiError(xhr.status, data));
    };
    xhr.onerror = () => reject(new ApiError(0, { error: { code: "network", message: "Network error" } }));
    xhr.send(formData);
  });
}

export function deviceLabel() {
  const ua = navigator.userAgent;
  const browser = /Edg\//.test(ua) ? "Edge" : /Firefox\//.test(ua) ? "Firefox"
    : /Chrome\//.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : "Browser";
  const os = /Windows/.test(ua) ? "Windows" : /Mac OS X/.test(ua) ? "macOS" : /Android/.test(ua)
    ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Linux/.test(ua) ? "Linux" : "";
  return `Web · ${browser}${os ? ` on ${os}` : ""}`;
}
