// Photos, voice notes, videos and files: rendering in bubbles, and the
// composer tools (pickers with upload progress; voice is hold-to-talk on touch
// screens and click-to-record / click-to-send with a mouse).
import { h, clear, icon, toast } from "./dom.js";
import { t } from "../lib/i18n.js";
import { upload } from "../store/api.js";
import { ctx } from "./context.js";
import { previewOf, duration, errorText } from "./format.js";

function humanSize(n) {
  if (!n && n !== 0) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 ** 2).toFixed(1)} MB`;
}

export function renderBody(bubble, m) {
  const md = m.media || {};
  const url = md.url;
  if (m.type === "image" && (url || md.local_url)) {
    const img = h("img", { class: "photo", src: md.thumbnail_url || url || md.local_url, alt: t("photo"), loading: "lazy" });
    if (md.width && md.height) { img.width = Math.min(240, md.width); img.height = Math.round(img.width * md.height / md.width); }
    bubble.append(url ? h("a", { href: url, target: "_blank", rel: "noopener" }, img) : img);
  } else if (m.type === "voice" && (url || md.local_url)) {
    const audio = h("audio", { src: url || md.local_url, preload: "none" });
    const label = h("span", { class: "voice-len" }, duration(md.duration_ms));
    const btn = h("button", { class: "voice", type: "button", "aria-label": `${t("playVoice")} ${duration(md.duration_ms)}` }, h("span", { class: "wave", "aria-hidden": "true" }, ")))"), label);
    btn.style.width = `${Math.min(220, 80 + Math.round((md.duration_ms || 0) / 1000) * 4)}px`;
    btn.addEventListener("click", () => { if (audio.paused) audio.play().catch(() => {}); else audio.pause(); });
    audio.addEventListener("play", () => btn.classList.add("playing"));
    for (const ev of ["pause", "ended"]) audio.addEventListener(ev, () => btn.classList.remove("playing"));
    bubble.append(btn, audio);
  } else if (m.type === "video" && (url || md.local_url)) {
    bubble.append(h("video", { class: "video", src: url || md.local_url, poster: md.thumbnail_url, controls: true, preload: "metadata" }));
  } else if (m.type === "file" && (url || md.name)) {
    const card = h("div", { class: "file-card" }, h("div", { class: "file-meta" }, h("div", { class: "file-name" }, md.name || t("file")), h("div", { class: "muted small" }, humanSize(md.size))), h("div", { class: "file-ico" }, "FILE"));
    bubble.append(url ? h("a", { class: "file-link", href: url, download: md.name || "" }, card) : card);
  } else {
    bubble.append(h("div", { class: "text" }, previewOf(m)));
  }
  if (m.text && m.type !== "text") bubble.append(h("div", { class: "text caption" }, m.text));
  if (m.local && m.progress != null && m.status === "pending") {
    bubble.append(h("progress", { class: "upload-progress", max: "1", value: String(m.progress) }));
  }
}

async function sendFile(conv, kind, file, extra = {}) {
  // Shown at once with a local preview and a progress bar; sent when uploaded.
  const local = { type: kind, media: { name: file.name, size: file.size, local_url: URL.createObjectURL(file), ...extra } };
  const fd = new FormData();
  fd.append("kind", kind);
  fd.append("file", file, file.name || `${kind}.bin`);
  const holder = { progress: 0 };
  const stub = { ...local, uploading: holder };
  let p;
  const push = (progress) => {
    if (!p) return;
    p.progress = progress;
    const bar = document.querySelector(`[data-cmid="${CSS.escape(p.client_msg_id)}"] progress`);
    if (bar) bar.value = progress;
  };
  p = ctx.store.send(conv, { ...stub, deferred: true });
  try {
    const out = await upload("/media", fd, push);
    const mediaObj = out.media || out;
    p.media_id = mediaObj.id;
    p.media = { ...mediaObj, local_url: local.media.local_url };
    p.ready();
  } catch (err) {
    p.fail(err);
    toast(errorText(err));
  }
}

export function mountTools(tools, extra, conv) {
  const photoInput = h("input", { type: "file", accept: "image/*", hidden: true, "data-input": "photo", "aria-label": t("sendPhoto") });
  const fileInput = h("input", { type: "file", hidden: true, "data-input": "file", "aria-label": t("sendFile") });
  const videoInput = h("input", { type: "file", accept: "video/*", hidden: true, "data-input": "video", "aria-label": t("sendVideo") });
  photoInput.addEventListener("change", () => { for (const f of photoInput.files) sendFile(conv, "image", f); photoInput.value = ""; });
  fileInput.addEventListener("change", () => { for (const f of fileInput.files) sendFile(conv, "file", f); fileInput.value = ""; });
  videoInput.addEventListener("change", () => { for (const f of videoInput.files) sendFile(conv, "video", f); videoInput.value = ""; });
  const btn = (label, short, action, onclick, glyph) => h("button", { class: "tool", type: "button", title: label, "aria-label": label, dataset: { action }, onclick },
    icon(glyph, "icon small"), h("span", { class: "tool-label", "aria-hidden": "true" }, short));
  const touch = matchMedia("(pointer: coarse)").matches;
  const voiceLabel = touch ? t("holdToTalk") : t("clickToRecord");
  const voiceBtn = h("button", { class: "tool voice-btn", type: "button", title: voiceLabel, "aria-label": voiceLabel, dataset: { action: "voice" } },
    icon("mic", "icon small"), h("span", { class: "tool-label", "aria-hidden": "true" }, touch ? t("holdToTalk") : t("voiceShort")));
  clear(tools, photoInput, fileInput, videoInput,
    btn(t("sendPhoto"), t("photoShort"), "photo", () => photoInput.click(), "photo"),
    btn(t("sendVideo"), t("videoShort"), "video", () => videoInput.click(), "video"),
    btn(t("sendFile"), t("fileShort"), "file", () => fileInput.click(), "file"),
    voiceBtn);
  setupRecorder(voiceBtn, extra, conv, touch);
}

function setupRecorder(btn, extra, conv, touch) {
  const store = ctx.store;
  let rec = null; let chunks = []; let started = 0; let timer = null; let cancelled = false; let starting = false;
  const stopUi = () => {
    clearInterval(timer); clear(extra); extra.classList.remove("recording"); btn.classList.remove("active");
    btn.setAttribute("aria-pressed", "false");
  };
  const start = async (e) => {
    e?.preventDefault();
    if (rec || starting) return;
    starting = true;
    cancelled = false;
    let stream;
    try { stream = await navigator.mediaDevices.getUserMedia({ audio: true }); } catch { starting = false; toast(t("micBlocked")); return; }
    starting = false;
    const mime = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4"].find((m) => window.MediaRecorder?.isTypeSupported?.(m)) || "";
    rec = new MediaRecorder(stream, mime ? { mimeType: mime } : undefined);
    chunks = [];
    rec.ondataavailable = (ev) => { if (ev.data.size) chunks.push(ev.data); };
    rec.onstop = () => {
      stream.getTracks().forEach((tr) => tr.stop());
      const ms = Date.now() - started;
      const type = rec.mimeType || "audio/webm";
      rec = null;
      stopUi();
      store.sendTyping(conv, "idle");
      if (cancelled || ms < 700) { if (!cancelled) toast(t("tooShort")); return; }
      const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
      const file = new File(chunks, `voice.${ext}`, { type });
      sendFile(conv, "voice", file, { duration_ms: ms });
    };
    rec.start(250);
    started = Date.now();
    btn.classList.add("active");
    btn.setAttribute("aria-pressed", "true");
    extra.classList.add("recording");
    const clock = h("span", { class: "rec-time", role: "timer" }, "0:00");
    const cancel = h("button", { class: "link danger-text", type: "button", "data-action": "cancel-voice" }, t("cancel"));
    cancel.addEventListener("pointerdown", (ev) => { ev.stopPropagation(); cancelled = true; rec?.stop(); });
    cancel.addEventListener("click", () => { cancelled = true; rec?.stop(); });
    const send = touch ? null : h("button", { class: "primary small-btn", type: "button", "data-action": "send-voice", onclick: () => stop() }, t("sendVoice"));
    clear(extra, h("span", { class: "rec-dot", "aria-hidden": "true" }), clock,
      h("span", { class: "muted" }, touch ? t("releaseToSend") : t("clickToSend")), send, cancel);
    timer = setInterval(() => { clock.textContent = duration(Date.now() - started); store.sendTyping(conv, "recording"); }, 250);
    store.sendTyping(conv, "recording");
  };
  const stop = () => { if (rec && rec.state !== "inactive") rec.stop(); };
  if (touch) {
    // Touch screens: hold to talk, release to send.
    btn.addEventListener("pointerdown", start);
    btn.addEventListener("pointerup", stop);
    btn.addEventListener("pointerleave", () => { if (rec) { cancelled = false; stop(); } });
  } else {
    // Mouse and keyboard: click to start, click again (or Send) to send.
    btn.addEventListener("click", (e) => { if (rec) { e.preventDefault(); stop(); } else start(e); });
  }
}
