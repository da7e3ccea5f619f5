// The search page: plain browser JavaScript, no framework, served by `run.ts back` with the API it
// calls (same origin). The search state lives in the URL (?q= or ?imageUrl=, index, modality, n,
// safe, dedup), so a search can be shared and the back button works.
const $ = (id) => document.getElementById(id);
const form = $('search');
const queryBox = $('query');
const fileInput = $('file');
const indexSelect = $('index');
const modalitySelect = $('modality');
const countSelect = $('count');
const safeBox = $('safe');
const dedupBox = $('dedup');
const simBox = $('similarities');
const statusLine = $('status');
const errorLine = $('error');
const resultsList = $('results');
const queryImage = $('query-image');

let urlColumn = 'url';
/** The current query: {text} | {imageUrl} | {image (base64), name}. */
let current = null;
let searchSeq = 0;

const isUrl = (s) => /^https?:\/\/\S+$/i.test(s.trim());

function showError(message) {
  errorLine.textContent = message;
  errorLine.hidden = !message;
}

function stateToUrl(push) {
  const p = new URLSearchParams();
  if (current?.text) p.set('q', current.text);
  else if (current?.imageUrl) p.set('imageUrl', current.imageUrl);
  if (indexSelect.value) p.set('index', indexSelect.value);
  p.set('modality', modalitySelect.value);
  p.set('n', countSelect.value);
  p.set('safe', safeBox.checked ? '1' : '0');
  p.set('dedup', dedupBox.checked ? '1' : '0');
  const url = `${location.pathname}?${p}`;
  if (url === `${location.pathname}${location.search}`) return;
  if (push) history.pushState(null, '', url);
  else history.replaceState(null, '', url);
}

function stateFromUrl() {
  const p = new URLSearchParams(location.search);
  if (p.has('index') && [...indexSelect.options].some((o) => o.value === p.get('index'))) indexSelect.value = p.get('index');
  if (p.has('modality')) modalitySelect.value = p.get('modality') === 'text' ? 'text' : 'image';
  if (p.has('n')) {
    const n = p.get('n');
    if (![...countSelect.options].some((o) => o.value === n) && /^\d+$/.test(n)) countSelect.add(new Option(n, n));
    countSelect.value = n;
  }
  if (p.has('safe')) safeBox.checked = p.get('safe') !== '0';
  if (p.has('dedup')) dedupBox.checked = p.get('dedup') === '1';
  if (p.get('q')) current = { text: p.get('q') };
  else if (p.get('imageUrl')) current = { imageUrl: p.get('imageUrl') };
  else current = null;
  queryBox.value = current?.text ?? current?.imageUrl ?? '';
}

function showQueryImage() {
  const src = current?.imageUrl ?? (current?.image ? `data:image/*;base64,${current.image}` : null);
  queryImage.hidden = !src;
  if (src) {
    queryImage.querySelector('img').src = src;
    queryImage.querySelector('span').textContent = current.name ? `images like ${current.name}` : 'images like this one';
  }
}

async function postJson(path, body) {
  const res = await fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
  const value = await res.json().catch(() => null);
  if (!res.ok) throw new Error(value?.error ?? `${path} answered HTTP ${res.status}`);
  return value;
}

function resultImageSource(r) {
  if (typeof r[urlColumn] === 'string' && r[urlColumn]) return r[urlColumn];
  if (typeof r.image === 'string') return `data:image/jpeg;base64,${r.image}`;
  return null;
}

function renderResults(results) {
  resultsList.replaceChildren();
  let shown = 0;
  for (const r of results) {
    const src = resultImageSource(r);
    if (!src) continue; // beyond num_images: no metadata
    shown++;
    const li = document.createElement('li');
    const fig = document.createElement('figure');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'result';
    const caption = typeof r.caption === 'string' ? r.caption : '';
    button.title = `Search images like this one${caption ? `: ${caption}` : ''}`;
    button.setAttribute('aria-label', `Search images like: ${caption || `result ${r.id}`}`);
    const img = document.createElement('img');
    img.src = src;
    img.alt = caption;
    img.loading = 'lazy';
    img.referrerPolicy = 'no-referrer';
    img.addEventListener('error', () => li.classList.add('broken'));
    button.append(img);
    button.addEventListener('click', () => searchLike(r));
    const cap = document.createElement('figcaption');
    const text = document.createElement('span');
    text.className = 'caption';
    text.textContent = caption;
    cap.append(text);
    const sim = document.createElement('span');
    sim.className = 'similarity';
    sim.textContent = Number(r.similarity).toFixed(4);
    cap.append(sim);
    if (typeof r[urlColumn] === 'string' && /^https?:/i.test(r[urlColumn])) {
      const a = document.createElement('a');
      a.href = r[urlColumn];
      a.target = '_blank';
      a.rel = 'noopener noreferrer';
      a.className = 'source';
      a.textContent = 'source';
      a.title = r[urlColumn];
      cap.append(a);
    }
    fig.append(button, cap);
    li.append(fig);
    resultsList.append(li);
  }
  return shown;
}

async function search(push = true) {
  showError('');
  showQueryImage();
  if (!current) {
    resultsList.replaceChildren();
    statusLine.textContent = '';
    return;
  }
  stateToUrl(push);
  const seq = ++searchSeq;
  const n = Number(countSelect.value);
  const body = {
    text: current.text ?? null,
    image: current.image ?? null,
    image_url: current.imageUrl ?? null,
    embedding_input: null,
    modality: modalitySelect.value,
    num_images: n,
    num_result_ids: n,
    indice_name: indexSelect.value || null,
    use_mclip: false,
    deduplicate: dedupBox.checked,
    use_safety_model: safeBox.checked,
    use_violence_detector: false,
    aesthetic_score: '',
    aesthetic_weight: '',
  };
  statusLine.textContent = 'Searching…';
  resultsList.setAttribute('aria-busy', 'true');
  const started = performance.now();
  try {
    const results = await postJson('knn-service', body);
    if (seq !== searchSeq) return; // a newer search is under way
    const shown = renderResults(results);
    const ms = Math.round(performance.now() - started);
    statusLine.textContent = shown === 0 ? (safeBox.checked ? 'No results (safe mode is on).' : 'No results.') : `${shown} results in ${ms} ms`;
  } catch (err) {
    if (seq !== searchSeq) return;
    resultsList.replaceChildren();
    statusLine.textContent = '';
    showError(err.message);
  } finally {
    if (seq === searchSeq) resultsList.removeAttribute('aria-busy');
  }
}

function searchLike(r) {
  modalitySelect.value = 'image';
  if (typeof r[urlColumn] === 'string' && isUrl(r[urlColumn])) current = { imageUrl: r[urlColumn] };
  else if (typeof r.image === 'string') current = { image: r.image, name: r.caption || `result ${r.id}` };
  else return;
  queryBox.value = current.imageUrl ?? '';
  window.scrollTo({ top: 0 });
  search();
}

function readImageFile(file) {
  if (!file || !file.type.startsWith('image/')) {
    showError('That is not an image file.');
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    const data = String(reader.result);
    current = { image: data.slice(data.indexOf(',') + 1), name: file.name || 'the pasted image' };
    queryBox.value = '';
    search();
  };
  reader.onerror = () => showError(`Could not read ${file.name}.`);
  reader.readAsDataURL(file);
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  const q = queryBox.value.trim();
  if (!q) return;
  current = isUrl(q) ? { imageUrl: q } : { text: q };
  search();
});
fileInput.addEventListener('change', () => readImageFile(fileInput.files[0]));
document.addEventListener('paste', (e) => {
  const item = [...(e.clipboardData?.items ?? [])].find((i) => i.type.startsWith('image/'));
  if (!item) return;
  e.preventDefault();
  readImageFile(item.getAsFile());
});
document.addEventListener('dragover', (e) => e.preventDefault());
document.addEventListener('drop', (e) => {
  const file = e.dataTransfer?.files?.[0];
  if (!file) return;
  e.preventDefault();
  readImageFile(file);
});
// Changing an option re-runs the current search (replacing, not adding, a history entry).
for (const el of [indexSelect, modalitySelect, countSelect, safeBox, dedupBox]) el.addEventListener('change', () => search(false));
simBox.addEventListener('change', () => document.body.classList.toggle('hide-similarities', !simBox.checked));
window.addEventListener('popstate', () => {
  stateFromUrl();
  search(false);
});

async function start() {
  try {
    const config = await fetch('config.json').then((r) => r.json());
    if (typeof config.urlColumn === 'string') urlColumn = config.urlColumn;
    const names = await fetch('indices-list').then((r) => r.json());
    for (const name of names) indexSelect.add(new Option(name, name));
  } catch (err) {
    showError(`The back end did not answer: ${err.message}`);
    return;
  }
  stateFromUrl();
  document.body.classList.toggle('hide-similarities', !simBox.checked);
  if (current) search(false);
  document.body.dataset.ready = '1';
}
start();
