// What every view shares: the store (set once by the entry module), the
// server-given configuration, the persistent nodes of the shell, navigation.
// Views never import the entry module or each other's parents: they change the
// store, or the location hash, and the shell redraws.

export const ctx = {
  store: null,
  config: {},
  el: {},          // persistent nodes of the shell
  actions: {},     // signOut, relabel: given by the shell
  route: { view: "chats", id: null, sub: null },
  replyTo: null,
  filter: "",
};

export function readConfig(root) {
  const d = root.dataset;
  return {
    codeLogin: d.codeLogin === "true",
    requireVerification: d.requireVerification === "true",
    deleteGraceDays: Number(d.deleteGraceDays || 7),
    recallWindow: Number(d.recallWindow || 120),
    editWindow: Number(d.editWindow || 86400),
    maxText: Number(d.maxText || 16000),
    groups: d.groups === "true",
    media: d.media === "true",
    inviteRevoke: d.inviteRevoke === "true",
    inviteList: d.inviteList === "true",
  };
}

export function go(hash) {
  if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = hash;
}
