// The meeting's attendance, for its host: the node sends it over the socket when asked
// (only to the host's own key), and the page saves it as a CSV file.

/** Save the node's `attendance` message as a file the browser downloads. Returns how many
 * stays it lists. The link stays in the page a minute (a slow download, and tests, read it). */
export function saveAttendance(msg) {
  const csv = String(msg.csv ?? '');
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([csv], { type: 'text/csv;charset=utf-8' }));
  a.download = String(msg.file || 'attendance.csv');
  a.hidden = true;
  a.dataset.attendance = a.download;
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 60000);
  // One header line, then one line per stay (a name with a line break is quoted: rare,
  // and only the count in a message would be off).
  return Math.max(0, csv.trim().split('\n').length - 1);
}
