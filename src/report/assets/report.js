/* lfeval report viewer.
 *
 * Reads the data tags lfeval embeds in report.html (contract: notes/issue11/report-data.md)
 * and draws the page with plain DOM calls. Design rules that keep it fast at 100k samples:
 *   - everything the table, filters and charts need comes from a columnar index, read once;
 *   - only one page of table rows exists in the DOM at a time;
 *   - full sample records stay gzip+base64 in their chunk tags until a sample is opened.
 * Sample data is untrusted (model output), so text only ever reaches the DOM as text nodes:
 * there is no innerHTML anywhere in this file.
 */
'use strict';

(() => {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const CHUNKS_KEPT = 8;           // decoded chunks kept in memory (256 records each)
  const MAX_TEXT = 20000;          // characters shown before "show all": long bodies stay cheap
  const LIST_STEP = 25;            // rows added per "show more" in comparison lists
  const NO_DATA = 'This report holds no data: the data tags are missing.';

  // --- DOM helpers --------------------------------------------------------------------------

  function build(el, props, kids) {
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === 'text') el.textContent = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : v);
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid != null && kid !== false) el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }
  const h = (tag, props, ...kids) => build(document.createElement(tag), props, kids);
  const svg = (tag, props, ...kids) => build(document.createElementNS(SVG_NS, tag), props, kids);
  const byId = (id) => document.getElementById(id);
  const fill = (el, ...kids) => { el.replaceChildren(); return build(el, null, kids); };

  // --- formatting (fixed locale: the same report reads the same everywhere) -----------------

  const INT = new Intl.NumberFormat('en-US');
  const fmtInt = (v) => (v == null ? '—' : INT.format(v));
  function fmtNum(v) {
    if (v == null || Number.isNaN(v)) return '—';
    if (typeof v !== 'number') return String(v);
    if (Number.isInteger(v)) return INT.format(v);
    const a = Math.abs(v);
    return v.toFixed(a < 1 ? 4 : a < 100 ? 3 : 1);
  }
  const fmtPct = (v) => (v == null ? '—' : `${(v * 100).toFixed(1)}%`);
  function fmtUsd(v) {
    if (v == null) return '—';
    // Per-sample costs are often millionths of a dollar: two significant digits, no exponent.
    if (v !== 0 && Math.abs(v) < 1e-6) return '<$0.000001';
    if (v !== 0 && Math.abs(v) < 0.01) return `$${Number(v.toPrecision(2))}`;
    return `$${v.toFixed(2)}`;
  }
  function fmtMs(v) {
    if (v == null) return '—';
    if (v === 0) return '0 ms';
    if (v < 1) return `${v.toFixed(2)} ms`;
    if (v < 1000) return `${Math.round(v)} ms`;
    if (v < 60000) return `${(v / 1000).toFixed(v < 10000 ? 2 : 1)} s`;
    return fmtSeconds(v / 1000);
  }
  function fmtSeconds(s) {
    if (s == null) return '—';
    if (s < 60) return `${s.toFixed(1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${Math.round(s % 60)}s`;
    return `${Math.floor(m / 60)}h ${m % 60}m`;
  }
  function fmtChange(a, b) {
    if (a == null || b == null || a === 0) return '';
    const pct = ((b - a) / Math.abs(a)) * 100;
    return `${pct >= 0 ? '+' : '−'}${Math.abs(pct).toFixed(1)}%`;
  }
  const fmtSigned = (v) => (v == null ? '—' : (v > 0 ? '+' : v < 0 ? '−' : '') + fmtNum(Math.abs(v)));
  // Shell-quote so a command line can be pasted back into a terminal.
  const shellJoin = (args) => (Array.isArray(args)
    ? args.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${String(a).replace(/'/g, "'\\''")}'`)).join(' ')
    : String(args ?? ''));
  const asText = (v) => (v == null ? '' : typeof v === 'string' ? v : JSON.stringify(v, null, 2));
  function prettyMaybeJson(text) {
    if (typeof text !== 'string') return asText(text);
    const t = text.trim();
    if (!(t.startsWith('{') || t.startsWith('['))) return text;
    try { return JSON.stringify(JSON.parse(t), null, 2); } catch { return text; }
  }

  // --- data tags ----------------------------------------------------------------------------

  // JSON tags decode synchronously, so the summary and first page of rows exist before the
  // load event (a plain `chromium --dump-dom` sees them). gzip tags return a Promise.
  function decodeTag(el) {
    const encoding = el.dataset.encoding || 'json';
    if (encoding === 'json') return JSON.parse(el.textContent);
    if (encoding === 'gzip-base64') return gunzipJson(el.textContent);
    throw new Error(`#${el.id}: unknown data-encoding "${encoding}"`);
  }

  async function gunzipJson(b64) {
    const bytes = Uint8Array.fromBase64
      ? Uint8Array.fromBase64(b64.trim())
      : Uint8Array.from(atob(b64.trim()), (c) => c.charCodeAt(0));
    // Blob + Response keep the decompression off the main thread's JS and need no network.
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
    return JSON.parse(await new Response(stream).text());
  }

  const chunkCache = new Map(); // chunk number -> Promise<record[]>, in least-recent-first order
  function loadChunk(k) {
    let p = chunkCache.get(k);
    if (p) {
      chunkCache.delete(k);
    } else {
      const el = byId(`lfeval-chunk-${k}`);
      p = el ? Promise.resolve().then(() => decodeTag(el)) : Promise.reject(new Error(`chunk ${k} is missing`));
    }
    chunkCache.set(k, p);
    while (chunkCache.size > CHUNKS_KEPT) chunkCache.delete(chunkCache.keys().next().value);
    return p;
  }
  async function loadRecord(row) {
    const size = D.meta.chunks.size;
    const records = await loadChunk(Math.floor(row / size));
    return records[row % size];
  }

  // --- state --------------------------------------------------------------------------------

  const D = { meta: null, idx: null, cmp: null };      // the three decoded data tags
  const F = { terms: [], spec: -1, status: '', error: 0, score: -1, min: null, max: null, value: -1 };
  const V = { rows: null, page: 0, pageSize: 50, sort: null, current: -1 };
  const derived = {}; // per-index facts computed once: score ranges, presence, lookups

  function prepareIndex() {
    const idx = D.idx;
    derived.all = Int32Array.from({ length: idx.n }, (_, i) => i);
    derived.hasCost = Array.isArray(idx.cost) && idx.cost.some((v) => v != null);
    derived.scores = idx.scores.map((col) => {
      // Global range, so histogram bins stay put while filters change.
      let lo = Infinity, hi = -Infinity, integral = true;
      const distinct = new Set();
      const presentIn = new Set();
      col.values.forEach((v, i) => {
        if (v == null) return;
        presentIn.add(idx.spec[i]);
        if (col.type !== 'number') return;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
        if (integral && !Number.isInteger(v)) integral = false;
        if (distinct.size <= 12) distinct.add(v);
      });
      const discrete = col.type === 'number' && integral && distinct.size <= 12;
      return { lo, hi, discrete, levels: discrete ? [...distinct].sort((a, b) => a - b) : null, presentIn };
    });
  }

  let haystack = null; // lower-cased "id input output" per row, built on the first search
  function getHaystack() {
    if (!haystack) {
      const { id, input, output } = D.idx;
      haystack = id.map((v, i) => `${v}\n${input[i] ?? ''}\n${output[i] ?? ''}`.toLowerCase());
    }
    return haystack;
  }

  let rowLookup = null;
  function findRow(spec, id) {
    if (!rowLookup) {
      rowLookup = new Map();
      const { spec: specs, id: ids } = D.idx;
      for (let i = 0; i < D.idx.n; i++) rowLookup.set(`${D.meta.specs[specs[i]].key}\n${ids[i]}`, i);
    }
    return rowLookup.get(`${spec}\n${id}`);
  }
  const specKey = (row) => D.meta.specs[D.idx.spec[row]].key;
  const sampleHash = (spec, id) => `#sample=${encodeURIComponent(spec)}/${encodeURIComponent(id)}`;

  // --- filtering ----------------------------------------------------------------------------

  // `skip` leaves one dimension out, so a chart can show the spread of the very field it filters.
  function predicates(skip) {
    const idx = D.idx, p = [];
    if (F.spec >= 0) { const c = idx.spec, v = F.spec; p.push((i) => c[i] === v); }
    if (F.status) {
      const pass = idx.pass, err = idx.error;
      p.push({
        pass: (i) => pass[i] === 1 && err[i] === 0,
        fail: (i) => pass[i] === 0 && err[i] === 0,
        error: (i) => err[i] !== 0,
        noerror: (i) => err[i] === 0,
      }[F.status]);
    }
    if (F.error > 0 && skip !== 'error') { const c = idx.error, v = F.error; p.push((i) => c[i] === v); }
    if (F.score >= 0 && skip !== `score:${F.score}`) {
      const col = idx.scores[F.score].values;
      if (idx.scores[F.score].type === 'category') {
        if (F.value >= 0) { const v = F.value; p.push((i) => col[i] === v); }
        else p.push((i) => col[i] != null);
      } else {
        const lo = F.min ?? -Infinity, hi = F.max ?? Infinity;
        p.push((i) => col[i] != null && col[i] >= lo && col[i] <= hi);
      }
    }
    if (F.terms.length) {
      const hay = getHaystack(), terms = F.terms;
      p.push((i) => terms.every((t) => hay[i].includes(t)));
    }
    return p;
  }

  function select(skip) {
    const preds = predicates(skip);
    if (!preds.length) return derived.all;
    const n = D.idx.n, out = new Int32Array(n);
    let k = 0;
    outer: for (let i = 0; i < n; i++) {
      for (const f of preds) if (!f(i)) continue outer;
      out[k++] = i;
    }
    return out.subarray(0, k);
  }

  function sortValue(key) {
    const idx = D.idx;
    if (key === 'id') return idx.id;
    if (key === 'spec') return idx.spec;
    if (key === 'latency') return idx.latency.total;
    if (key === 'cost') return idx.cost;
    if (key === 'status') return idx.pass.map((p, i) => (idx.error[i] ? -1 : p));
    if (key.startsWith('score:')) return idx.scores[Number(key.slice(6))].values;
    return null;
  }

  function sorted(rows) {
    if (!V.sort) return rows;
    const values = sortValue(V.sort.key), dir = V.sort.dir;
    const out = Int32Array.from(rows);
    // Missing values sort last in both directions: they are never the interesting end.
    return out.sort((a, b) => {
      const x = values[a], y = values[b];
      if (x == null || y == null) return x == null ? (y == null ? a - b : 1) : -1;
      return x < y ? -dir : x > y ? dir : a - b;
    });
  }

  function applyFilters({ keepPage = false } = {}) {
    V.rows = sorted(select());
    if (!keepPage) V.page = 0;
    renderTable();
    renderCharts();
  }

  // --- header, results, provenance (from meta alone) ----------------------------------------

  function renderHeader() {
    const { meta } = D, t = meta.totals || {}, p = meta.provenance || {};
    document.title = `${meta.title || p.evaluation || 'run'} · lfeval report`;
    fill(byId('report-title'), meta.title || p.evaluation || 'Evaluation report');
    fill(byId('report-subtitle'), [p.started_at && `started ${p.started_at}`, p.run_dir, p.lfeval_version && `lfeval ${p.lfeval_version}`]
      .filter(Boolean).join(' · '));
    const judged = (t.passed ?? 0) + specsSum('failed');
    const facts = [
      ['Samples', fmtInt(t.samples)],
      ['Errored', fmtInt(t.errored)],
      judged ? ['Pass rate', fmtPct(t.passed / judged)] : null,
      t.cost_usd != null ? ['Cost', fmtUsd(t.cost_usd) + (t.cost_complete === false ? '+' : ''),
        t.cost_complete === false ? 'Some specifications have no price; their cost is not included' : null] : null,
      p.wall_time_s != null ? ['Wall time', fmtSeconds(p.wall_time_s)] : null,
    ].filter(Boolean);
    fill(byId('headline'), facts.map(([k, v, title]) => h('div', { title }, h('dt', { text: k }), h('dd', { text: v }))));
  }
  const specsSum = (field) => D.meta.specs.reduce((s, x) => s + (x[field] ?? 0), 0);

  function metricLabel(m) {
    const parts = [m.scorer, m.metric];
    if (m.name && m.name !== m.metric) parts.push(m.name);
    return parts.filter(Boolean).join(' · ');
  }

  function ciBar(m) {
    // Only for values on a 0..1 scale, where the bar's position means something at a glance.
    if (!m.ci || m.value == null || m.ci[0] < 0 || m.ci[1] > 1) return null;
    const x = (v) => 2 + v * 76;
    return svg('svg', { class: 'ci-bar', width: 80, height: 10, viewBox: '0 0 80 10', 'aria-hidden': 'true' },
      svg('line', { class: 'track', x1: 2, x2: 78, y1: 5, y2: 5 }),
      svg('line', { class: 'interval', x1: x(m.ci[0]), x2: x(m.ci[1]), y1: 5, y2: 5 }),
      svg('circle', { class: 'point', cx: x(m.value), cy: 5, r: 2.5 }));
  }

  function renderResults() {
    const table = h('table', { class: 'results' },
      h('caption', { class: 'sr-only', text: 'Metrics per specification, with 95% confidence intervals' }),
      h('thead', null, h('tr', null,
        h('th', { scope: 'col', text: 'Metric' }), h('th', { scope: 'col', class: 'num', text: 'Value' }),
        h('th', { scope: 'col', text: '95% CI' }), h('th', { scope: 'col', class: 'num', text: 'n' }),
        h('th', { scope: 'col', class: 'num', title: 'Samples of this specification with no value for the metric because they errored', text: 'Failures' }))));
    for (const spec of D.meta.specs) {
      const judged = (spec.passed ?? 0) + (spec.failed ?? 0);
      const facts = [
        spec.model && `model ${spec.model}`, spec.dataset && `dataset ${spec.dataset}`,
        `${fmtInt(spec.samples)} samples`, `${fmtInt(spec.errored)} errored`,
        judged ? `pass rate ${fmtPct(spec.passed / judged)}` : null,
        spec.latency_ms?.p50 != null ? `p50 ${fmtMs(spec.latency_ms.p50)}` : null,
        spec.cost_usd != null ? fmtUsd(spec.cost_usd) : null,
      ].filter(Boolean);
      const body = h('tbody', { id: `spec-${spec.key}` },
        h('tr', { class: 'group-head' }, h('th', { colspan: 5, scope: 'rowgroup' },
          h('strong', { text: spec.display_name || spec.key }), h('code', { text: spec.key }), ' ',
          spec.status && spec.status !== 'completed' ? h('span', { class: 'badge neutral', text: spec.status.replace('_', ' ') }) : null,
          ' ', h('span', { class: 'facts' }, facts.map((f) => h('span', { text: f }))))));
      for (const m of spec.metrics || []) {
        body.append(h('tr', null,
          h('th', { scope: 'row', style: 'font-weight:400' }, metricLabel(m)),
          h('td', { class: 'num' }, h('strong', { text: fmtNum(m.value) })),
          h('td', { class: 'ci' }, m.ci ? `[${fmtNum(m.ci[0])}, ${fmtNum(m.ci[1])}]` : '—', ciBar(m)),
          h('td', { class: 'num', text: fmtInt(m.n) }),
          h('td', { class: 'num', text: fmtInt(m.failures) })));
      }
      for (const e of spec.metric_errors || []) {
        body.append(h('tr', null, h('th', { scope: 'row', style: 'font-weight:400' }, metricLabel(e)),
          h('td', { colspan: 4 }, h('span', { class: 'badge error', text: 'metric error' }), ' ', e.message)));
      }
      if (!(spec.metrics || []).length && !(spec.metric_errors || []).length) {
        body.append(h('tr', null, h('td', { colspan: 5, class: 'muted', text: 'No metrics.' })));
      }
      table.append(body);
    }
    fill(byId('results-body'), table);
  }

  function provenanceList(p) {
    const known = [
      ['lfeval version', p.lfeval_version], ['Evaluation', p.evaluation],
      ['Run directory', p.run_dir && h('code', { text: p.run_dir })],
      ['Config fingerprint', p.config_fingerprint && h('code', { text: p.config_fingerprint })],
      ['Command line', p.command_line && h('code', { text: shellJoin(p.command_line) })],
      ['Started', p.started_at], ['Ended', p.ended_at],
      ['Wall time', p.wall_time_s != null ? `${fmtSeconds(p.wall_time_s)} (${fmtNum(p.wall_time_s)} s)` : null],
      ['Git revision', p.git_sha && h('code', { text: p.git_sha })],
    ];
    // Fields added later by lfeval still show up, without a release of this page.
    const shown = new Set(['lfeval_version', 'evaluation', 'run_dir', 'config_fingerprint', 'command_line',
      'started_at', 'ended_at', 'wall_time_s', 'git_sha', 'datasets']);
    for (const [k, v] of Object.entries(p)) {
      if (!shown.has(k) && v != null && typeof v !== 'object') known.push([k.replace(/_/g, ' '), String(v)]);
    }
    return h('dl', { class: 'prov' }, known.filter(([, v]) => v != null && v !== '')
      .map(([k, v]) => [h('dt', { text: k }), h('dd', null, v)]));
  }

  function datasetTable(datasets) {
    if (!datasets?.length) return null;
    return h('div', { class: 'table-wrap' }, h('table', null,
      h('caption', { class: 'sr-only', text: 'Datasets and their content hashes' }),
      h('thead', null, h('tr', null, ['Dataset', 'Path', 'Rows', 'SHA-256'].map((t, i) =>
        h('th', { scope: 'col', class: i === 2 ? 'num' : null, text: t })))),
      h('tbody', null, datasets.map((d) => h('tr', null,
        h('td', { text: d.key ?? '' }), h('td', null, h('code', { text: d.path ?? '' })),
        h('td', { class: 'num', text: fmtInt(d.rows) }), h('td', null, h('code', { text: d.sha256 ?? '' })))))));
  }

  function renderProvenance() {
    const p = D.meta.provenance || {};
    fill(byId('provenance-body'), provenanceList(p), datasetTable(p.datasets),
      D.meta.generated_at ? h('p', { class: 'muted', text: `Report generated ${D.meta.generated_at}.` }) : null);
  }

  // --- filters ------------------------------------------------------------------------------

  function setupFilters() {
    const idx = D.idx, meta = D.meta;
    const specSel = byId('f-spec'), errSel = byId('f-error'), scoreSel = byId('f-score');
    meta.specs.forEach((s, i) => specSel.append(h('option', { value: i, text: s.display_name || s.key })));
    const counts = new Array(idx.error_classes.length + 1).fill(0);
    for (const e of idx.error) counts[e]++;
    idx.error_classes.forEach((c, i) => errSel.append(h('option', { value: i + 1, text: `${c} (${fmtInt(counts[i + 1])})` })));
    idx.scores.forEach((c, i) => scoreSel.append(h('option', { value: i, text: c.key })));

    let timer = 0;
    byId('f-search').addEventListener('input', (ev) => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        F.terms = ev.target.value.toLowerCase().split(/\s+/).filter(Boolean);
        applyFilters();
      }, 120);
    });
    specSel.addEventListener('change', () => { F.spec = specSel.value === '' ? -1 : Number(specSel.value); applyFilters(); });
    byId('f-status').addEventListener('change', (ev) => { F.status = ev.target.value; applyFilters(); });
    errSel.addEventListener('change', () => { F.error = Number(errSel.value || 0); applyFilters(); });
    scoreSel.addEventListener('change', () => setScoreFilter(scoreSel.value === '' ? -1 : Number(scoreSel.value)));
    const num = (el) => (el.value === '' || Number.isNaN(el.valueAsNumber) ? null : el.valueAsNumber);
    for (const id of ['f-min', 'f-max']) {
      byId(id).addEventListener('input', () => { F.min = num(byId('f-min')); F.max = num(byId('f-max')); applyFilters(); });
    }
    byId('f-value').addEventListener('change', (ev) => { F.value = Number(ev.target.value); applyFilters(); });
    const form = byId('filters');
    form.addEventListener('submit', (ev) => ev.preventDefault());
    form.addEventListener('reset', () => setTimeout(() => {
      Object.assign(F, { terms: [], spec: -1, status: '', error: 0, score: -1, min: null, max: null, value: -1 });
      syncScoreInputs();
      applyFilters();
    }));
    byId('page-size').addEventListener('change', (ev) => { V.pageSize = Number(ev.target.value); applyFilters(); });
    byId('pager').addEventListener('click', (ev) => {
      const which = ev.target.closest('button[data-page]')?.dataset.page;
      if (!which) return;
      const last = Math.max(0, Math.ceil(V.rows.length / V.pageSize) - 1);
      V.page = { first: 0, prev: Math.max(0, V.page - 1), next: Math.min(last, V.page + 1), last }[which];
      renderTable();
    });
    document.addEventListener('keydown', (ev) => {
      if (ev.key === '/' && !isTyping(ev.target) && !byId('sample-view').open) {
        ev.preventDefault();
        byId('f-search').focus();
      }
    });
  }
  const isTyping = (el) => el && (el.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName));

  // Chart clicks and the form both end here, so the inputs always show the active filter.
  function setScoreFilter(score, { min = null, max = null, value = -1 } = {}) {
    Object.assign(F, { score, min, max, value });
    syncScoreInputs();
    applyFilters();
  }
  function syncScoreInputs() {
    const col = F.score >= 0 ? D.idx.scores[F.score] : null;
    byId('f-score').value = F.score >= 0 ? String(F.score) : '';
    byId('f-range').hidden = !col || col.type === 'category';
    byId('f-value-wrap').hidden = !col || col.type !== 'category';
    byId('f-min').value = F.min ?? '';
    byId('f-max').value = F.max ?? '';
    if (col?.type === 'category') {
      fill(byId('f-value'), h('option', { value: -1, text: 'Any' }),
        col.categories.map((c, i) => h('option', { value: i, text: c })));
      byId('f-value').value = String(F.value);
    }
    byId('f-error').value = F.error ? String(F.error) : '';
  }

  // --- sample table -------------------------------------------------------------------------

  function tableColumns() {
    const cols = [];
    if (D.meta.specs.length > 1 && F.spec < 0) cols.push({ key: 'spec', label: 'Spec', sort: 'spec' });
    cols.push({ key: 'id', label: 'ID', sort: 'id' }, { key: 'status', label: 'Status', sort: 'status' },
      { key: 'input', label: 'Input' }, { key: 'output', label: 'Output' });
    const present = D.idx.scores.map((_, i) => i).filter((i) => F.spec < 0 || derived.scores[i].presentIn.has(F.spec));
    if (present.length > 3) {
      // Specs with different scorers side by side would leave most score cells empty; one
      // compact column keeps the input and output readable. Pick a spec for sortable columns.
      cols.push({ key: 'scores', label: 'Scores', present });
    } else {
      for (const i of present) cols.push({ key: `score:${i}`, label: D.idx.scores[i].key, sort: `score:${i}`, num: true });
    }
    cols.push({ key: 'latency', label: 'Latency', sort: 'latency', num: true });
    if (derived.hasCost) cols.push({ key: 'cost', label: 'Cost', sort: 'cost', num: true });
    return cols;
  }

  function statusBadge(row) {
    const idx = D.idx, err = idx.error[row];
    if (err) return h('span', { class: 'badge error', title: idx.error_classes[err - 1] }, 'error');
    const pass = idx.pass[row];
    if (pass === 1) return h('span', { class: 'badge pass', text: 'pass' });
    if (pass === 0) return h('span', { class: 'badge fail', text: 'fail' });
    return h('span', { class: 'badge neutral', text: 'ok' });
  }

  function scoreText(i, row) {
    const col = D.idx.scores[i], v = col.values[row];
    if (v == null) return '—';
    return col.type === 'category' ? col.categories[v] : fmtNum(v);
  }

  function cell(col, row) {
    const idx = D.idx;
    switch (col.key) {
      case 'spec': return h('td', { class: 'spec', text: specKey(row) });
      case 'id': return h('td', { class: 'id mono' }, h('a', { href: sampleHash(specKey(row), idx.id[row]) }, idx.id[row]));
      case 'status': {
        const badge = statusBadge(row);
        const err = idx.error[row];
        return h('td', { class: 'status' }, badge, err ? h('span', { class: 'muted', style: 'margin-left:6px' }, idx.error_classes[err - 1]) : null);
      }
      case 'input': return h('td', { class: 'text', title: idx.input[row] }, idx.input[row]);
      case 'output': return h('td', { class: 'text', title: idx.output[row] }, idx.output[row]);
      case 'latency': return h('td', { class: 'num', text: fmtMs(idx.latency.total[row]) });
      case 'cost': return h('td', { class: 'num', text: fmtUsd(idx.cost[row]) });
      case 'scores': {
        const parts = col.present.filter((i) => idx.scores[i].values[row] != null)
          .map((i) => `${idx.scores[i].field ?? idx.scores[i].key} ${scoreText(i, row)}`);
        return h('td', { class: 'scores', title: col.present.filter((i) => idx.scores[i].values[row] != null)
          .map((i) => `${idx.scores[i].key} = ${scoreText(i, row)}`).join('\n') }, parts.join(' · ') || '—');
      }
      default: return h('td', { class: 'num', text: scoreText(Number(col.key.slice(6)), row) });
    }
  }

  function renderTable() {
    const table = byId('samples-table'), cols = tableColumns();
    const total = V.rows.length, pages = Math.max(1, Math.ceil(total / V.pageSize));
    V.page = Math.min(V.page, pages - 1);
    const start = V.page * V.pageSize, end = Math.min(total, start + V.pageSize);

    fill(table.tHead, h('tr', null, cols.map((c) => {
      const sort = c.sort && V.sort?.key === c.sort ? (V.sort.dir > 0 ? 'ascending' : 'descending') : null;
      return h('th', { scope: 'col', class: c.num ? 'num' : null, 'aria-sort': sort },
        c.sort ? h('button', { type: 'button', class: 'sort', 'data-sort': c.sort, title: `Sort by ${c.label}` }, c.label) : c.label);
    })));
    const body = [];
    for (let k = start; k < end; k++) {
      const row = V.rows[k];
      body.push(h('tr', { 'data-row': row, class: row === V.current ? 'current' : null }, cols.map((c) => cell(c, row))));
    }
    if (!total) body.push(h('tr', null, h('td', { colspan: cols.length, class: 'empty', text: 'No samples match the filters.' })));
    fill(table.tBodies[0], body);
    // Stable hooks for tests and scripts, independent of how the counts are worded.
    table.dataset.matches = total;
    table.dataset.page = V.page;

    const n = D.idx.n;
    fill(byId('samples-count'), total === n
      ? `${fmtInt(n)} samples`
      : `${fmtInt(total)} of ${fmtInt(n)} samples match`);
    fill(byId('page-status'), total ? `Rows ${fmtInt(start + 1)}–${fmtInt(end)} · page ${fmtInt(V.page + 1)} of ${fmtInt(pages)}` : 'No rows');
    const pager = byId('pager');
    pager.querySelector('[data-page=first]').disabled = pager.querySelector('[data-page=prev]').disabled = V.page === 0;
    pager.querySelector('[data-page=last]').disabled = pager.querySelector('[data-page=next]').disabled = V.page >= pages - 1;
  }

  function setupTable() {
    const table = byId('samples-table');
    table.tHead.addEventListener('click', (ev) => {
      const key = ev.target.closest('button.sort')?.dataset.sort;
      if (!key) return;
      // Three states: ascending, descending, then back to run order.
      V.sort = V.sort?.key !== key ? { key, dir: 1 } : V.sort.dir > 0 ? { key, dir: -1 } : null;
      V.rows = sorted(select());
      renderTable();
      table.tHead.querySelector(`button[data-sort="${key}"]`)?.focus();
    });
    // The whole row is a mouse target; the ID link is the keyboard one.
    table.tBodies[0].addEventListener('click', (ev) => {
      const tr = ev.target.closest('tr[data-row]');
      if (!tr || ev.target.closest('a')) return;
      const row = Number(tr.dataset.row);
      location.hash = sampleHash(specKey(row), D.idx.id[row]);
    });
  }

  // --- charts -------------------------------------------------------------------------------

  function renderCharts() {
    const cache = new Map();
    const rowsFor = (skip) => {
      if (!cache.has(skip)) cache.set(skip, select(skip));
      return cache.get(skip);
    };
    if (!D.idx.n) {
      fill(byId('charts-scope'));
      fill(byId('charts-body'), h('p', { class: 'muted', text: 'This run has no samples.' }));
      return;
    }
    const main = rowsFor(null);
    fill(byId('charts-scope'), main.length === D.idx.n
      ? `All ${fmtInt(main.length)} samples`
      : `${fmtInt(main.length)} samples matching the filters`);
    const cards = [];
    cards.push(latencyCard(main));
    D.idx.scores.forEach((col, i) => {
      if (F.spec >= 0 && !derived.scores[i].presentIn.has(F.spec)) return;
      const rows = rowsFor(`score:${i}`);
      cards.push(col.type === 'category' ? categoryCard(i, rows) : histogramCard(i, rows));
    });
    cards.push(errorsCard(rowsFor('error')));
    fill(byId('charts-body'), cards);
  }

  function card(title, note, ...body) {
    return h('section', { class: 'card' }, h('h3', null, h('span', { text: title }), note ? h('span', { class: 'muted', text: note }) : null), body);
  }

  // Bars as one SVG; each bin carries a <title> tooltip and, when pickable, a click target.
  // The viewBox width should match the drawn width roughly, or the labels scale with the card.
  function barChart(bins, { label, xLabels, onPick, width = 360, height = 130 }) {
    const W = width, H = height, L = 34, B = 18, T = 6;
    const max = Math.max(1, ...bins.map((b) => b.count));
    const bw = (W - L) / Math.max(1, bins.length);
    const y = (v) => T + (H - T - B) * (1 - v / max);
    const root = svg('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': label },
      svg('line', { class: 'axis', x1: L, x2: W, y1: H - B, y2: H - B }),
      svg('text', { x: L - 4, y: T + 8, 'text-anchor': 'end', text: fmtInt(max) }),
      svg('text', { x: L - 4, y: H - B, 'text-anchor': 'end', text: '0' }));
    bins.forEach((b, i) => {
      const x = L + i * bw + 1, w = Math.max(1, bw - 2);
      const g = svg('g', { class: 'bin' }, svg('title', { text: b.title }));
      if (b.segments) {
        let acc = 0;
        for (const s of b.segments) {
          if (s.value <= 0) continue;
          g.append(svg('rect', { class: s.cls, x, width: w, y: y(acc + s.value), height: Math.max(0, y(acc) - y(acc + s.value)) }));
          acc += s.value;
        }
      } else {
        g.append(svg('rect', { class: `bar${b.off ? ' off' : ''}`, x, width: w, y: y(b.count), height: Math.max(b.count ? 1 : 0, H - B - y(b.count)) }));
      }
      if (onPick) {
        g.append(svg('rect', { class: 'hit', x: x - 1, width: bw, y: T, height: H - B - T }));
        g.addEventListener('click', () => onPick(b));
      }
      root.append(g);
    });
    xLabels.forEach(([pos, text], k) => root.append(svg('text', {
      x: L + pos * (W - L), y: H - 4, text,
      'text-anchor': k === 0 ? 'start' : k === xLabels.length - 1 ? 'end' : 'middle',
    })));
    return root;
  }

  function histogramCard(i, rows) {
    const col = D.idx.scores[i], d = derived.scores[i], values = col.values;
    let bins;
    if (d.lo > d.hi) return card(col.key, 'no values', h('p', { class: 'muted', text: 'No sample has this score.' }));
    if (d.discrete) {
      const at = new Map(d.levels.map((v, k) => [v, k]));
      bins = d.levels.map((v) => ({ lo: v, hi: v, count: 0, title: '' }));
      for (let j = 0; j < rows.length; j++) { const v = values[rows[j]]; if (v != null) bins[at.get(v)].count++; }
      bins.forEach((b) => { b.title = `${fmtNum(b.lo)}: ${fmtInt(b.count)} samples`; });
    } else {
      const N = 20, width = (d.hi - d.lo) / N || 1;
      bins = Array.from({ length: N }, (_, k) => ({ lo: d.lo + k * width, hi: d.lo + (k + 1) * width, count: 0 }));
      for (let j = 0; j < rows.length; j++) {
        const v = values[rows[j]];
        if (v != null) bins[Math.min(N - 1, Math.floor((v - d.lo) / width))].count++;
      }
      bins.forEach((b) => { b.title = `${fmtNum(b.lo)} – ${fmtNum(b.hi)}: ${fmtInt(b.count)} samples`; });
    }
    const active = F.score === i;
    if (active) bins.forEach((b) => { b.off = (F.min != null && b.hi < F.min) || (F.max != null && b.lo > F.max); });
    let n = 0, sum = 0;
    for (let j = 0; j < rows.length; j++) { const v = values[rows[j]]; if (v != null) { n++; sum += v; } }
    const xLabels = d.discrete
      ? bins.map((b, k) => [(k + 0.5) / bins.length, fmtNum(b.lo)])
      : [[0, fmtNum(d.lo)], [0.5, fmtNum((d.lo + d.hi) / 2)], [1, fmtNum(d.hi)]];
    const chart = barChart(bins, {
      label: `Histogram of ${col.key} over ${fmtInt(n)} samples, mean ${fmtNum(n ? sum / n : null)}`,
      xLabels,
      onPick: (b) => setScoreFilter(i, { min: b.lo, max: b.hi }),
    });
    return card(col.key, `n ${fmtInt(n)} · mean ${fmtNum(n ? sum / n : null)}`, chart,
      active ? h('button', { type: 'button', class: 'btn link', onclick: () => setScoreFilter(-1), text: 'Clear score filter' }) : null);
  }

  // Horizontal bars in a real table: readable by screen readers and clickable by keyboard.
  function barTable(caption, items, { total, onPick, barClass = 'hbar accent', label = 'Value' }) {
    const max = Math.max(1, ...items.map((x) => x.count));
    return h('table', { class: 'compact' }, h('caption', { class: 'sr-only', text: caption }),
      h('thead', null, h('tr', null, h('th', { scope: 'col', text: label }), h('th', { scope: 'col', class: 'num', text: 'Samples' }),
        h('th', { scope: 'col', text: 'Share' }))),
      h('tbody', null, items.map((x) => h('tr', null,
        h('th', { scope: 'row', style: 'font-weight:400' }, onPick
          ? h('button', { type: 'button', class: 'btn link', onclick: () => onPick(x), title: `Filter by ${x.label}`, 'aria-pressed': x.active ? 'true' : 'false' }, x.label)
          : x.label),
        h('td', { class: 'num', text: fmtInt(x.count) }),
        h('td', { style: 'width:45%' }, h('span', { class: 'hbar-track', title: total ? fmtPct(x.count / total) : '' },
          h('span', { class: barClass, style: `width:${((x.count / max) * 100).toFixed(1)}%` })))))));
  }

  function categoryCard(i, rows) {
    const col = D.idx.scores[i], counts = new Array(col.categories.length).fill(0);
    let n = 0;
    for (const r of rows) { const v = col.values[r]; if (v != null) { counts[v]++; n++; } }
    const items = col.categories.map((c, k) => ({ label: c, count: counts[k], k, active: F.score === i && F.value === k }));
    return card(col.key, `n ${fmtInt(n)}`, barTable(`Distribution of ${col.key}`, items, {
      total: n, onPick: (x) => setScoreFilter(i, { value: x.k }),
    }));
  }

  function errorsCard(rows) {
    const idx = D.idx, counts = new Array(idx.error_classes.length + 1).fill(0);
    for (const r of rows) counts[idx.error[r]]++;
    const errored = rows.length - counts[0];
    const items = idx.error_classes.map((c, k) => ({ label: c, count: counts[k + 1], k: k + 1, active: F.error === k + 1 }))
      .filter((x) => x.count > 0).sort((a, b) => b.count - a.count);
    const body = items.length
      ? barTable('Errored samples by error class', items, {
        total: errored, barClass: 'hbar', label: 'Class',
        onPick: (x) => { F.error = F.error === x.k ? 0 : x.k; syncScoreInputs(); applyFilters(); },
      })
      : h('p', { class: 'muted', text: 'No errors among these samples.' });
    return card('Errors by class', `${fmtInt(errored)} errored (${fmtPct(rows.length ? errored / rows.length : 0)})`, body);
  }

  // The q-quantile (nearest rank) by quickselect: sorting seven 100k-element columns on every
  // filter change took ~190 ms; selecting takes a few. Reorders `a` in place.
  function quantile(a, q) {
    const n = a.length;
    if (!n) return null;
    const k = Math.min(n - 1, Math.floor(q * n));
    let lo = 0, hi = n - 1;
    while (lo < hi) {
      const pivot = a[(lo + hi) >> 1];
      let i = lo, j = hi;
      while (i <= j) {
        while (a[i] < pivot) i++;
        while (a[j] > pivot) j--;
        if (i <= j) { const t = a[i]; a[i] = a[j]; a[j] = t; i++; j--; }
      }
      if (k <= j) hi = j; else if (k >= i) lo = i; else break;
    }
    return a[k];
  }

  function latencyCard(rows) {
    const lat = D.idx.latency, parts = lat.parts, P = parts.length, total = lat.total;
    const labels = [...parts.map((p) => p.label || p.key), 'Other'];
    const partCls = labels.map((_, k) => (k === P ? 'lat-6' : `lat-${k % 6}`));
    if (!rows.length) return h('section', { class: 'card wide' }, h('h3', { text: 'Latency' }), h('p', { class: 'muted', text: 'No samples.' }));

    // Log-spaced bins when latencies span orders of magnitude, as they do once retries happen.
    let lo = Infinity, hi = -Infinity;
    for (const r of rows) { const v = total[r]; if (v != null) { if (v < lo) lo = v; if (v > hi) hi = v; } }
    const N = 24, log = lo > 0 && hi / lo > 20;
    const edge = log ? (k) => lo * (hi / lo) ** (k / N) : (k) => lo + ((hi - lo) * k) / N;
    const binOf = log
      ? (v) => Math.min(N - 1, Math.max(0, Math.floor((Math.log(v / lo) / Math.log(hi / lo)) * N)))
      : (v) => Math.min(N - 1, Math.max(0, Math.floor(((v - lo) / ((hi - lo) || 1)) * N)));
    const bins = Array.from({ length: N }, (_, k) => ({ count: 0, time: 0, parts: new Float64Array(P), lo: edge(k), hi: edge(k + 1) }));
    const columns = [...lat.values.map(() => new Float64Array(rows.length)), new Float64Array(rows.length)];
    const totals = new Float64Array(rows.length);
    for (let j = 0; j < rows.length; j++) {
      const r = rows[j], t = total[r] ?? 0;
      const b = bins[t > 0 || !log ? binOf(t) : 0];
      b.count++;
      b.time += t;
      let known = 0;
      for (let k = 0; k < P; k++) {
        const v = lat.values[k][r] ?? 0;
        b.parts[k] += v;
        columns[k][j] = v;
        known += v;
      }
      columns[P][j] = Math.max(0, t - known);
      totals[j] = t;
    }
    for (const b of bins) {
      // Bar height is the sample count; its colours split it by where the time went.
      const known = b.parts.reduce((s, v) => s + v, 0), denom = Math.max(b.time, known) || 1;
      b.segments = [...b.parts].map((v, k) => ({ cls: partCls[k], value: (b.count * v) / denom }));
      b.segments.push({ cls: partCls[P], value: (b.count * Math.max(0, b.time - known)) / denom });
      const shares = labels.map((l, k) => `${l} ${fmtPct(b.segments[k].value / (b.count || 1))}`).join(', ');
      b.title = `${fmtMs(b.lo)} – ${fmtMs(b.hi)}: ${fmtInt(b.count)} samples${b.count ? ` (${shares})` : ''}`;
    }
    const chart = barChart(bins, {
      label: `Histogram of sample latency over ${fmtInt(rows.length)} samples, split by component`,
      xLabels: [[0, fmtMs(lo)], [0.5, fmtMs(edge(N / 2))], [1, fmtMs(hi)]],
      width: 720,
      height: 220,
    });
    const timeSum = totals.reduce((s, v) => s + v, 0) || 1;
    const stat = (col) => {
      let sum = 0;
      for (let j = 0; j < col.length; j++) sum += col[j];
      const p50 = quantile(col, 0.5), p95 = quantile(col, 0.95); // reorders col: last use
      return [fmtMs(sum / col.length), fmtMs(p50), fmtMs(p95), fmtPct(sum / timeSum)];
    };
    const table = h('table', { class: 'compact' },
      h('caption', { class: 'sr-only', text: 'Latency by component' }),
      h('thead', null, h('tr', null, ['Component', 'Mean', 'p50', 'p95', 'Share'].map((t, k) => h('th', { scope: 'col', class: k ? 'num' : null, text: t })))),
      h('tbody', null,
        labels.map((l, k) => h('tr', null, h('th', { scope: 'row', style: 'font-weight:400' }, h('span', { class: `swatch ${partCls[k]}`, 'aria-hidden': 'true' }), l),
          stat(columns[k]).map((v) => h('td', { class: 'num', text: v })))),
        h('tr', null, h('th', { scope: 'row', text: 'Total' }), stat(totals).map((v) => h('td', { class: 'num' }, h('strong', { text: v }))))));
    return h('section', { class: 'card wide' },
      h('h3', null, h('span', { text: 'Latency' }), h('span', { class: 'muted', text: `${fmtInt(rows.length)} samples${log ? ' · log scale' : ''}` })),
      h('div', { class: 'latency-layout' },
        h('div', null, chart, h('div', { class: 'legend', 'aria-hidden': 'true' }, labels.map((l, k) => h('span', null, h('span', { class: `swatch ${partCls[k]}` }), l)))),
        table));
  }

  // --- comparison ---------------------------------------------------------------------------

  function sampleLink(spec, id, row) {
    if (row == null || row < 0) return h('code', { text: id });
    return h('a', { href: sampleHash(spec, id), class: 'mono' }, id);
  }

  // A long list drawn LIST_STEP rows at a time: thousands of flips must not mean thousands of rows.
  function growingTable(caption, headers, items, rowOf) {
    const tbody = h('tbody');
    const more = h('button', { type: 'button', class: 'btn' });
    let shown = 0;
    const grow = () => {
      const next = Math.min(items.length, shown + LIST_STEP);
      for (; shown < next; shown++) tbody.append(rowOf(items[shown]));
      more.textContent = `Show ${fmtInt(Math.min(LIST_STEP, items.length - shown))} more of ${fmtInt(items.length - shown)}`;
      more.hidden = shown >= items.length;
    };
    more.addEventListener('click', grow);
    grow();
    return h('div', null, h('div', { class: 'table-wrap' }, h('table', { class: 'compact' },
      h('caption', { class: 'sr-only', text: caption }),
      h('thead', null, h('tr', null, headers.map(([t, num]) => h('th', { scope: 'col', class: num ? 'num' : null, text: t })))),
      tbody)), h('p', null, more));
  }

  function deltaClass(m) {
    const significant = (m.delta_ci && (m.delta_ci[0] > 0 || m.delta_ci[1] < 0)) || (m.p_value != null && m.p_value < 0.05);
    if (!significant || !m.delta) return null;
    const better = m.better === 'lower' ? m.delta < 0 : m.delta > 0;
    return better ? 'delta-good' : 'delta-bad';
  }

  function renderComparison() {
    const cmp = D.cmp;
    if (!cmp) return;
    byId('comparison').hidden = false;
    byId('nav-comparison').hidden = false;
    const base = cmp.baseline || {}, bp = base.provenance || {};
    const specName = new Map(D.meta.specs.map((s) => [s.key, s.display_name || s.key]));
    const parts = [];

    parts.push(h('p', null, 'Baseline ', h('strong', { text: base.label || bp.run_dir || 'A' }),
      bp.run_dir ? [' · ', h('code', { text: bp.run_dir })] : null, bp.started_at ? ` · started ${bp.started_at}` : null,
      '. Δ is current minus baseline, over samples present in both runs.',
      cmp.unpaired && (cmp.unpaired.only_in_baseline || cmp.unpaired.only_in_current)
        ? ` Unpaired: ${fmtInt(cmp.unpaired.only_in_baseline)} only in the baseline, ${fmtInt(cmp.unpaired.only_in_current)} only in this run.` : null));

    const mt = h('table', { class: 'compact' }, h('caption', { class: 'sr-only', text: 'Metric deltas against the baseline' }),
      h('thead', null, h('tr', null, [['Metric'], ['Baseline', 1], ['Current', 1], ['Δ', 1], ['95% CI of Δ'], ['p', 1], ['Test'], ['n', 1],
        ['pass→fail', 1], ['fail→pass', 1]].map(([t, num]) => h('th', { scope: 'col', class: num ? 'num' : null, text: t })))));
    const bySpec = new Map();
    for (const m of cmp.metrics || []) { if (!bySpec.has(m.spec)) bySpec.set(m.spec, []); bySpec.get(m.spec).push(m); }
    for (const [spec, rows] of bySpec) {
      mt.append(h('tbody', null, h('tr', { class: 'group-head' }, h('th', { colspan: 10, scope: 'rowgroup' }, h('strong', { text: specName.get(spec) || spec }), h('code', { text: spec }))),
        rows.map((m) => h('tr', null,
          h('th', { scope: 'row', style: 'font-weight:400' }, metricLabel(m)),
          h('td', { class: 'num', text: fmtNum(m.a) }), h('td', { class: 'num', text: fmtNum(m.b) }),
          h('td', { class: `num ${deltaClass(m) || ''}` }, h('strong', { text: fmtSigned(m.delta) })),
          h('td', { class: 'ci', text: m.delta_ci ? `[${fmtSigned(m.delta_ci[0])}, ${fmtSigned(m.delta_ci[1])}]` : '—' }),
          h('td', { class: 'num', text: m.p_value == null ? '—' : m.p_value < 0.001 ? '<0.001' : m.p_value.toFixed(3) }),
          h('td', { class: 'muted', text: m.test === 'mcnemar' ? 'McNemar' : (m.test || '—').replace('_', ' ') }),
          h('td', { class: 'num', text: fmtInt(m.n_paired) }),
          h('td', { class: 'num', text: fmtInt(m.pass_to_fail) }), h('td', { class: 'num', text: fmtInt(m.fail_to_pass) })))));
    }
    parts.push(h('div', { class: 'table-wrap' }, mt));

    // Regressions first: they are what a reviewer opens the comparison for.
    const flips = [...(cmp.flips || [])].sort((a, b) => (a.direction === 'pass_to_fail' ? 0 : 1) - (b.direction === 'pass_to_fail' ? 0 : 1));
    const idx = D.idx;
    const flipRow = (f) => {
      const row = f.row ?? findRow(f.spec, f.id);
      return h('tr', null, h('td', { text: f.spec }), h('td', null, sampleLink(f.spec, f.id, row)),
        h('td', null, f.direction === 'pass_to_fail' ? h('span', { class: 'badge fail', text: 'pass → fail' }) : h('span', { class: 'badge pass', text: 'fail → pass' })),
        h('td', { class: 'text', text: f.baseline?.error ? `error: ${f.baseline.error}` : f.baseline?.output ?? '' }),
        h('td', { class: 'text', text: row != null ? idx.output[row] : '' }));
    };
    const p2f = flips.filter((f) => f.direction === 'pass_to_fail'), f2p = flips.filter((f) => f.direction !== 'pass_to_fail');
    const flipHeaders = [['Spec'], ['ID'], ['Change'], ['Baseline output'], ['Current output']];
    parts.push(h('h3', { id: 'flips-h' }, `Flipped samples: ${fmtInt(p2f.length)} pass → fail, ${fmtInt(f2p.length)} fail → pass`));
    parts.push(flips.length ? h('div', { id: 'flips' }, growingTable('Samples whose pass/fail outcome changed', flipHeaders, [...p2f, ...f2p], flipRow))
      : h('p', { class: 'muted', text: 'No sample changed between pass and fail.' }));

    const errs = cmp.errors || [];
    if (errs.length) {
      const errTable = (caption, rows, first) => h('div', { class: 'table-wrap' }, h('table', { class: 'compact' }, h('caption', { class: 'sr-only', text: caption }),
        h('thead', null, h('tr', null, [[first], ['Baseline', 1], ['Current', 1], ['Δ', 1]].map(([t, num]) => h('th', { scope: 'col', class: num ? 'num' : null, text: t })))),
        h('tbody', null, rows.map((e) => h('tr', null, h('td', { text: e.label }),
          h('td', { class: 'num', text: fmtInt(e.a) }), h('td', { class: 'num', text: fmtInt(e.b) }),
          h('td', { class: `num ${e.b > e.a ? 'delta-bad' : e.b < e.a ? 'delta-good' : ''}`, text: fmtSigned(e.b - e.a) }))))));
      // One row per class, biggest change first; the spec-by-class grid is there when needed.
      const byClass = new Map();
      for (const e of errs) {
        const x = byClass.get(e.class) || { label: e.class, a: 0, b: 0 };
        x.a += e.a ?? 0; x.b += e.b ?? 0;
        byClass.set(e.class, x);
      }
      const classes = [...byClass.values()].sort((x, y) => Math.abs(y.b - y.a) - Math.abs(x.b - x.a) || y.b - x.b);
      parts.push(h('h3', { text: 'Errors by class' }), errTable('Error counts per class, baseline and current', classes, 'Class'),
        h('details', { class: 'more' }, h('summary', { text: 'Per specification' }), h('div', { class: 'inner' },
          errTable('Error counts per specification and class', errs.map((e) => ({ ...e, label: `${e.spec} · ${e.class}` })), 'Specification · class'))));
    }
    const changes = cmp.error_changes || [];
    const appeared = changes.filter((c) => c.change === 'appeared'), vanished = changes.filter((c) => c.change !== 'appeared');
    parts.push(h('h3', { text: `Errors that appeared (${fmtInt(appeared.length)}) and vanished (${fmtInt(vanished.length)})` }));
    parts.push(changes.length ? growingTable('Samples whose error status changed', [['Spec'], ['ID'], ['Change'], ['Class']], [...appeared, ...vanished],
      (c) => h('tr', null, h('td', { text: c.spec }), h('td', null, sampleLink(c.spec, c.id, c.row ?? findRow(c.spec, c.id))),
        h('td', null, h('span', { class: `badge ${c.change === 'appeared' ? 'error' : 'neutral'}`, text: c.change })), h('td', { text: c.class })))
      : h('p', { class: 'muted', text: 'No sample changed its error status.' }));

    const deltas = cmp.deltas || [], tot = cmp.totals;
    if (deltas.length || tot) {
      const ab = (x, fmt) => (x ? [`${fmt(x.a)} → ${fmt(x.b)} `, h('span', { class: 'muted', text: fmtChange(x.a, x.b) })] : '—');
      parts.push(h('h3', { text: 'Latency, tokens and cost' }));
      parts.push(h('div', { class: 'table-wrap' }, h('table', { class: 'compact' }, h('caption', { class: 'sr-only', text: 'Latency, token and cost changes per specification' }),
        h('thead', null, h('tr', null, ['Spec', 'Latency p50', 'Latency p95', 'Prompt tokens', 'Completion tokens', 'Cost'].map((t, k) => h('th', { scope: 'col', class: k ? 'num' : null, text: t })))),
        h('tbody', null, deltas.map((d) => h('tr', null, h('td', { text: d.spec }),
          h('td', { class: 'num' }, ab(d.latency_p50_ms, fmtMs)), h('td', { class: 'num' }, ab(d.latency_p95_ms, fmtMs)),
          h('td', { class: 'num' }, ab(d.prompt_tokens, fmtInt)), h('td', { class: 'num' }, ab(d.completion_tokens, fmtInt)),
          h('td', { class: 'num' }, ab(d.cost_usd, fmtUsd)))),
        tot ? h('tr', null, h('th', { scope: 'row', text: 'All specifications' }),
          h('td', { class: 'num', colspan: 2 }, tot.wall_time_s ? ['wall time ', ab(tot.wall_time_s, fmtSeconds)] : '—'),
          h('td', { class: 'num' }, ab(tot.prompt_tokens, fmtInt)), h('td', { class: 'num' }, ab(tot.completion_tokens, fmtInt)),
          h('td', { class: 'num' }, h('strong', null, ab(tot.cost_usd, fmtUsd)))) : null))));
    }
    parts.push(h('details', { class: 'more' }, h('summary', { text: 'Baseline provenance' }), h('div', { class: 'inner' }, provenanceList(bp), datasetTable(bp.datasets))));
    fill(byId('comparison-body'), parts);
  }

  // --- sample view --------------------------------------------------------------------------

  function textBlock(text, cls = 'block') {
    const full = asText(text);
    const pre = h('pre', { class: cls }, full.length > MAX_TEXT ? full.slice(0, MAX_TEXT) : full);
    if (full.length <= MAX_TEXT) return pre;
    const btn = h('button', { type: 'button', class: 'btn link', text: `Show all ${fmtInt(full.length)} characters` });
    btn.addEventListener('click', () => { pre.textContent = full; btn.remove(); });
    return h('div', null, pre, btn);
  }

  function messages(list) {
    return list.map((m) => h('div', { class: 'message' }, h('div', { class: 'role', text: m.role ?? 'message' }),
      h('div', { class: 'content' }, asText(m.content))));
  }

  function kvTable(obj, caption) {
    return h('div', { class: 'table-wrap' }, h('table', { class: 'kv compact' }, h('caption', { class: 'sr-only', text: caption }),
      h('tbody', null, Object.entries(obj).map(([k, v]) => h('tr', null, h('th', { scope: 'row', text: k }), h('td', { text: asText(v) }))))));
  }

  const section = (title, ...body) => h('section', null, h('h3', { text: title }), body);
  const facts = (pairs) => h('dl', { class: 'facts-grid' }, pairs.filter(([, v]) => v != null && v !== '').map(([k, v]) => h('div', null, h('dt', { text: k }), h('dd', null, v))));

  function timingBar(t) {
    const parts = [
      ['Permit wait', t.permit_wait_ms, 'lat-0'], ['Limiter wait', t.limiter_wait_ms, 'lat-1'],
      ['Render input', t.render_input_ms, 'lat-2'], ['Inference', t.inference_ms, 'lat-4'],
      ['Render output', t.render_output_ms, 'lat-2'], ['Backoff', t.backoff_ms, 'lat-5'],
    ].filter(([, v]) => v > 0);
    const sum = parts.reduce((s, [, v]) => s + v, 0) || 1;
    return h('div', null,
      h('div', { class: 'timing-bar', role: 'img', 'aria-label': parts.map(([l, v]) => `${l} ${fmtMs(v)}`).join(', ') },
        parts.map(([l, v, c]) => h('span', { class: c, style: `width:${((v / sum) * 100).toFixed(2)}%`, title: `${l}: ${fmtMs(v)}` }))),
      h('div', { class: 'legend' }, parts.map(([l, v, c]) => h('span', null, h('span', { class: `swatch ${c}`, 'aria-hidden': 'true' }), `${l} ${fmtMs(v)}`)),
        t.total_ms != null ? h('span', null, h('strong', { text: `total ${fmtMs(t.total_ms)}` })) : null));
  }

  function callView(c, k) {
    const status = c.response?.status_code;
    const attempts = c.attempts || [];
    return h('details', { class: 'call', open: k === 0 ? true : null },
      h('summary', null, h('strong', { text: c.purpose || 'call' }), ' · ', h('code', { text: c.model ?? '' }),
        status != null ? [' · ', h('span', { class: `badge ${status >= 400 ? 'fail' : 'neutral'}`, text: String(status) })] : null,
        c.timings?.total_ms != null ? ` · ${fmtMs(c.timings.total_ms)}` : null,
        attempts.length > 1 ? ` · ${attempts.length} attempts` : null, c.cached ? ' · cached' : null),
      h('div', { class: 'inner' },
        c.timings ? h('div', null, h('h4', { text: 'Timings' }), timingBar(c.timings)) : null,
        attempts.length ? h('div', null, h('h4', { text: 'Attempts' }), h('table', { class: 'compact' },
          h('thead', null, h('tr', null, ['#', 'Result', 'Retryable', 'Elapsed'].map((t, i) => h('th', { scope: 'col', class: i === 3 ? 'num' : null, text: t })))),
          h('tbody', null, attempts.map((a, i) => h('tr', null, h('td', { text: String(i + 1) }),
            h('td', null, a.error ? h('span', { class: 'badge fail', text: a.error }) : h('span', { class: 'badge pass', text: 'ok' })),
            h('td', { text: a.retryable == null ? '—' : a.retryable ? 'yes' : 'no' }), h('td', { class: 'num', text: fmtMs(a.elapsed_ms) })))))) : null,
        h('div', null, h('h4', { text: 'Rendered request' }), textBlock(prettyMaybeJson(c.request_body))),
        c.response ? h('div', null, h('h4', { text: `Raw response${status != null ? ` (${status})` : ''}` }),
          c.response.headers && Object.keys(c.response.headers).length ? h('details', { class: 'more' }, h('summary', { text: 'Headers' }), h('div', { class: 'inner' }, kvTable(c.response.headers, 'Response headers'))) : null,
          textBlock(prettyMaybeJson(c.response.body))) : null,
        c.rendered_output != null ? h('div', null, h('h4', { text: 'Rendered output (process_output)' }), textBlock(prettyMaybeJson(c.rendered_output))) : null,
        c.output != null ? h('div', null, h('h4', { text: 'Parsed output' }), textBlock(prettyMaybeJson(c.output))) : null));
  }

  function errorView(e) {
    const loc = e.location && (typeof e.location === 'string' ? e.location
      : [e.location.file, e.location.line, e.location.column].filter((x) => x != null).join(':'));
    return h('div', { class: 'error-box' },
      h('div', null, h('span', { class: 'badge error', text: e.class || 'error' }), ' ', h('strong', { text: e.message ?? '' })),
      h('div', { class: 'where' }, `stage ${e.stage ?? '?'}`, e.model ? ` · model ${e.model}` : null, e.scorer ? ` · scorer ${e.scorer}` : null, loc ? [' · ', h('code', { text: loc })] : null),
      e.detail ? textBlock(e.detail, 'mono') : null);
  }

  function baselineView(rec) {
    if (!D.cmp) return null;
    const flip = (D.cmp.flips || []).find((f) => f.spec === rec.spec && f.id === rec.sample_id);
    const change = (D.cmp.error_changes || []).find((c) => c.spec === rec.spec && c.id === rec.sample_id);
    if (!flip && !change) return null;
    return section('Baseline', h('p', null,
      flip ? h('span', { class: `badge ${flip.direction === 'pass_to_fail' ? 'fail' : 'pass'}`, text: flip.direction === 'pass_to_fail' ? 'pass → fail' : 'fail → pass' }) : null, ' ',
      change ? h('span', { class: 'badge error', text: `error ${change.change}: ${change.class}` }) : null),
    flip?.baseline ? facts([['Baseline output', flip.baseline.output], ['Baseline error', flip.baseline.error],
      ...Object.entries(flip.baseline.scores || {}).map(([k, v]) => [k, fmtNum(v)])]) : null);
  }

  // Records name the solver's output `output: {value, text, messages}` (the contract) or
  // `solver_output: {output, text, messages}` (SampleRecord today); read either. A
  // SampleRecord line stores each body once: `output_call` names the call whose output it is,
  // `reply_from_output` says the last message is the reply that output makes, and a missing
  // `text` is that reply's content.
  function outputOf(rec) {
    if (rec.output !== undefined) return rec.output;
    const so = rec.solver_output;
    if (!so) return null;
    const value = so.output !== undefined ? so.output
      : so.output_call != null ? (rec.calls || [])[so.output_call]?.output : undefined;
    const choice = value?.choices?.[0]?.message;
    const text = so.text !== undefined ? so.text : (typeof choice?.content === 'string' ? choice.content : null);
    const messages = so.reply_from_output
      ? [...(so.messages || []), choice ? { ...choice, role: 'assistant' } : { role: 'assistant', content: text ?? '' }]
      : so.messages;
    return { value, text, messages };
  }

  function renderSample(rec, row) {
    const output = outputOf(rec), out = output || {};
    const scoreRows = Object.entries(rec.scores || {}).flatMap(([scorer, s]) =>
      Object.entries(s.values || {}).map(([field, v]) => h('tr', null, h('td', { text: scorer }), h('td', { text: field }),
        h('td', { class: 'num' }, h('strong', { text: fmtNum(v) })))));
    const reasons = Object.entries(rec.scores || {}).map(([scorer, s]) => {
      const { reasoning, ...rest } = s.metadata || {};
      if (reasoning == null && !Object.keys(rest).length) return null;
      return h('div', null, h('h4', { text: `${scorer} reasoning` }),
        reasoning != null ? h('p', { class: 'reasoning', text: asText(reasoning) }) : null,
        Object.keys(rest).length ? h('details', { class: 'more' }, h('summary', { text: 'Metadata' }), h('div', { class: 'inner' }, kvTable(rest, `${scorer} metadata`))) : null);
    });
    const t = rec.timings || {}, u = rec.usage || {};
    const inputMessages = Array.isArray(rec.model_input?.messages) ? rec.model_input.messages : null;
    const outMessages = Array.isArray(out.messages) ? out.messages : null;
    fill(byId('sv-body'),
      section('Overview', h('p', null, statusBadge(row), ' ', rec.errors?.length ? `${rec.errors.length} error${rec.errors.length > 1 ? 's' : ''}` : null),
        facts([['Sample index', fmtInt(rec.sample_index)], ['Total', fmtMs(t.total_ms)], ['Solver', fmtMs(t.solver_ms)], ['Scoring', fmtMs(t.score_ms)],
          ['Prompt tokens', fmtInt(u.num_prompt_tokens)], ['Completion tokens', fmtInt(u.num_completion_tokens)],
          ['Cost', rec.cost_usd != null ? fmtUsd(rec.cost_usd) : null], ['Attempts', fmtInt(rec.attempts)], ['Retries', fmtInt(rec.retries)],
          ['Cached', rec.cached == null ? null : rec.cached ? 'yes' : 'no']])),
      rec.errors?.length ? section('Errors', rec.errors.map(errorView)) : null,
      baselineView(rec),
      scoreRows.length || reasons.some(Boolean) ? section('Scores',
        scoreRows.length ? h('table', { class: 'compact' }, h('caption', { class: 'sr-only', text: 'Scores' }),
          h('thead', null, h('tr', null, ['Scorer', 'Field', 'Value'].map((x, i) => h('th', { scope: 'col', class: i === 2 ? 'num' : null, text: x })))),
          h('tbody', null, scoreRows)) : null, reasons) : null,
      section('Model input', inputMessages ? messages(inputMessages) : textBlock(prettyMaybeJson(rec.model_input))),
      section('Parsed output',
        output == null ? h('p', { class: 'muted', text: 'No output.' }) : out.text != null ? textBlock(out.text) : textBlock(prettyMaybeJson(out.value)),
        outMessages && inputMessages && outMessages.length > inputMessages.length + 1
          ? h('details', { class: 'more' }, h('summary', { text: `Conversation (${outMessages.length} messages)` }), h('div', { class: 'inner' }, messages(outMessages))) : null,
        out.value != null ? h('details', { class: 'more' }, h('summary', { text: 'Output value (JSON)' }), h('div', { class: 'inner' }, textBlock(prettyMaybeJson(out.value)))) : null),
      section('Dataset row', rec.sample && typeof rec.sample === 'object' ? kvTable(rec.sample, 'Dataset row') : textBlock(rec.sample)),
      rec.calls?.length ? section(`Calls (${rec.calls.length})`, rec.calls.map(callView)) : null,
      rec.captured_output ? section('Captured output', textBlock(rec.captured_output)) : null,
      h('details', { class: 'more', style: 'margin-top:20px' }, h('summary', { text: 'Full record (JSON)' }), h('div', { class: 'inner' }, textBlock(JSON.stringify(rec, null, 2)))));
  }

  let openToken = 0;
  async function openSample(row) {
    const dialog = byId('sample-view'), token = ++openToken;
    V.current = row;
    fill(byId('sv-spec'), D.meta.specs[D.idx.spec[row]].display_name || specKey(row));
    fill(byId('sv-title'), D.idx.id[row]);
    fill(byId('sv-body'), h('p', { class: 'muted', text: 'Loading…' }));
    const pos = V.rows.indexOf(row);
    byId('sv-prev').disabled = pos <= 0;
    byId('sv-next').disabled = pos < 0 || pos >= V.rows.length - 1;
    if (!dialog.open) {
      dialog.showModal();
      byId('sv-body').focus(); // the scroll area, so arrow and page keys scroll the details
    }
    for (const tr of byId('samples-table').tBodies[0].rows) tr.classList.toggle('current', Number(tr.dataset.row) === row);
    try {
      const rec = await loadRecord(row);
      if (token !== openToken) return; // a later open won the race
      renderSample(rec, row);
      byId('sv-body').scrollTop = 0;
      document.documentElement.dataset.sample = `${specKey(row)}/${D.idx.id[row]}`;
    } catch (err) {
      if (token === openToken) fill(byId('sv-body'), h('p', { class: 'notice', text: `Could not load this sample: ${err.message}` }));
    }
  }

  function step(delta) {
    const pos = V.rows.indexOf(V.current);
    const next = V.rows[pos + delta];
    if (pos < 0 || next == null) return;
    // Replace, not push: stepping through fifty samples should not need fifty Back presses.
    history.replaceState(null, '', sampleHash(specKey(next), D.idx.id[next]));
    // Keep the table's page in step with the sample shown, so closing lands next to it.
    const page = Math.floor((pos + delta) / V.pageSize);
    if (page !== V.page) { V.page = page; renderTable(); }
    openSample(next);
  }

  function parseHash() {
    const m = /^#sample=([^/]*)\/(.*)$/.exec(location.hash);
    if (!m) return null;
    try { return { spec: decodeURIComponent(m[1]), id: decodeURIComponent(m[2]) }; } catch { return null; }
  }

  function route() {
    const target = parseHash(), dialog = byId('sample-view');
    if (!target) { if (dialog.open) dialog.close(); return; }
    const row = findRow(target.spec, target.id);
    if (row == null) {
      fill(byId('sv-spec'), target.spec);
      fill(byId('sv-title'), target.id);
      fill(byId('sv-body'), h('p', { class: 'notice', text: 'No sample with this specification and ID is in this report.' }));
      byId('sv-prev').disabled = byId('sv-next').disabled = true;
      if (!dialog.open) dialog.showModal();
      return;
    }
    openSample(row);
  }

  function setupSampleView() {
    const dialog = byId('sample-view');
    byId('sv-close').addEventListener('click', () => dialog.close());
    byId('sv-prev').addEventListener('click', () => step(-1));
    byId('sv-next').addEventListener('click', () => step(1));
    dialog.addEventListener('click', (ev) => { if (ev.target === dialog) dialog.close(); }); // backdrop
    dialog.addEventListener('close', () => {
      openToken++;
      delete document.documentElement.dataset.sample;
      if (parseHash()) history.replaceState(null, '', location.pathname + location.search);
    });
    dialog.addEventListener('keydown', (ev) => {
      if (isTyping(ev.target) || ev.altKey || ev.ctrlKey || ev.metaKey) return;
      if (ev.key === 'j' || ev.key === 'ArrowRight') { ev.preventDefault(); step(1); }
      if (ev.key === 'k' || ev.key === 'ArrowLeft') { ev.preventDefault(); step(-1); }
    });
    window.addEventListener('hashchange', route);
  }

  // --- start --------------------------------------------------------------------------------

  function fail(err) {
    const box = byId('load-error');
    box.hidden = false;
    box.textContent = `The report could not be drawn: ${err.message || err}`;
    document.documentElement.dataset.state = 'error';
    console.error(err);
  }

  async function main() {
    const metaEl = byId('lfeval-meta'), indexEl = byId('lfeval-index');
    if (!metaEl || !indexEl) throw new Error(NO_DATA);
    D.meta = decodeTag(metaEl);
    renderHeader();
    renderResults();
    renderProvenance();
    performance.mark('lfeval:summary');
    // `await` on a plain value continues in a microtask, before the parser or load event move on,
    // so JSON tags still render synchronously; gzip tags render when decoded.
    D.idx = await decodeTag(indexEl);
    const cmpEl = byId('lfeval-comparison');
    D.cmp = cmpEl ? await decodeTag(cmpEl) : null;
    prepareIndex();
    setupFilters();
    setupTable();
    setupSampleView();
    V.rows = derived.all;
    renderTable();
    performance.mark('lfeval:table');
    renderCharts();
    renderComparison();
    performance.mark('lfeval:ready');
    document.documentElement.dataset.state = 'ready';
    route();
  }

  main().catch(fail);
})();
