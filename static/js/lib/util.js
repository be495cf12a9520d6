// Small pure helpers shared by the store and the views (no DOM, no state).

export function uuid() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  const b = globalThis.crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const x = Array.from(b, (v) => v.toString(16).padStart(2, "0")).join("");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

/** A tiny publish/subscribe hub: topic → set of listeners. */
export class Emitter {
  constructor() { this.topics = new Map(); }

  on(topic, fn) {
    if (!this.topics.has(topic)) this.topics.set(topic, new Set());
    this.topics.get(topic).add(fn);
    return () => this.topics.get(topic)?.delete(fn);
  }

  emit(topic, ...args) {
    for (const fn of this.topics.get(topic) || []) fn(...args);
  }
}
