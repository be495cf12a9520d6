// Settings: profile, privacy, language, notifications, devices, sign out.
import { h, clear, icon, avatar, toast } from "./dom.js";
import { t, lang, setLanguage, LANGUAGES } from "../lib/i18n.js";
import { api } from "../store/api.js";
import { pushSupported, pushActive, enablePush, disablePush } from "../store/push.js";
import { avatarEditor } from "./avatar-editor.js";
import { ctx } from "./context.js";
import { errorText, shortTime } from "./format.js";
import { backButton } from "./ui.js";

const SECTIONS = [
  ["profile", "user"], ["account", "shield"], ["privacy", "shield"], ["notifications", "bell"], ["language", "globe"], ["devices", "devices"],
];

export function renderMenu(list) {
  const items = [
    h("a", { class: `me-card${ctx.route.id === "profile" ? " active" : ""}`, href: "#/settings/profile" }, avatar(ctx.store.me.display_name, ctx.store.me.id, "", ctx.store.me.avatar_url),
      h("div", {}, h("div", { class: "title" }, ctx.store.me.display_name), h("div", { class: "muted" }, `@${ctx.store.me.username}`))),
  ];
  for (const [id, ico] of SECTIONS) {
    items.push(h("a", { class: `menu-item${ctx.route.id === id ? " active" : ""}`, href: `#/settings/${id}`, dataset: { section: id } }, icon(ico, "icon small"), t(id)));
  }
  items.push(h("button", { class: "menu-item danger-text", type: "button", "data-action": "sign-out", onclick: () => ctx.actions.signOut() }, icon("logout", "icon small"), t("signOut")));
  clear(list, items.map((x) => h("li", { class: "chat-row" }, x)));
}

function pane(title, ...body) {
  return h("div", { class: "pane" },
    h("header", { class: "chat-header" }, backButton("#/settings"), h("div", { class: "chat-title" }, h("h2", {}, title))),
    h("div", { class: "pane-body narrow" }, ...body));
}

export function renderMain(main, route) {
  const id = route.id || (matchMedia("(max-width: 760px)").matches ? null : "profile");
  if (!id) return clear(main);
  if (id === "profile") return profile(main);
  if (id === "privacy") return privacy(main);
  if (id === "account") return account(main);
  if (id === "language") return language(main);
  if (id === "devices") return devices(main);
  if (id === "notifications") return notifications(main);
  return clear(main);
}

function profile(main) {
  const me = ctx.store.me;
  const name = h("input", { class: "input", name: "display_name", value: me.display_name, maxlength: "64", required: true });
  const username = h("input", { class: "input", name: "username", value: me.username, pattern: "[a-z0-9_]{3,32}" });
  const bio = h("textarea", { class: "input", name: "bio", maxlength: "280", rows: "3" });
  bio.value = me.bio || "";
  const form = h("form", { class: "settings-form", "data-form": "profile" },
    h("label", { class: "field" }, h("span", {}, t("displayName")), name),
    h("label", { class: "field" }, h("span", {}, t("username")), username),
    h("label", { class: "field" }, h("span", {}, t("bio")), bio),
    h("div", { class: "muted small" }, [me.email, me.phone].filter(Boolean).join(" · ")),
    h("button", { class: "primary", type: "submit" }, t("save")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const { user } = await api("PATCH", "/me", { display_name: name.value.trim(), username: username.value.trim(), bio: bio.value });
      ctx.store.me = user;
      ctx.store.emit("me"); toast(t("saved"));
    } catch (err) { toast(errorText(err)); }
  });
  clear(main, pane(t("profile"), h("div", { class: "profile-head" }, avatar(me.display_name, me.id, "large", me.avatar_url), h("h2", {}, me.display_name)),
    avatarEditor({ path: "/me/avatar", hasAvatar: !!me.avatar_url, onSaved: ({ user }) => {
      ctx.store.me = user;
      ctx.store.emit("me");
      profile(main);
    } }), form));
}

async function account(main) {
  const me = ctx.store.me;
  const input = (name, attrs = {}) => h("input", { class: "input", name, ...attrs });
  const field = (label, el) => h("label", { class: "field" }, h("span", {}, label), el);
  const refreshMe = async () => { ({ user: ctx.store.me } = await api("GET", "/me")); ctx.store.emit("me"); };

  // Password: the current one is asked for only when the account has one.
  const cur = me.has_password ? input("current_password", { type: "password", autocomplete: "current-password", required: true }) : null;
  const nw = input("new_password", { type: "password", autocomplete: "new-password", required: true, minlength: "8" });
  const pwForm = h("form", { class: "settings-form", "data-form": "password" }, h("h3", {}, t("changePassword")),
    cur ? field(t("currentPassword"), cur) : null, field(t("newPassword2"), nw),
    h("button", { class: "primary", type: "submit" }, t("save")));
  pwForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("POST", "/me/password", { new_password: nw.value, ...(cur ? { current_password: cur.value } : {}) });
      toast(t("passwordChanged"));
      await refreshMe();
      account(main);
    } catch (err) { toast(errorText(err)); }
  });

  // Email and phone: a code goes to the new address, then the change is confirmed with it.
  const addressForm = (kind) => {
    const value = input(kind, { type: kind === "email" ? "email" : "tel", required: true, placeholder: me[kind] || "" });
    const code = input("code", { inputmode: "numeric", autocomplete: "one-time-code", maxlength: "6", pattern: "\\d{6}", placeholder: t("code") });
    const form = h("form", { class: "settings-form", "data-form": kind },
      h("h3", {}, t(kind === "email" ? "changeEmail" : "changePhone")),
      field(t(kind === "email" ? "newEmail" : "newPhone"), value),
      h("div", { class: "inline" }, code, h("button", { class: "secondary", type: "button", "data-action": `send-${kind}-code`, onclick: async () => {
        try { await api("POST", `/me/${kind}`, { [kind]: value.value.trim() }); toast(t("codeSent")); code.focus(); } catch (err) { toast(errorText(err)); }
      } }, t("sendCode"))),
      h("button", { class: "primary", type: "submit" }, t("confirmChange")));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        const { user } = await api("POST", `/me/${kind}`, { [kind]: value.value.trim(), code: code.value.trim() });
        ctx.store.me = user; ctx.store.emit("me");
        toast(t(kind === "email" ? "emailChanged" : "phoneChanged"));
        account(main);
      } catch (err) { toast(errorText(err)); }
    });
    return form;
  };

  // Linked accounts, with link buttons for the configured providers.
  const linked = h("div", { class: "settings-form", "data-section": "identities" }, h("h3", {}, t("linkedAccounts")));
  clear(main, pane(t("account"), pwForm, addressForm("email"), addressForm("phone"), linked));
  try {
    const [{ identities }, { providers }] = await Promise.all([api("GET", "/me/identities"), api("GET", "/auth/oauth/providers", undefined, { auth: false })]);
    for (const i of identities) {
      linked.append(h("div", { class: "person-card", dataset: { identity: i.id, provider: i.provider } },
        h("div", { class: "person-info" }, h("div", { class: "title" }, i.provider_name), h("div", { class: "muted" }, i.display_name)),
        h("button", { class: "secondary", type: "button", "data-action": "unlink", onclick: async () => {
          try { await api("DELETE", `/me/identities/${encodeURIComponent(i.id)}`); account(main); } catch (err) { toast(errorText(err)); }
        } }, t("unlink"))));
    }
    for (const p of providers) {
      linked.append(h("button", { class: "secondary", type: "button", "data-action": "link", dataset: { provider: p.id }, onclick: async () => {
        try {
          const { url } = await api("POST", `/me/identities/${encodeURIComponent(p.id)}/start`, { return_to: "/#/settings/account" });
          location.assign(url);
        } catch (err) { toast(errorText(err)); }
      } }, t("linkAccount", { name: p.name })));
    }
  } catch (err) { toast(errorText(err)); }
}

async function privacy(main) {
  let s;
  try { ({ settings: s } = await api("GET", "/me/settings")); } catch (err) { return toast(errorText(err)); }
  const save = async (patch) => {
    try { ({ settings: s } = await api("PATCH", "/me/settings", patch)); toast(t("saved")); } catch (err) { toast(errorText(err)); }
  };
  const toggle = (key) => h("label", { class: "switch-row" }, h("span", {}, t(key.replace(/_([a-z])/g, (_, c) => c.toUpperCase()))),
    h("input", { type: "checkbox", name: key, checked: s[key], onchange: (e) => save({ [key]: e.target.checked }) }));
  const vis = h("select", { class: "input", name: "last_seen_visibility", onchange: (e) => save({ last_seen_visibility: e.target.value }) },
    [["everyone", "everyone"], ["contacts", "myContacts"], ["nobody", "nobody"]].map(([v, k]) => h("option", { value: v, selected: s.last_seen_visibility === v }, t(k))));
  clear(main, pane(t("privacy"),
    toggle("allow_strangers"), toggle("send_read_receipts"),
    h("label", { class: "field" }, h("span", {}, t("lastSeenVisibility")), vis),
    toggle("discoverable_by_email"), toggle("discoverable_by_phone"),
    await dataExport(), deleteAccount()));
}

function fileSize(n) {
  return n >= 1048576 ? `${(n / 1048576).toFixed(1)} MB` : `${Math.max(1, Math.round(n / 1024))} KB`;
}

// Download my data: ask for an export, show its state, link it when ready.
async function dataExport() {
  const status = h("div", { class: "muted small", "data-export-status": "" });
  const button = h("button", { class: "secondary", type: "button", "data-action": "export-data" }, t("downloadData"));
  let shown = null;
  const show = (e) => {
    // The export can be built, and export:ready arrive, before the answer that
    // asked for it: a late "pending" never hides the link of the same export.
    if (e && shown && e.id === shown.id && e.status === "pending" && shown.status !== "pending") return;
    shown = e;
    button.disabled = !!e && (e.status === "pending" || Date.now() - Date.parse(e.created_at) < 86400000);
    if (!e) return clear(status);
    if (e.status === "pending") return clear(status, t("exportPending"));
    if (e.status === "failed") return clear(status, t("exportFailed"));
    clear(status, t("exportReady"), " ",
      h("a", { href: e.url, download: "", "data-export-link": "" }, t("exportDownload", { size: fileSize(e.size || 0) })));
  };
  button.addEventListener("click", async () => {
    try { show((await api("POST", "/me/export")).export); } catch (err) { toast(errorText(err)); }
  });
  const off = ctx.store.on("export", (e) => { if (!status.isConnected) return off(); show(e); });
  try { show((await api("GET", "/me/export")).export); } catch { /* shown as not asked yet */ }
  return h("section", { class: "data-block", "data-block": "export" },
    h("h3", {}, t("yourData")), h("p", { class: "muted small" }, t("downloadDataHelp")), button, status);
}

// Delete my account: explained, then confirmed with the password.
function deleteAccount() {
  const days = ctx.config.deleteGraceDays;
  const password = h("input", { class: "input", type: "password", name: "delete_password", autocomplete: "current-password", required: true });
  const error = h("div", { class: "form-error", role: "alert" });
  const confirmForm = h("form", { class: "settings-form", "data-form": "delete-account", hidden: true },
    h("label", { class: "field" }, h("span", {}, t("deleteConfirm")), password), error,
    h("button", { class: "danger", type: "submit" }, t("deleteForever")));
  confirmForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    try {
      const { erase_after } = await api("DELETE", "/me", { password: password.value });
      sessionStorage.setItem("parley.notice", t("deletionScheduled", { date: new Date(erase_after).toLocaleDateString(lang()) }));
      ctx.actions.signOutLocal();
    } catch (err) { error.textContent = errorText(err); }
  });
  const open = h("button", { class: "secondary danger-text", type: "button", "data-action": "delete-account",
    onclick: () => { confirmForm.hidden = false; open.hidden = true; password.focus(); } }, t("deleteAccount"));
  return h("section", { class: "data-block", "data-block": "delete" },
    h("h3", {}, t("deleteAccount")), h("p", { class: "muted small" }, t("deleteAccountHelp", { days })), open, confirmForm);
}

function language(main) {
  clear(main, pane(t("language"),
    Object.entries(LANGUAGES).map(([code, name]) => h("label", { class: "switch-row" }, h("span", {}, name),
      h("input", { type: "radio", name: "lang", value: code, checked: code === lang(), onchange: () => { setLanguage(code); ctx.actions.relabel(); } })))));
}

async function notifications(main) {
  let s;
  try { ({ settings: s } = await api("GET", "/me/settings")); } catch (err) { return toast(errorText(err)); }
  const save = async (patch) => {
    try { ({ settings: s } = await api("PATCH", "/me/settings", patch)); toast(t("saved")); } catch (err) { toast(errorText(err)); }
  };
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  const active = await pushActive().catch(() => false);
  // The browser's permission prompt only ever follows a click on this button.
  const device = !pushSupported() ? h("p", { class: "muted" }, t("pushUnsupported"))
    : Notification.permission === "denied" ? h("p", { class: "muted" }, t("notificationsBlocked"))
      : active ? h("div", { class: "push-device" }, h("p", {}, icon("check", "icon small"), " ", t("pushOn")),
        h("button", { class: "secondary", type: "button", "data-action": "push-off", onclick: async () => { await disablePush().catch(() => {}); notifications(main); } }, t("pushOff")))
        : h("button", { class: "primary", type: "button", "data-action": "push-on", onclick: async () => {
          try { await enablePush(); } catch (err) { toast(errorText(err)); }
          notifications(main);
        } }, t("pushEnable"));
  const enabled = h("label", { class: "switch-row" }, h("span", {}, t("pushEnabledAll")),
    h("input", { type: "checkbox", name: "push_enabled", checked: s.push_enabled, onchange: (e) => save({ push_enabled: e.target.checked }) }));
  const preview = h("select", { class: "input", name: "push_preview", onchange: (e) => save({ push_preview: e.target.value }) },
    [["full", "previewFull"], ["sender", "previewSender"], ["none", "previewNone"]].map(([v, k]) => h("option", { value: v, selected: s.push_preview === v }, t(k))));
  // DND hours are the user's local time: the browser's zone goes with them.
  const time = (name, label) => h("label", { class: "field" }, h("span", {}, t(label)),
    h("input", { class: "input", type: "time", name, value: s[name] || "", onchange: (e) => save({ [name]: e.target.value, timezone: zone }) }));
  clear(main, pane(t("notifications"), device, enabled,
    h("label", { class: "field" }, h("span", {}, t("pushPreview")), preview),
    h("h3", {}, t("dnd")), time("dnd_start", "dndFrom"), time("dnd_end", "dndTo"),
    h("p", { class: "muted" }, t("dndHint", { zone: s.timezone || zone || "UTC" }))));
}

async function devices(main) {
  let sessions;
  try { ({ sessions } = await api("GET", "/auth/sessions")); } catch (err) { return toast(errorText(err)); }
  clear(main, pane(t("devicesActivity"), sessions.map((s) => h("div", { class: "person-card", dataset: { session: s.id } },
    h("div", { class: "avatar small tile" }, icon("devices", "icon")),
    h("div", { class: "person-info" }, h("div", { class: "title" }, s.device || "—"),
      h("div", { class: "muted" }, s.current ? t("thisDevice") : t("lastActive", { time: shortTime(s.last_used_at) }), s.ip ? ` · ${s.ip}` : ""),
      h("div", { class: "muted small" }, t("signedInAt", { time: shortTime(s.created_at) }))),
    s.current ? h("span", { class: "tag green" }, t("thisDevice"))
      : h("button", { class: "secondary", type: "button", "data-action": "end-session", onclick: async () => {
        try { await api("DELETE", `/auth/sessions/${encodeURIComponent(s.id)}`); devices(main); } catch (err) { toast(errorText(err)); }
      } }, t("endSession"))))));
}

