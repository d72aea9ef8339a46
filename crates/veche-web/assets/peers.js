// The connected nodes, refreshed every two seconds from GET /api/peers.
const summary = document.getElementById('peers-summary');
const table = document.getElementById('peers-table');
const body = table.querySelector('tbody');

function cell(text, title) {
  const td = document.createElement('td');
  td.textContent = text; // node names come from other nodes: never as HTML
  if (title) td.title = title;
  return td;
}

function shortId(id) {
  return id.length > 16 ? `${id.slice(0, 8)}…${id.slice(-6)}` : id;
}

async function refresh() {
  let peers;
  try {
    const res = await fetch('/api/peers', { headers: { accept: 'application/json' } });
    peers = await res.json();
  } catch {
    summary.textContent = 'Cannot reach this veche node. Is it running?';
    table.hidden = true;
    return;
  }
  summary.textContent = peers.length === 0
    ? 'No other veche nodes are connected.'
    : `${peers.length} node${peers.length === 1 ? '' : 's'} connected.`;
  table.hidden = peers.length === 0;
  body.replaceChildren(...peers.map((p) => {
    const tr = document.createElement('tr');
    tr.dataset.peer = p.id;
    const meetings = (p.meetings || []).map((m) => m.title).join(', ');
    tr.append(
      cell(p.name || '(unknown)'),
      cell(shortId(p.id), p.id),
      cell(p.address, (p.connections || []).join('\n')),
      cell(p.direct ? 'direct' : 'relayed'),
      cell(p.rtt_ms == null ? '–' : `${p.rtt_ms.toFixed(1)} ms`),
      cell(meetings || '–'),
    );
    return tr;
  }));
}

refresh();
setInterval(refresh, 2000);
