// Sign in / sign up (password, and code sign-in when the server can send codes).
import { h, clear, toast } from "./dom.js";
import { t, lang, setLanguage, LANGUAGES } from "./i18n.js";
import { api, session, deviceLabel } from "./api.js";
import { CONFIG, errorText } from "./app.js";

function field(label, attrs) {
  const input = h("input", { ...attrs, "aria-label": label, placeholder: label });
  return { input, node: h("label", { class: "field" }, h("span", {}, label), input) };
}

function looksLikePhone(s) { return /^\+?[\d\s()-]{6,}$/.test(s.trim()); }

export function renderAuth(root, onSignedIn) {
  let mode = "signin"; // signin | signup | code
  const card = h("div", { class: "auth-card" });
  const langSel = h("select", { class: "lang-select", "aria-label": t("language"), onchange: (e) => { setLanguage(e.target.value); renderAuth(root, onSignedIn); } },
    Object.entries(LANGUAGES).map(([code, name]) => h("option", { value: code, selected: code === lang() }, name)));
  clear(root, h("div", { class: "auth" }, h("div", { class: "auth-top" }, langSel), card));

  const done = (tokens) => { session.store(tokens); onSignedIn(); };
  const errorBox = h("div", { class: "form-error", role: "alert" });
  const fail = (err) => { errorBox.textContent = errorText(err); };

  function draw() {
    errorBox.textContent = "";
    const head = h("div", { class: "auth-head" },
      h("img", { src: document.querySelector("link[rel=icon]")?.href, alt: "", class: "auth-logo" }),
      h("h1", {}, "Parley"), h("p", { class: "muted" }, t("tagline")));
    let form;
    if (mode === "signin") {
      const login = field(t("login"), { name: "login", autocomplete: "username", required: true });
      const pw = field(t("password"), { name: "password", type: "password", autocomplete: "current-password", required: true });
      form = h("form", { class: "auth-form", "data-form": "signin" }, login.node, pw.node, errorBox,
        h("button", { class: "primary wide", type: "submit" }, t("signIn")));
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        try {
          done(await api("POST", "/auth/login", { login: login.input.value.trim(), password: pw.input.value, device: deviceLabel() }, { auth: false }));
        } catch (err) { fail(err); }
      });
    } else if (mode === "signup") {
      const name = field(t("displayName"), { name: "display_name", autocomplete: "nickname", required: true, maxlength: "64" });
      const contact = field(t("emailOrPhone"), { name: "contact", autocomplete: "email", required: true });
      const username = field(t("usernameOpt"), { name: "username", autocomplete: "username", pattern: "[a-z0-9_]{3,32}" });
      const pw = field(t("password"), { name: "password", type: "password", autocomplete: "new-password", required: true, minlength: "8" });
      form = h("form", { class: "auth-form", "data-form": "signup" }, name.node, contact.node, username.node, pw.node, errorBox,
        h("button", { class: "primary wide", type: "submit" }, t("signUp")));
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const c = contact.input.value.trim();
        const body = { display_name: name.input.value.trim(), password: pw.input.value, device: deviceLabel() };
        if (looksLikePhone(c)) body.phone = c; else body.email = c;
        if (username.input.value.trim()) body.username = username.input.value.trim();
        try { done(await api("POST", "/auth/register", body, { auth: false })); } catch (err) { fail(err); }
      });
    } else {
      const target = field(t("emailOrPhone"), { name: "target", autocomplete: "email", required: true });
      const code = field(t("code"), { name: "code", inputmode: "numeric", autocomplete: "one-time-code", pattern: "\\d{6}", maxlength: "6" });
      const which = () => {
        const v = target.input.value.trim();
        return looksLikePhone(v) ? { phone: v } : { email: v };
      };
      const sendBtn = h("button", { class: "secondary", type: "button", onclick: async () => {
        try { await api("POST", "/auth/codes", { purpose: "login", ...which() }, { auth: false }); toast(t("codeSent")); code.input.focus(); } catch (err) { fail(err); }
      } }, t("sendCode"));
      form = h("form", { class: "auth-form", "data-form": "code" }, target.node, h("div", { class: "inline" }, code.node, sendBtn), errorBox,
        h("button", { class: "primary wide", type: "submit" }, t("signIn")));
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        try { done(await api("POST", "/auth/login/code", { ...which(), code: code.input.value.trim(), device: deviceLabel() }, { auth: false })); } catch (err) { fail(err); }
      });
    }
    const switches = h("div", { class: "auth-switch" });
    if (mode !== "signup") {
      switches.append(h("span", { class: "muted" }, t("noAccount"), " "), h("button", { class: "link", type: "button", "data-action": "to-signup", onclick: () => { mode = "signup"; draw(); } }, t("signUp")));
    } else {
      switches.append(h("span", { class: "muted" }, t("haveAccount"), " "), h("button", { class: "link", type: "button", "data-action": "to-signin", onclick: () => { mode = "signin"; draw(); } }, t("signIn")));
    }
    if (CONFIG.codeLogin && mode !== "signup") {
      switches.append(h("br"), h("button", { class: "link", type: "button", "data-action": "to-code", onclick: () => { mode = mode === "code" ? "signin" : "code"; draw(); } },
        mode === "code" ? t("passwordSignIn") : t("codeSignIn")));
    }
    clear(card, head, form, switches);
    form.querySelector("input")?.focus();
  }
  draw();
}
