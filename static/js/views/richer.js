// Richer messages in the chat view: reaction bar and chips, edit in place,
// pinned bar, forwarding (multi-select, chat picker, each or merged), the
// merged-record viewer, contact cards and locations. User content enters the
// DOM only as text (h() children), links only to OpenStreetMap or our media.
import { h, clear, toast } from "./dom.js";
import { t } from "../lib/i18n.js";
import { ctx } from "./context.js";
import { displayNameOf, previewOf, convTitle, errorText, shortTime } from "./format.js";

export const QUICK_REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🎉"];

// ------------------------------------------------------------ dialogs

let openDialog = null;

function closeDialog() {
  openDialog?.remove();
  openDialog = null;
}

function dialog(title, ...body) {
  closeDialog();
  const box = h("div", { class: "modal-box", role: "dialog", "aria-modal": "true", "aria-label": title },
    h("header", { class: "modal-head" }, h("h3", {}, title),
      h("button", { class: "icon-btn", type: "button", "aria-label": t("cancel"), title: t("cancel"), onclick: closeDialog }, "×")),
    ...body);
  const overlay = h("div", { class: "modal" }, box);
  overlay.addEventListener("click", (e) => { if (e.target === overlay) closeDialog(); });
  overlay.addEventListener("keydown", (e) => { if (e.key === "Escape") closeDialog(); });
  document.body.append(overlay);
  openDialog = overlay;
  box.querySelector("button, input, textarea")?.focus();
  return box;
}

// ------------------------------------------------------------ bodies of the new types

function osmLink(loc) {
  const lat = Number(loc.lat).toFixed(6);
  const lng = Number(loc.lng).toFixed(6);
  return `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lng}#map=16/${lat}/${lng}`;
}

/** Draw a chat_record, contact_card or location body; false for other types. */
export function renderBody(bubble, m) {
  if (m.type === "chat_record" && m.chat_record) {
    const rec = m.chat_record;
    const lines = rec.items.slice(0, 3).map((it) => h("div", { class: "record-line" }, `${it.sender_name}: ${itemPreview(it)}`));
    const card = h("button", { class: "record-card", type: "button", dataset: { action: "open-record" }, onclick: () => openRecord(m) },
      h("div", { class: "record-title" }, rec.title ? t("chatRecordOf", { title: rec.title }) : t("chatRecordGeneric")),
      ...lines);
    bubble.append(card);
    return true;
  }
  if (m.type === "contact_card" && m.contact_card) {
    const c = m.contact_card;
    const store = ctx.store;
    const known = c.user_id === store.me.id || store.contacts.has(c.user_id);
    const add = known ? null : h("button", {
      class: "link", type: "button", dataset: { action: "add-from-card" },
      onclick: async (e) => {
        e.stopPropagation();
        try {
          await store.api("POST", "/contacts/requests", { user_id: c.user_id });
          toast(t("requestSent"));
        } catch (err) { toast(errorText(err)); }
      },
    }, t("addFromCard"));
    bubble.append(h("div", { class: "contact-card" },
      h("div", { class: "card-name" }, c.display_name),
      c.username ? h("div", { class: "muted small" }, `@${c.username}`) : null,
      h("div", { class: "muted small card-kind" }, t("contactCardPreview")), add));
    return true;
  }
  if (m.type === "location" && m.location) {
    const loc = m.location;
    bubble.append(h("a", { class: "location-card", href: osmLink(loc), target: "_blank", rel: "noopener noreferrer" },
      h("div", { class: "card-name" }, loc.name || `${loc.lat}, ${loc.lng}`),
      loc.address ? h("div", { class: "muted small" }, loc.address) : null,
      h("div", { class: "muted small" }, t("openMap"))));
    return true;
  }
  return false;
}

function itemPreview(it) {
  if (it.type === "text") return it.text || "";
  const inner = previewOf({ type: it.type, text: it.text, media: it.media, contact_card: it.contact_card, location: it.location });
  return it.type === "chat_record" ? t("chatRecord") : inner;
}

export function openRecord(m) {
  const rec = m.chat_record;
  const items = rec.items.map((it) => {
    const body = h("div", { class: "record-body" });
    if (it.media && it.media.url && it.type === "image") {
      body.append(h("a", { href: it.media.url, target: "_blank", rel: "noopener" },
        h("img", { class: "photo", src: it.media.thumbnail_url || it.media.url, alt: t("photo"), loading: "lazy" })));
      if (it.text) body.append(h("div", { class: "text" }, it.text));
    } else if (it.media && it.media.url) {
      body.append(h("a", { href: it.media.url, target: "_blank", rel: "noopener" }, itemPreview(it)));
    } else if (it.location) {
      body.append(h("a", { href: osmLink(it.location), target: "_blank", rel: "noopener noreferrer" }, itemPreview(it)));
    } else body.append(h("div", { class: "text" }, itemPreview(it)));
    return h("li", { class: "record-item" },
      h("div", { class: "muted small" }, `${it.sender_name} · ${shortTime(it.sent_at)}`), body);
  });
  dialog(rec.title ? t("chatRecordOf", { title: rec.title }) : t("chatRecordGeneric"),
    h("ol", { class: "record-items" }, items));
}

// ------------------------------------------------------------ reactions

export function reactionChips(conv, m) {
  const counts = m.reactions;
  if (!counts || !Object.keys(counts).length) return null;
  const mine = new Set(m.my_reactions || []);
  return h("div", { class: "reactions" }, Object.entries(counts).map(([emoji, n]) =>
    h("button", {
      class: `reaction-chip${mine.has(emoji) ? " mine" : ""}`, type: "button",
      "aria-pressed": mine.has(emoji) ? "true" : "false", "aria-label": `${emoji} ${n}`,
      dataset: { emoji },
      onclick: () => react(conv, m, emoji, !mine.has(emoji)),
    }, `${emoji} ${n}`)));
}

export function reactionBar(conv, m, done) {
  const mine = new Set(m.my_reactions || []);
  return h("div", { class: "reaction-bar", role: "group", "aria-label": t("react") },
    QUICK_REACTIONS.map((emoji) => h("button", {
      type: "button", class: mine.has(emoji) ? "mine" : "", "aria-label": t("reactWith", { emoji }),
      role: "menuitemcheckbox", "aria-checked": mine.has(emoji) ? "true" : "false", tabindex: "-1",
      dataset: { emoji }, onclick: () => { done(); react(conv, m, emoji, !mine.has(emoji)); },
    }, emoji)));
}

async function react(conv, m, emoji, on) {
  const ack = await ctx.store.react(conv, m, emoji, on);
  if (!ack.ok) toast(errorText(ack.error));
}

// ------------------------------------------------------------ edit in place

export function canEdit(m) {
  const store = ctx.store;
  if (m.sender_id !== store.me.id || m.recalled || m.forwarded) return false;
  if (!["text", "image", "video"].includes(m.type)) return false;
  return (Date.now() - new Date(m.created_at)) / 1000 < ctx.config.editWindow;
}

/** Swap the bubble's text for an editor; Enter saves, Escape cancels. */
export function startEdit(conv, m, bubble) {
  const old = bubble.querySelector(".text");
  const input = h("textarea", { class: "edit-input", rows: "2", "aria-label": t("editMessage"), maxlength: String(ctx.config.maxText) });
  input.value = m.text || "";
  const save = async () => {
    const text = input.value.trim();
    if (text === (m.text || "")) return cancel();
    const ack = await ctx.store.edit(conv, m, text);
    if (!ack.ok) toast(errorText(ack.error));
  };
  const cancel = () => { form.replaceWith(...(old ? [old] : [])); };
  const form = h("form", { class: "edit-form" }, input,
    h("div", { class: "edit-actions" },
      h("button", { type: "button", class: "link", onclick: cancel }, t("cancel")),
      h("button", { type: "submit", class: "primary small", dataset: { action: "save-edit" } }, t("save"))));
  form.addEventListener("submit", (e) => { e.preventDefault(); save(); });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); save(); }
    if (e.key === "Escape") { e.preventDefault(); cancel(); }
  });
  if (old) old.replaceWith(form); else bubble.append(form);
  input.focus();
}

// ------------------------------------------------------------ pinned bar

export function pinnedBar(conv) {
  const bar = h("div", { class: "pinned-bar", hidden: true, role: "region", "aria-label": t("pinnedMessages") });
  refreshPinned(conv, bar);
  return bar;
}

export async function refreshPinned(conv, bar) {
  let pins = [];
  try { pins = await ctx.store.pinsOf(conv); } catch { /* not a member any more */ }
  bar.hidden = !pins.length;
  if (!pins.length) return clear(bar);
  const top = pins[0];
  clear(bar, h("button", { class: "pinned-open", type: "button", dataset: { action: "pins" }, onclick: () => showPins(conv, pins) },
    h("span", { class: "pinned-label" }, pins.length > 1 ? t("pinnedCount", { n: pins.length }) : t("pinnedMessages")),
    h("span", { class: "pinned-text" }, `${displayNameOf(top.sender_id)}: ${previewOf(top)}`)));
}

function showPins(conv, pins) {
  dialog(t("pinnedMessages"), h("ol", { class: "record-items" }, pins.map((m) =>
    h("li", { class: "record-item" },
      h("div", { class: "muted small" }, `${displayNameOf(m.sender_id)} · ${shortTime(m.created_at)}`),
      h("div", { class: "text" }, previewOf(m)),
      h("button", { class: "link", type: "button", onclick: async () => {
        closeDialog();
        const ack = await ctx.store.pin(conv, m, false);
        if (!ack.ok) toast(errorText(ack.error));
      } }, t("unpin"))))));
}

// ------------------------------------------------------------ forwarding

/** The chat picker: choose up to 9 chats, and (for several messages) each or merged. */
export function openForward(messages, done = () => {}) {
  const store = ctx.store;
  const chosen = new Set();
  let mode = "each";
  const sendBtn = h("button", { class: "primary", type: "button", disabled: true, dataset: { action: "forward-send" } }, t("forward"));
  const rows = store.sortedConvs().map((conv) => {
    const box = h("input", { type: "checkbox", value: conv.id, "aria-label": convTitle(conv) });
    box.addEventListener("change", () => {
      if (box.checked && chosen.size >= 9) { box.checked = false; toast(t("maxTargets")); return; }
      if (box.checked) chosen.add(conv.id); else chosen.delete(conv.id);
      sendBtn.disabled = !chosen.size;
    });
    return h("li", {}, h("label", { class: "pick-row", dataset: { conv: conv.id } }, box, h("span", {}, convTitle(conv))));
  });
  const modes = messages.length > 1 ? h("div", { class: "forward-modes", role: "radiogroup" },
    ["each", "merged"].map((value) => {
      const r = h("input", { type: "radio", name: "forward-mode", value, checked: value === mode });
      r.addEventListener("change", () => { mode = value; });
      return h("label", {}, r, t(value === "each" ? "forwardEach" : "forwardMerged"));
    })) : null;
  sendBtn.addEventListener("click", async () => {
    sendBtn.disabled = true;
    const ack = await store.forward(messages.map((m) => m.id), [...chosen], mode);
    if (!ack.ok) { sendBtn.disabled = false; toast(errorText(ack.error)); return; }
    for (const m of ack.messages) {
      const conv = store.convs.get(m.conversation_id);
      if (conv && !conv.msgs.some((x) => x.seq === m.seq)) {
        const gap = store.addMessages(conv, [m]);
        store.emit("msg:add", conv, m);
        store.emit("conv", conv);
        if (gap) store.sync([conv.id]);
      }
    }
    closeDialog();
    toast(t("forwardDone"));
    done();
  });
  dialog(t("forwardTo"), modes, h("ul", { class: "pick-list" }, rows), h("div", { class: "modal-actions" }, sendBtn));
}

// ------------------------------------------------------------ contact cards and locations

export function openShareContact(conv) {
  const store = ctx.store;
  const people = [{ user: store.me }, ...store.contacts.values()];
  dialog(t("shareContact"), h("ul", { class: "pick-list" }, people.map((c) =>
    h("li", {}, h("button", { class: "pick-row", type: "button", dataset: { user: c.user.id }, onclick: async () => {
      const ack = await store.sendTyped(conv, { type: "contact_card", contact_card: { user_id: c.user.id } });
      if (!ack.ok) toast(errorText(ack.error)); else closeDialog();
    } }, c.remark || c.user.display_name)))));
}

export function openLocation(conv) {
  const field = (label, name, attrs = {}) => h("label", { class: "field" }, h("span", {}, label), h("input", { name, ...attrs }));
  const form = h("form", { class: "location-form" },
    field(t("latitude"), "lat", { type: "number", step: "any", min: "-90", max: "90", required: true }),
    field(t("longitude"), "lng", { type: "number", step: "any", min: "-180", max: "180", required: true }),
    field(t("placeName"), "name", { maxlength: "200" }),
    field(t("address"), "address", { maxlength: "500" }),
    h("div", { class: "modal-actions" },
      navigator.geolocation ? h("button", { type: "button", class: "link", dataset: { action: "geolocate" }, onclick: () => {
        navigator.geolocation.getCurrentPosition((pos) => {
          form.elements.lat.value = pos.coords.latitude.toFixed(6);
          form.elements.lng.value = pos.coords.longitude.toFixed(6);
        }, (err) => toast(err.message), { timeout: 10000 });
      } }, t("useMyLocation")) : null,
      h("button", { type: "submit", class: "primary" }, t("send"))));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const el = form.elements;
    const location = { lat: Number(el.lat.value), lng: Number(el.lng.value), name: el.name.value, address: el.address.value };
    const ack = await ctx.store.sendTyped(conv, { type: "location", location });
    if (!ack.ok) toast(errorText(ack.error)); else closeDialog();
  });
  dialog(t("sendLocation"), form);
}
