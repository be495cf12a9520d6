// Sign in, sign up (with a verification code when the server asks for one),
// sign in with a code, and reset a forgotten password.
import { h, clear, appLogo, toast, notice } from "./dom.js";
import { t, lang, setLanguage, LANGUAGES } from "../lib/i18n.js";
import { api, session, deviceLabel } from "../store/api.js";
import { ctx } from "./context.js";
import { errorText } from "./format.js";

let uid = 0;
function field(label, attrs) {
  const id = `f${++uid}`;
  const input = h("input", { ...attrs, id, placeholder: attrs.placeholder ?? label });
  return { input, node: h("div", { class: "field" }, h("label", { for: id }, label), input) };
}

function looksLikePhone(s) { return /^\+?[\d\s()-]{6,}$/.test(s.trim()); }

function target(value) {
  const v = value.trim();
  return looksLikePhone(v) ? { phone: v } : { email: v };
}

/** "Continue with …" links for the providers the server has configured (filled in
 * once they are known; none configured: nothing shown). */
function providerButtons() {
  const box = h("div", { class: "oauth-providers", hidden: true });
  api("GET", "/auth/oauth/providers", undefined, { auth: false }).then(({ providers }) => {
    if (!providers.length) return;
    box.append(h("div", { class: "oauth-sep muted" }, t("orSignInWith")),
      ...providers.map((p) => h("a", {
        class: `oauth-btn oauth-${p.type}`, dataset: { provider: p.id },
        // Back to where the person was (e.g. a group invite link) once signed in.
        href: `/api/v1/auth/oauth/${encodeURIComponent(p.id)}/start?return_to=${encodeURIComponent(location.pathname + location.hash)}`,
      }, t("signInWith", { name: p.name }))));
    box.hidden = false;
  }, () => {});
  return box;
}

/** The page the browser lands on after a provider sign-in that failed. */
export function renderOAuthError(root, code, onBack) {
  const back = h("button", { class: "primary wide", type: "button", "data-action": "back-to-signin", onclick: onBack }, t("backToSignIn"));
  clear(root, h("div", { class: "auth" }, h("main", { class: "auth-card", "data-page": "oauth-error" },
    h("div", { class: "auth-head" }, appLogo("auth-logo"), h("h1", {}, t("oauthFailed")),
      h("p", { class: "form-error", role: "alert", dataset: { code } }, errorText({ code }))), back)));
  back.focus();
}

export function renderAuth(root, onSignedIn) {
  const cfg = ctx.config;
  const codes = cfg.codeLogin || cfg.requireVerification;
  let mode = "signin"; // signin | signup | code | reset
  const card = h("main", { class: "auth-card" });
  const langSel = h("select", { class: "lang-select", "aria-label": t("language"), onchange: (e) => { setLanguage(e.target.value); renderAuth(root, onSignedIn); } },
    Object.entries(LANGUAGES).map(([code, name]) => h("option", { value: code, selected: code === lang() }, name)));
  clear(root, h("div", { class: "auth" }, h("div", { class: "auth-top" }, langSel), card));

  const done = (tokens) => {
    session.store(tokens);
    onSignedIn();
    if (tokens.deletion_cancelled) notice(t("deletionCancelled"));
  };
  // Left by "delete my account" before the reload that shows this page.
  const pending = sessionStorage.getItem("parley.notice");
  if (pending) { sessionStorage.removeItem("parley.notice"); notice(pending); }
  const errorBox = h("div", { class: "form-error", role: "alert" });
  const fail = (err) => { errorBox.textContent = errorText(err); };

  /** "Send code" next to a code field: asks the server for a code of `purpose` to the address in `to`. */
  function codeRow(purpose, to, code) {
    const sendBtn = h("button", { class: "secondary", type: "button", "data-action": "send-code", onclick: async () => {
      errorBox.textContent = "";
      if (!to.input.value.trim()) { to.input.focus(); return; }
      try {
        await api("POST", "/auth/codes", { purpose, ...target(to.input.value) }, { auth: false });
        toast(t("codeSent"));
        code.input.focus();
      } catch (err) { fail(err); }
    } }, t("sendCode"));
    return h("div", { class: "inline" }, code.node, sendBtn);
  }

  const codeField = () => field(t("code"), { name: "code", inputmode: "numeric", autocomplete: "one-time-code", pattern: "\\d{6}", maxlength: "6", required: true });

  function draw() {
    errorBox.textContent = "";
    const head = h("div", { class: "auth-head" }, appLogo("auth-logo"),
      h("h1", {}, mode === "reset" ? t("resetPassword") : "Parley"), h("p", { class: "muted" }, mode === "reset" ? t("resetHint") : t("tagline")));
    let form;
    const submit = (fn) => form.addEventListener("submit", async (e) => {
      e.preventDefault();
      errorBox.textContent = "";
      const btn = form.querySelector("button[type=submit]");
      btn.disabled = true;
      try { await fn(); } catch (err) { fail(err); } finally { btn.disabled = false; }
    });
    if (mode === "signin") {
      const login = field(t("login"), { name: "login", autocomplete: "username", required: true });
      const pw = field(t("password"), { name: "password", type: "password", autocomplete: "current-password", required: true });
      form = h("form", { class: "auth-form", "data-form": "signin" }, login.node, pw.node, errorBox,
        h("button", { class: "primary wide", type: "submit" }, t("signIn")));
      submit(async () => done(await api("POST", "/auth/login", { login: login.input.value.trim(), password: pw.input.value, device: deviceLabel() }, { auth: false })));
    } else if (mode === "signup") {
      const name = field(t("displayName"), { name: "display_name", autocomplete: "nickname", required: true, maxlength: "64" });
      const contact = field(t("emailOrPhone"), { name: "contact", autocomplete: "email", required: true });
      const username = field(t("usernameOpt"), { name: "username", autocomplete: "username", pattern: "[a-z0-9_]{3,32}" });
      const pw = field(t("password"), { name: "password", type: "password", autocomplete: "new-password", required: true, minlength: "8" });
      const code = cfg.requireVerification ? codeField() : null;
      form = h("form", { class: "auth-form", "data-form": "signup" }, name.node, contact.node,
        code ? codeRow("register", contact, code) : null, username.node, pw.node, errorBox,
        h("button", { class: "primary wide", type: "submit" }, t("signUp")));
      submit(async () => {
        const body = { display_name: name.input.value.trim(), password: pw.input.value, device: deviceLabel(), ...target(contact.input.value) };
        if (username.input.value.trim()) body.username = username.input.value.trim();
        if (code) body.code = code.input.value.trim();
        done(await api("POST", "/auth/register", body, { auth: false }));
      });
    } else if (mode === "code") {
      const to = field(t("emailOrPhone"), { name: "target", autocomplete: "email", required: true });
      const code = codeField();
      form = h("form", { class: "auth-form", "data-form": "code" }, to.node, codeRow("login", to, code), errorBox,
        h("button", { class: "primary wide", type: "submit" }, t("signIn")));
      submit(async () => done(await api("POST", "/auth/login/code", { ...target(to.input.value), code: code.input.value.trim(), device: deviceLabel() }, { auth: false })));
    } else {
      const to = field(t("emailOrPhone"), { name: "target", autocomplete: "email", required: true });
      const code = codeField();
      const pw = field(t("newPassword"), { name: "new_password", type: "password", autocomplete: "new-password", required: true, minlength: "8" });
      form = h("form", { class: "auth-form", "data-form": "reset" }, to.node, codeRow("reset_password", to, code), pw.node, errorBox,
        h("button", { class: "primary wide", type: "submit" }, t("setPassword")));
      submit(async () => {
        await api("POST", "/auth/password/reset", { ...target(to.input.value), code: code.input.value.trim(), new_password: pw.input.value }, { auth: false });
        toast(t("passwordReset"));
        mode = "signin";
        draw();
      });
    }
    const link = (action, label, next) => h("button", { class: "link", type: "button", "data-action": action, onclick: () => { mode = next; draw(); } }, label);
    const switches = h("div", { class: "auth-switch" });
    if (mode === "signin" || mode === "code") {
      switches.append(h("span", { class: "muted" }, t("noAccount"), " "), link("to-signup", t("signUp"), "signup"));
    } else {
      switches.append(h("span", { class: "muted" }, t("haveAccount"), " "), link("to-signin", t("signIn"), "signin"));
    }
    if (cfg.codeLogin && (mode === "signin" || mode === "code")) {
      switches.append(h("br"), link("to-code", mode === "code" ? t("passwordSignIn") : t("codeSignIn"), mode === "code" ? "signin" : "code"));
    }
    if (codes && mode === "signin") switches.append(h("br"), link("to-reset", t("forgotPassword"), "reset"));
    const others = mode === "signin" ? providerButtons() : null;
    clear(card, head, form, others, switches);
    form.querySelector("input")?.focus();
  }
  draw();
}
