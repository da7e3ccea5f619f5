// Directory listings in the HTML that Apache, nginx and lighttpd autoindex produce, with their sort
// links, parent links and size columns, so the crawler is tested against what servers really send.

export type ListingStyle = 'apache' | 'nginx' | 'lighttpd';

export interface ListingEntry {
  /** href as the server writes it: relative name, `../`, an absolute path or a full URL. */
  href: string;
  /** Text shown for the link. */
  label: string;
  isDir: boolean;
  size?: number;
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function human(size: number): string {
  if (size < 1024) return String(size);
  const units = ['K', 'M', 'G', 'T'];
  let n = size / 1024;
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n < 10 ? n.toFixed(1) : Math.round(n)}${units[i]}`;
}

export function renderListing(style: ListingStyle, dirPath: string, entries: readonly ListingEntry[]): string {
  switch (style) {
    case 'apache':
      return apache(dirPath, entries);
    case 'nginx':
      return nginx(dirPath, entries);
    case 'lighttpd':
      return lighttpd(dirPath, entries);
  }
}

function apache(dirPath: string, entries: readonly ListingEntry[]): string {
  const rows = entries.map((e) => {
    const label = e.label.length > 23 ? `${esc(e.label.slice(0, 20))}..&gt;` : esc(e.label);
    const icon = e.isDir ? '<img src="/icons/folder.gif" alt="[DIR]">' : '<img src="/icons/text.gif" alt="[TXT]">';
    const size = e.isDir || e.size === undefined ? '  - ' : human(e.size);
    return `<tr><td valign="top">${icon}</td><td><a href="${esc(e.href)}">${label}</a></td><td align="right">2021-08-18 12:00  </td><td align="right">${size}</td><td>&nbsp;</td></tr>`;
  });
  const parent = dirPath.replace(/[^/]+\/$/, '');
  return `<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">
<html>
 <head>
  <title>Index of ${esc(dirPath)}</title>
 </head>
 <body>
<h1>Index of ${esc(dirPath)}</h1>
  <table>
   <tr><th valign="top"><img src="/icons/blank.gif" alt="[ICO]"></th><th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th><th><a href="?C=S;O=A">Size</a></th><th><a href="?C=D;O=A">Description</a></th></tr>
   <tr><th colspan="5"><hr></th></tr>
<tr><td valign="top"><img src="/icons/back.gif" alt="[PARENTDIR]"></td><td><a href="${esc(parent)}">Parent Directory</a></td><td>&nbsp;</td><td align="right">  - </td><td>&nbsp;</td></tr>
${rows.join('\n')}
   <tr><th colspan="5"><hr></th></tr>
</table>
<address>Apache/2.4.41 (Ubuntu) Server at localhost Port 80</address>
</body></html>
`;
}

function nginx(dirPath: string, entries: readonly ListingEntry[]): string {
  const rows = entries.map((e) => {
    const label = e.label.length > 50 ? `${esc(e.label.slice(0, 47))}..&gt;` : esc(e.label);
    const pad = ' '.repeat(Math.max(1, 51 - Math.min(e.label.length, 50)));
    const size = e.isDir || e.size === undefined ? '-' : String(e.size);
    return `<a href="${esc(e.href)}">${label}</a>${pad}18-Aug-2021 12:00 ${size.padStart(19)}`;
  });
  return `<html>
<head><title>Index of ${esc(dirPath)}</title></head>
<body>
<h1>Index of ${esc(dirPath)}</h1><hr><pre><a href="../">../</a>
${rows.join('\n')}
</pre><hr></body>
</html>
`;
}

function lighttpd(dirPath: string, entries: readonly ListingEntry[]): string {
  const rows = entries.map((e) => {
    const size = e.isDir || e.size === undefined ? '- &nbsp;' : `${human(e.size)}`;
    const type = e.isDir ? 'Directory' : 'text/csv';
    return `<tr${e.isDir ? ' class="d"' : ''}><td class="n"><a href="${esc(e.href)}">${esc(e.label.replace(/\/$/, ''))}</a>${e.isDir ? '/' : ''}</td><td class="m">2021-Aug-18 12:00:00</td><td class="s">${size}</td><td class="t">${type}</td></tr>`;
  });
  return `<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.1//EN" "http://www.w3.org/TR/xhtml11/DTD/xhtml11.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en">
<head><title>Index of ${esc(dirPath)}</title></head>
<body>
<h2>Index of ${esc(dirPath)}</h2>
<div class="list">
<table summary="Directory Listing" cellpadding="0" cellspacing="0">
<thead><tr><th class="n">Name</th><th class="m">Last Modified</th><th class="s">Size</th><th class="t">Type</th></tr></thead>
<tbody>
<tr class="d"><td class="n"><a href="../">..</a>/</td><td class="m">&nbsp;</td><td class="s">- &nbsp;</td><td class="t">Directory</td></tr>
${rows.join('\n')}
</tbody>
</table>
</div>
<div class="foot">lighttpd/1.4.59</div>
</body>
</html>
`;
}
