// The invite dialog: the meeting's link (and its addresses on this network, with QR
// codes for the phones in the room), and for the host or a moderator signed invites with
// a role and an expiry, which the host can withdraw.

import { h, icon, toast, openDialog, copyText } from './ui.js';
import { signToken, randomId } from './keys.js';
import { qrCanvas } from './qr.js';

/**
 * Open the dialog (and copy the link). ctx: {meetingId, host (node id hint), hostKey (the
 * host key's pin), role, authority (our moderator invite, or null), nodeInfo (Promise)}.
 */
export async function inviteDialog(ctx) {
  const id = encodeURIComponent(ctx.meetingId);
  // The node id lets someone with their own veche node open the same link there.
  const pin = ctx.hostKey ? `&host=${encodeURIComponent(ctx.hostKey)}` : '';
  const hint = ctx.host ? `?node=${encodeURIComponent(ctx.host)}${pin}` : '';
  const link = `${location.origin}/m/${id}${hint}`;
  const copied = await copyText(link);
  let info = null;
  try { info = await ctx.nodeInfo; } catch { info = null; }
  const lan = (info && Array.isArray(info.lan_urls) ? info.lan_urls : [])
    .map((u) => String(u).replace(/\/+$/, ''))
    .filter((u) => u && u !== location.origin)
    .map((u) => `${u}/m/${id}${hint}`);

  const row = (value, label, id) => {
    const input = h('input', { class: 'copy-input', type: 'text', readonly: true, 'aria-label': label });
    if (id) input.id = id;
    input.value = value;
    input.addEventListener('focus', () => input.select());
    const btn = h('button', { class: 'btn btn-secondary btn-small', type: 'button' }, icon('copy'), ' Copy');
    btn.addEventListener('click', async () => {
      input.select();
      toast((await copyText(value)) ? 'Copied' : 'Select the text and copy it', { timeout: 2500 });
    });
    // A QR code for phones and tablets in the room (a projected one for a whole class).
    const qrBtn = h('button', { class: 'btn btn-secondary btn-small qr-toggle', type: 'button', 'aria-expanded': 'false', text: 'QR code' });
    const qrBox = h('div', { class: 'qr-box', hidden: true });
    qrBtn.addEventListener('click', () => {
      if (!qrBox.firstChild) {
        try {
          const canvas = qrCanvas(value, 5);
          canvas.className = 'qr';
          canvas.setAttribute('role', 'img');
          canvas.setAttribute('aria-label', `QR code of the ${label.toLowerCase()}`);
          qrBox.append(canvas);
        } catch (err) {
          qrBox.append(h('p', { class: 'dialog-note', text: `No QR code: ${err && err.message || err}` }));
        }
      }
      qrBox.hidden = !qrBox.hidden;
      qrBtn.setAttribute('aria-expanded', String(!qrBox.hidden));
    });
    return { input, el: h('div', { class: 'copy-block' }, h('div', { class: 'copy-row' }, input, btn, qrBtn), qrBox) };
  };
  const main = row(link, 'Meeting link');
  const body = [
    h('p', { class: 'dialog-note', text: copied ? 'Meeting link copied to the clipboard.' : 'Copy this link and send it to the people you want to invite:' }),
    main.el,
    h('p', { class: 'dialog-note', text: 'Someone who runs their own veche node pastes this link on their node\'s start page; it joins this meeting through their node.' }),
  ];
  // A moderator invites under their own moderator invite, which must name their key.
  const delegates = ctx.role === 'moderator' && ctx.authority?.body?.invitee;
  if (ctx.role === 'host' || delegates) body.push(...inviteMaker(ctx, link, lan, row));
  if (lan.length) {
    body.push(h('h3', { text: 'On this network' }));
    for (const url of lan) body.push(row(url, 'Meeting link on this network').el);
    if (info.fingerprint) {
      body.push(
        h('p', { class: 'dialog-note', text: 'Other devices on this network open this address; their browser will warn about the certificate — check that it shows this fingerprint, then continue.' }),
        h('code', { class: 'fingerprint', text: String(info.fingerprint) }));
    }
  }
  openDialog('Invite people', body);
  if (!copied) { main.input.focus(); main.input.select(); }
}

/** The host's part of the invite dialog: signed invite links with a role and an expiry. */
function inviteMaker(ctx, link, lan, row) {
  const role = h('select', { id: 'invite-role', 'aria-label': 'Role' },
    h('option', { value: 'speaker', text: 'Speaker: talks, shows video, chats' }),
    h('option', { value: 'listener', text: 'Listener: sees and hears, is not seen or heard' }),
    h('option', { value: 'moderator', text: 'Moderator' }));
  const expiry = h('select', { id: 'invite-expiry', 'aria-label': 'Valid for' },
    h('option', { value: String(3600e3), text: 'valid 1 hour' }),
    h('option', { value: String(86400e3), text: 'valid 1 day', selected: true }),
    h('option', { value: String(7 * 86400e3), text: 'valid 7 days' }));
  const single = h('input', { id: 'invite-single', type: 'checkbox' });
  const out = h('div', { class: 'stack' });
  const make = h('button', { id: 'invite-create', class: 'btn btn-primary btn-small', type: 'button', text: 'Create invite link' });
  make.addEventListener('click', async () => {
    make.disabled = true;
    try {
      const inviteId = randomId();
      const token = await signToken('veche/invite/v1', {
        meeting: ctx.meetingId,
        id: inviteId,
        role: role.value,
        expires_ms: Date.now() + Number(expiry.value),
        max_uses: single.checked ? 1 : null,
        invitee: null,
        parent: ctx.role === 'host' ? null : ctx.authority,
      });
      const url = `${link}#invite=${token}`;
      const label = `${role.value}, ${expiry.selectedOptions[0].text}${single.checked ? ', one use' : ''}`;
      rememberInvite(ctx.meetingId, { id: inviteId, label, made: Date.now() });
      // The same invite on this network's addresses, for devices in the room.
      const onLan = lan.map((u, i) => row(`${u}#invite=${token}`, 'Invite link on this network', `invite-link-lan-${i}`).el);
      out.replaceChildren(
        h('p', { class: 'dialog-note', text: `A ${role.value} invite, ${expiry.selectedOptions[0].text}${single.checked ? ', for one person' : ''}. The part after # never reaches any server.` }),
        row(url, 'Invite link', 'invite-link').el,
        ...onLan);
      if (ctx.role === 'host') list.replaceChildren(...inviteRows(ctx.meetingId));
      toast((await copyText(url)) ? 'Invite link copied' : 'Select the link and copy it', { timeout: 2500 });
    } catch (err) {
      toast(`Could not sign the invite: ${err && err.message || err}`, { kind: 'error' });
    } finally {
      make.disabled = false;
    }
  });
  // Only the host withdraws invites (revocations are the host's), so only the host lists them.
  const list = h('ul', { class: 'invite-list' }, ...(ctx.role === 'host' ? inviteRows(ctx.meetingId) : []));
  return [
    h('h3', { text: `Invite with a role (you are ${ctx.role === 'host' ? 'the host' : 'a moderator'})` }),
    h('div', { class: 'row' }, role, expiry),
    h('label', { class: 'check', for: 'invite-single' }, single, ' one use only'),
    make,
    out,
    list,
  ];
}

/** Invites this browser made for this meeting (their ids, to withdraw them). */
function madeInvites(meetingId) {
  try { return JSON.parse(localStorage.getItem(`veche.invites.${meetingId}`) || '[]') || []; } catch { return []; }
}

function rememberInvite(meetingId, inv) {
  const all = [inv, ...madeInvites(meetingId)].slice(0, 50);
  try { localStorage.setItem(`veche.invites.${meetingId}`, JSON.stringify(all)); } catch { /* full */ }
}

/** One row per invite made here, with a Withdraw button (a host-signed revocation). */
function inviteRows(meetingId) {
  return madeInvites(meetingId).map((inv) => {
    const btn = h('button', { class: 'btn btn-secondary btn-small', type: 'button', dataset: { withdraw: inv.id },
      text: inv.withdrawn ? 'Withdrawn' : 'Withdraw', disabled: !!inv.withdrawn });
    btn.addEventListener('click', async () => {
      btn.disabled = true;
      try {
        const revocation = await signToken('veche/revocation/v1', { meeting: meetingId, invite: inv.id, at_ms: Date.now() });
        const res = await fetch(`/api/meetings/${encodeURIComponent(meetingId)}/revocations`, {
          method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ revocation }),
        });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        const all = madeInvites(meetingId).map((x) => (x.id === inv.id ? { ...x, withdrawn: true } : x));
        try { localStorage.setItem(`veche.invites.${meetingId}`, JSON.stringify(all)); } catch { /* full */ }
        btn.textContent = 'Withdrawn';
        toast('Invite withdrawn: its link no longer lets anyone in', { timeout: 4000 });
      } catch (err) {
        btn.disabled = false;
        toast(`Could not withdraw the invite: ${err && err.message || err}`, { kind: 'error' });
      }
    });
    return h('li', { class: 'invite-row' }, h('span', { text: `Invite (${inv.label})` }), btn);
  });
}
