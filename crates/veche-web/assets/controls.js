// The control bar: microphone, camera, screen, hand, the people and chat panels, invite
// and leave. Each button's icon, label and accessible name follow the state.

import { h, icon } from './ui.js';
import { screenShareAvailable } from './media.js';

export class Controls {
  /** on: {mic, camera, screen, hand, people, chat, invite, leave} click handlers. */
  constructor(on) {
    // Icon, label and aria-label are filled in by render().
    const ctl = (id, onclick, extra = '') => h('button', { id, class: `ctl ${extra}`.trim(), type: 'button', onclick },
      h('span', { class: 'ctl-icon' }), h('span', { class: 'ctl-label' }));
    this.mic = ctl('btn-mic', on.mic);
    this.cam = ctl('btn-cam', on.camera);
    this.screen = ctl('btn-screen', on.screen);
    this.hand = ctl('btn-hand', on.hand);
    this.people = ctl('btn-people', on.people);
    this.chat = ctl('btn-chat', on.chat);
    this.invite = ctl('btn-copy', on.invite);
    this.leave = ctl('btn-leave', on.leave, 'ctl-leave');
    this.peopleBadge = h('span', { class: 'badge badge-muted', 'aria-hidden': 'true' });
    this.chatBadge = h('span', { id: 'chat-badge', class: 'badge', hidden: true, 'aria-hidden': 'true' });
    this.people.append(this.peopleBadge);
    this.chat.append(this.chatBadge);
    this.people.setAttribute('aria-controls', 'panel-people');
    this.chat.setAttribute('aria-controls', 'panel-chat');
    if (!screenShareAvailable()) {
      this.screen.disabled = true;
      this.screen.title = 'Screen sharing is not supported on this device';
    }
    this.el = h('footer', { class: 'controls', role: 'toolbar', 'aria-label': 'Meeting controls' },
      h('div', { class: 'ctl-group' }, this.mic, this.cam, this.screen, this.hand),
      h('div', { class: 'ctl-group' }, this.people, this.chat, this.invite),
      h('div', { class: 'ctl-group' }, this.leave));
  }

  /** view: {me: {audio, video, screen, hand}, busy: {mic, camera}, panel, unread, people}. */
  render(view) {
    const { me, busy, panel, unread } = view;
    const set = (btn, iconName, label, ariaLabel, cls = {}) => {
      const iconBox = btn.querySelector('.ctl-icon');
      if (iconBox.dataset.icon !== iconName) {
        iconBox.dataset.icon = iconName;
        iconBox.replaceChildren(icon(iconName));
      }
      btn.querySelector('.ctl-label').textContent = label;
      btn.setAttribute('aria-label', ariaLabel);
      if (!btn.disabled || btn !== this.screen) btn.title = ariaLabel;
      for (const [name, on] of Object.entries(cls)) btn.classList.toggle(name, !!on);
    };
    set(this.mic, me.audio ? 'mic' : 'micOff', me.audio ? 'Mute' : 'Unmute',
      me.audio ? 'Turn off microphone' : 'Turn on microphone', { off: !me.audio, busy: busy.mic });
    set(this.cam, me.video ? 'cam' : 'camOff', me.video ? 'Stop video' : 'Start video',
      me.video ? 'Turn off camera' : 'Turn on camera', { off: !me.video, busy: busy.camera });
    set(this.screen, 'screen', me.screen ? 'Stop sharing' : 'Share screen',
      me.screen ? 'Stop sharing your screen' : 'Share your screen', { active: me.screen });
    set(this.hand, 'hand', me.hand ? 'Lower hand' : 'Raise hand',
      me.hand ? 'Lower your hand' : 'Raise your hand to speak', { active: me.hand });
    set(this.people, 'people', 'People', 'Show participants', { active: panel === 'people' });
    set(this.chat, 'chat', 'Chat', `Show chat${unread ? ` (${unread} unread)` : ''}`, { active: panel === 'chat' });
    set(this.invite, 'link', 'Invite', 'Copy meeting link');
    set(this.leave, 'leave', 'Leave', 'Leave meeting');
    this.people.setAttribute('aria-expanded', String(panel === 'people'));
    this.chat.setAttribute('aria-expanded', String(panel === 'chat'));
    this.peopleBadge.textContent = String(view.people);
    this.chatBadge.hidden = unread === 0;
    this.chatBadge.textContent = unread > 99 ? '99+' : String(unread);
  }
}
