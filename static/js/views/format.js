// Text the views show for store data: names, previews, times, errors.
import { t, lang } from "../lib/i18n.js";
import { ctx } from "./context.js";

export function displayNameOf(userId) {
  if (!userId) return t("system");
  return ctx.store.nameOf(userId) ?? t("unknownUser");
}

export function parseTime(iso) { return iso ? new Date(iso) : new Date(); }

export function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth()
    && a.getDate() === b.getDate();
}

const formats = new Map(); // "lang options" → Intl.DateTimeFormat (making one is slow)

function fmt(options) {
  const key = `${lang()} ${JSON.stringify(options)}`;
  if (!formats.has(key)) formats.set(key, new Intl.DateTimeFormat(lang(), options));
  return formats.get(key);
}

export function hhmm(d) {
  return fmt({ hour: "2-digit", minute: "2-digit", hour12: false }).format(d);
}

export function shortTime(iso) {
  const d = parseTime(iso);
  const now = new Date();
  if (sameDay(d, now)) return hhmm(d);
  const y = new Date(now); y.setDate(now.getDate() - 1);
  if (sameDay(d, y)) return t("yesterday");
  if (now - d < 6 * 86400e3) return fmt({ weekday: "short" }).format(d);
  return fmt({ year: "2-digit", month: "numeric", day: "numeric" }).format(d);
}

export function dayLabel(d) {
  const now = new Date();
  if (sameDay(d, now)) return t("today");
  const y = new Date(now); y.setDate(now.getDate() - 1);
  if (sameDay(d, y)) return t("yesterday");
  return fmt({ year: "numeric", month: "long", day: "numeric", weekday: "short" }).format(d);
}

export function duration(ms) {
  const s = Math.max(0, Math.round((ms || 0) / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

const TARGET_FIRST = new Set(["member_left", "member_joined", "owner_changed"]);

function personInSentence(id, first) {
  if (id === ctx.store.me?.id) return t(first ? "youSubject" : "youObject");
  return displayNameOf(id);
}

export function systemText(msg) {
  const sys = msg.system || {};
  const actor = sys.actor_id ? personInSentence(sys.actor_id, true) : "";
  // Targets start the sentence in some lines ("X left the group").
  const leads = TARGET_FIRST.has(sys.event);
  const targets = (sys.target_ids || []).map((id, i) => personInSentence(id, leads && i === 0))
    .join(t("listSep"));
  const key = `sys_${sys.event}`;
  const text = t(key, { actor, targets, name: sys.name ?? "", text: sys.text ?? "", role: sys.role ?? "" });
  return text === key ? t("sys_generic", { actor }) : text;
}

export function previewOf(msg, conv) {
  if (!msg) return "";
  if (msg.recalled) return t("recalledPreview");
  let body;
  switch (msg.type) {
    case "system": return systemText(msg);
    case "image": body = t("photo"); break;
    case "voice": body = `${t("voice")} ${duration(msg.media?.duration_ms)}`; break;
    case "video": body = t("video"); break;
    case "file": body = `${t("file")} ${msg.media?.name || ""}`.trim(); break;
    case "chat_record": body = t("chatRecord"); break;
    case "contact_card": body = `${t("contactCardPreview")} ${msg.contact_card?.display_name || ""}`.trim(); break;
    case "location": body = `${t("locationPreview")} ${msg.location?.name || ""}`.trim(); break;
    default: body = msg.text || "";
  }
  if (conv?.type === "group" && msg.sender_id && msg.sender_id !== ctx.store.me?.id) {
    return `${displayNameOf(msg.sender_id)}: ${body}`;
  }
  return body;
}

export function convTitle(conv) {
  if (conv.type === "direct" && conv.peer) {
    const c = ctx.store.contacts.get(conv.peer.id);
    return c?.remark || conv.peer.display_name || conv.title;
  }
  return conv.title || t("group");
}

export function presenceText(p) {
  if (!p) return "";
  return p.online ? t("online") : p.last_seen ? t("lastSeen", { time: shortTime(p.last_seen) }) : t("offline");
}

/** A server error in the interface language; the server's own message only for codes we do not know. */
export function errorText(err) {
  if (!err) return t("errorGeneric");
  let key = `err_${err.code}`;
  if (err.code === "rate_limited" && err.details?.retry_after == null) key = "err_rate_limited_soon";
  const text = t(key, err.details || {});
  if (text !== key) return text;
  return err.message || t("errorGeneric");
}
