// The person's key: an Ed25519 key made by WebCrypto, its private half not extractable,
// kept in IndexedDB, so this browser proves it is the same person at every join without
// any account. The node hands each connection a fresh challenge; we sign it (see
// docs/trust.md and docs/protocol.md).

const DB = 'veche';
const STORE = 'keys';
const ID = 'person';
const SEEN_KEY = 'veche.seen'; // name → fingerprint of the key last seen under that name

function idb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => {
      // Never stand in the way of another page of this origin (a newer version, or the page
      // we navigate to while this one sits in the back-forward cache).
      req.result.onversionchange = () => req.result.close();
      resolve(req.result);
    };
    req.onerror = () => reject(req.error);
  });
}

function tx(db, mode, fn) {
  return new Promise((resolve, reject) => {
    const t = db.transaction(STORE, mode);
    const req = fn(t.objectStore(STORE));
    t.oncomplete = () => resolve(req && req.result);
    t.onerror = () => reject(t.error);
    // Aborted without an error event (disk full at commit, the store closed under us).
    t.onabort = () => reject(t.error || new Error('the key store gave up'));
  });
}

export function b64url(bytes) {
  let s = '';
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function fromB64url(text) {
  const s = atob(String(text).replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

/** What a link pins the host by: the key's first 16 bytes, base64url. */
export function pinOf(keyText) {
  try { return b64url(fromB64url(keyText).slice(0, 16)); } catch { return ''; }
}

/** The short fingerprint shown next to a name: the key's first 8 bytes, base64url. */
export function fingerprint(keyText) {
  try { return b64url(fromB64url(keyText).slice(0, 8)); } catch { return ''; }
}

let cached = null;

/** How long the key store (IndexedDB) may take before an attempt gives up and retries. */
const KEY_STORE_WAIT_MS = 10000;

/** The key store did not answer in time: worth another attempt, unlike a missing feature. */
export class KeyStoreSlow extends Error {}

/** This browser's key: {privateKey, publicKey: base64url}. Made once, then loaded. */
export function personKey() {
  if (!cached) {
    cached = (async () => {
      if (!globalThis.crypto || !crypto.subtle) {
        throw new Error('This page needs a secure connection (https or localhost) to make your key.');
      }
      const db = await idb();
      try {
        let rec = await tx(db, 'readonly', (s) => s.get(ID));
        if (!rec) {
          let pair;
          try {
            pair = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
          } catch {
            throw new Error('This browser cannot make an Ed25519 key (WebCrypto). Please update it.');
          }
          const pub = b64url(await crypto.subtle.exportKey('raw', pair.publicKey));
          rec = { privateKey: pair.privateKey, publicKey: pub };
          await tx(db, 'readwrite', (s) => s.put(rec, ID));
        }
        return rec;
      } finally {
        // The key is kept in memory from here on: no connection stays open for the page's life.
        db.close();
      }
    })();
    cached.catch(() => { cached = null; });
  }
  return cached;
}

/** Sign node `node`'s challenge `nonce` for `meeting`; returns {key, sig} for `join`. */
export async function signChallenge(node, meeting, nonce) {
  const loading = personKey();
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => {
      // A store that hangs must not hang every later attempt too: open it afresh next time.
      if (cached === loading) cached = null;
      reject(new KeyStoreSlow("this browser's key store did not answer"));
    }, KEY_STORE_WAIT_MS);
  });
  const k = await Promise.race([loading, late]).finally(() => clearTimeout(timer));
  const bytes = new TextEncoder().encode(`veche/join-challenge/v1\0${node}\0${meeting}\0${nonce}`);
  const sig = await crypto.subtle.sign({ name: 'Ed25519' }, k.privateKey, bytes);
  return { key: k.publicKey, sig: b64url(sig) };
}

/**
 * Remember which key a name came with; true when this browser saw the same name before
 * with a different key (someone else using the name, or the person on a new device).
 */
export function notePerson(name, keyText) {
  const fp = fingerprint(keyText);
  if (!name || !fp) return false;
  let seen = {};
  try { seen = JSON.parse(localStorage.getItem(SEEN_KEY) || '{}') || {}; } catch { seen = {}; }
  const before = seen[name];
  if (!before) {
    seen[name] = fp;
    const names = Object.keys(seen);
    if (names.length > 500) delete seen[names[0]]; // bounded
    try { localStorage.setItem(SEEN_KEY, JSON.stringify(seen)); } catch { /* full: forget */ }
    return false;
  }
  return before !== fp;
}

/**
 * Sign `body` as a veche-trust document of kind `domain` ("veche/meeting/v1",
 * "veche/invite/v1") with this browser's key; returns the token (base64url JSON of
 * {body, key, sig}). The signed bytes are the domain, a zero byte and the body's JSON with
 * its fields in the order the node's types declare them: build `body` in that order.
 */
export async function signToken(domain, body) {
  const k = await personKey();
  const enc = new TextEncoder();
  const d = enc.encode(domain);
  const j = enc.encode(JSON.stringify(body));
  const bytes = new Uint8Array(d.length + 1 + j.length);
  bytes.set(d, 0);
  bytes.set(j, d.length + 1);
  const sig = await crypto.subtle.sign({ name: 'Ed25519' }, k.privateKey, bytes);
  return b64url(new TextEncoder().encode(JSON.stringify({ body, key: k.publicKey, sig: b64url(sig) })));
}

/** A random id for an invite (revocations and use counts name it). */
export function randomId() {
  return b64url(crypto.getRandomValues(new Uint8Array(9)));
}
