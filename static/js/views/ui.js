// Building blocks several screens share: panes with a back button, placeholders.
import { h, icon, appLogo } from "./dom.js";
import { t } from "../lib/i18n.js";
import { go } from "./context.js";

export function backButton(hash) {
  return h("button", { class: "icon-btn back", type: "button", title: t("back"), "aria-label": t("back"), onclick: () => go(hash) }, icon("back"));
}

export function placeholder(text) {
  return h("div", { class: "placeholder" }, appLogo("placeholder-logo"), h("p", {}, text));
}

export function pane(title, back, ...body) {
  return h("div", { class: "pane" },
    h("header", { class: "chat-header" }, backButton(back), h("div", { class: "chat-title" }, h("h2", {}, title))),
    h("div", { class: "pane-body narrow" }, ...body));
}
