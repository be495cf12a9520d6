// The avatar editor: choose a photo, drag and zoom the square that is kept,
// upload it (the server re-encodes it and makes the 64/160/640 px sizes).
import { h, toast } from "./dom.js";
import { t } from "../lib/i18n.js";
import { accessToken, ApiError } from "../store/api.js";
import { errorText } from "./format.js";

const CROP = 320; // the square sent to the server (it makes the 64/160/640 px sizes)

/** Pick a photo, move and zoom the square that will be kept (preview), then upload
 * it to `path` (PUT; DELETE removes). `onSaved` gets the server's answer. */
export function avatarEditor({ path, hasAvatar, onSaved }) {
  const canvas = h("canvas", { width: CROP, height: CROP, hidden: true, "data-role": "avatar-preview" });
  const zoom = h("input", { type: "range", min: "1", max: "4", step: "0.01", value: "1", name: "zoom", "aria-label": t("zoom"), hidden: true });
  const file = h("input", { type: "file", accept: "image/*", name: "avatar", class: "visually-hidden", "aria-label": t("avatarChoose") });
  const save = h("button", { class: "primary", type: "button", hidden: true, "data-action": "avatar-save" }, t("avatarSave"));
  let img = null;
  let cx = 0.5;
  let cy = 0.5;
  const box = () => {
    const side = Math.min(img.width, img.height) / Number(zoom.value);
    const sx = Math.min(Math.max(cx * img.width - side / 2, 0), img.width - side);
    const sy = Math.min(Math.max(cy * img.height - side / 2, 0), img.height - side);
    return { side, sx, sy };
  };
  const draw = () => {
    const { side, sx, sy } = box();
    canvas.getContext("2d").drawImage(img, sx, sy, side, side, 0, 0, CROP, CROP);
  };
  file.addEventListener("change", async () => {
    const f = file.files[0];
    if (!f) return;
    try { img = await createImageBitmap(f); } catch { toast(errorText({ code: "invalid_media" })); return; }
    cx = 0.5; cy = 0.5; zoom.value = "1";
    canvas.hidden = zoom.hidden = save.hidden = false;
    draw();
  });
  zoom.addEventListener("input", () => img && draw());
  canvas.addEventListener("pointermove", (e) => {
    if (!img || !e.buttons) return;
    const { side } = box();
    cx -= (e.movementX * side) / CROP / img.width;
    cy -= (e.movementY * side) / CROP / img.height;
    cx = Math.min(Math.max(cx, 0), 1); cy = Math.min(Math.max(cy, 0), 1);
    draw();
  });
  const send = async (method, body) => {
    const res = await fetch(`/api/v1${path}`, { method, body, headers: { Authorization: `Bearer ${await accessToken()}`, ...(body ? { "Content-Type": "image/jpeg" } : {}) } });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new ApiError(res.status, data);
    toast(t("avatarSaved"));
    onSaved(data);
  };
  save.addEventListener("click", () => canvas.toBlob((blob) => send("PUT", blob).catch((err) => toast(errorText(err))), "image/jpeg", 0.92));
  const remove = hasAvatar ? h("button", { class: "secondary", type: "button", "data-action": "avatar-remove",
    onclick: () => send("DELETE").catch((err) => toast(errorText(err))) }, t("avatarRemove")) : null;
  return h("div", { class: "avatar-editor" },
    h("div", { class: "inline" }, h("label", { class: "secondary" }, t("avatarChoose"), file), remove),
    canvas, zoom, save);
}

