// The grid of tiles: as many columns as make the 16:9 tiles largest inside the grid's box, so
// that 1 to 16 tiles (and more, smaller) fit without scrolling; with a pinned tile, that one
// large and the others in a strip beside it (or below it, when that leaves it larger). The
// sizes go to the grid as CSS custom properties (style.css draws with them); a ResizeObserver
// and a MutationObserver (tiles come, go, or are pinned) keep them current. Phones (≤ 600 px
// wide) keep style.css's own layout: tiles one under another, scrolling.

const ASPECT = 16 / 9;
const PHONE = matchMedia('(max-width: 600px)');
/** Tiles narrower than this are too small to see anyone: more tiles go on further pages. */
const MIN_TILE_WIDTH = 200;

/** The page of tiles shown (from 0), and the pager's buttons once wired. */
let page = 0;
let pager = null;

/** How many tiles fit a page: the most whose tiles stay at least MIN_TILE_WIDTH wide. */
export function pageSize(width, height, gap, aspect = ASPECT) {
  let n = 1;
  while (n < 100 && fitGrid(n + 1, width, height, gap, aspect).tileWidth >= MIN_TILE_WIDTH) n += 1;
  return n;
}

/** The largest tiles for `n` tiles in a `width`×`height` box with `gap` between them:
 * `{ cols, rows, tileWidth }` (whole pixels). */
export function fitGrid(n, width, height, gap, aspect = ASPECT) {
  let best = { cols: 1, rows: Math.max(n, 1), tileWidth: 0 };
  for (let cols = 1; cols <= Math.max(n, 1); cols++) {
    const rows = Math.ceil(n / cols) || 1;
    const w = Math.min((width - (cols - 1) * gap) / cols, ((height - (rows - 1) * gap) / rows) * aspect);
    if (w > best.tileWidth) best = { cols, rows, tileWidth: w };
  }
  return { ...best, tileWidth: Math.max(0, Math.floor(best.tileWidth)) };
}

/** A pinned tile and `others` more in a `width`×`height` box: the strip beside the pinned tile
 * (a quarter of the width at most) or below it (a quarter of the height), whichever leaves
 * the pinned tile larger. `{ beside, bigWidth, cols, rows, tileWidth }`. */
export function fitPinned(others, width, height, gap, aspect = ASPECT) {
  const fill = (w, h) => Math.max(0, Math.floor(Math.min(w, h * aspect)));
  if (!others) return { beside: true, bigWidth: fill(width, height), cols: 0, rows: 0, tileWidth: 0 };
  // Beside: `cols` columns of tiles in a strip of height `height`.
  let beside = null;
  for (let cols = 1; cols <= others; cols++) {
    const rows = Math.ceil(others / cols);
    const budget = Math.max(width / 4, 120);
    const w = Math.floor(Math.min((budget - (cols - 1) * gap) / cols, ((height - (rows - 1) * gap) / rows) * aspect));
    if (!beside || w > beside.tileWidth) beside = { beside: true, cols, rows, tileWidth: Math.max(0, w) };
  }
  beside.bigWidth = fill(width - beside.cols * beside.tileWidth - beside.cols * gap, height);
  // Below: `rows` rows of tiles in a strip of width `width`.
  let below = null;
  for (let rows = 1; rows <= others; rows++) {
    const cols = Math.ceil(others / rows);
    const budget = Math.max(height / 4, 68);
    const w = Math.floor(Math.min((width - (cols - 1) * gap) / cols, ((budget - (rows - 1) * gap) / rows) * aspect));
    if (!below || w > below.tileWidth) below = { beside: false, cols, rows, tileWidth: Math.max(0, w) };
  }
  const stripHeight = below.rows * Math.ceil(below.tileWidth / aspect) + below.rows * gap;
  below.bigWidth = fill(width, height - stripHeight);
  return below.bigWidth > beside.bigWidth ? below : beside;
}

/** Lays the tiles of `grid` out now. */
export function update(grid) {
  const all = [...grid.children].filter((el) => el.classList.contains('tile'));
  // The tile drawn large: the pinned one, or in the speaker view the dominant speaker's.
  const pinned = all.find((el) => el.dataset.featured === 'true');
  grid.classList.toggle('fitted', !PHONE.matches);
  if (PHONE.matches) {
    grid.classList.remove('pinned-beside', 'pinned-below');
    paginate(all, all.length);
    return;
  }
  const css = getComputedStyle(grid);
  const px = (v) => parseFloat(v) || 0;
  const width = grid.clientWidth - px(css.paddingLeft) - px(css.paddingRight);
  const height = grid.clientHeight - px(css.paddingTop) - px(css.paddingBottom);
  const gap = px(css.rowGap);
  if (width <= 0 || height <= 0) return;
  // Pages: the featured tile on every one, the rest in order; tiles off the page are not
  // drawn, so their views say "not visible" and the media server sends them nothing.
  const tiles = paginate(all, pageSize(width, height, gap));
  let vars;
  if (pinned && tiles.length > 1) {
    const f = fitPinned(tiles.length - 1, width, height, gap);
    vars = { '--big-w': f.bigWidth, '--tile-w': f.tileWidth, '--cols': f.cols, '--rows': f.rows };
    grid.classList.toggle('pinned-beside', f.beside);
    grid.classList.toggle('pinned-below', !f.beside);
  } else {
    const f = fitGrid(tiles.length, width, height, gap);
    vars = { '--tile-w': f.tileWidth, '--cols': f.cols, '--rows': f.rows };
    grid.classList.remove('pinned-beside', 'pinned-below');
  }
  for (const [name, value] of Object.entries(vars)) {
    const v = name.endsWith('-w') ? `${value}px` : String(value);
    if (grid.style.getPropertyValue(name) !== v) grid.style.setProperty(name, v);
  }
}

/** Shows the tiles of the current page of `perPage` (the featured one on every page) and
 * hides the others (`data-off-page`); draws the pager. Returns the tiles shown. */
function paginate(all, perPage) {
  const featured = all.find((el) => el.dataset.featured === 'true');
  const rest = all.filter((el) => el !== featured);
  const slots = Math.max(1, featured ? perPage - 1 : perPage);
  const pages = Math.max(1, Math.ceil(rest.length / slots));
  page = Math.min(page, pages - 1);
  const shown = new Set(rest.slice(page * slots, (page + 1) * slots));
  if (featured) shown.add(featured);
  for (const el of all) {
    const off = String(!shown.has(el));
    if (el.dataset.offPage !== off) el.dataset.offPage = off;
  }
  if (pager) {
    pager.nav.hidden = pages < 2;
    const label = `${page + 1} / ${pages}`;
    if (pager.label.textContent !== label) pager.label.textContent = label;
    pager.prev.disabled = page === 0;
    pager.next.disabled = page >= pages - 1;
  }
  return all.filter((el) => shown.has(el));
}

/** Keeps `grid` laid out: on resizes, tiles added or removed, a tile pinned or unpinned. */
export function wire(grid) {
  const again = () => update(grid);
  const $ = (id) => document.getElementById(id);
  pager = { nav: $('pager'), label: $('page-label'), prev: $('page-prev'), next: $('page-next') };
  pager.prev.addEventListener('click', () => { page = Math.max(0, page - 1); again(); });
  pager.next.addEventListener('click', () => { page += 1; again(); });
  new ResizeObserver(again).observe(grid);
  new MutationObserver(again).observe(grid, { childList: true });
  new MutationObserver(again).observe(grid, { subtree: true, attributeFilter: ['data-featured'] });
  PHONE.addEventListener('change', again);
  again();
}
