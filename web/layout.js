// The grid of tiles: as many columns as make the 16:9 tiles largest inside the grid's box, so
// that 1 to 16 tiles (and more, smaller) fit without scrolling; with a pinned tile, that one
// large and the others in a strip beside it (or below it, when that leaves it larger). The
// sizes go to the grid as CSS custom properties (style.css draws with them); a ResizeObserver
// and a MutationObserver (tiles come, go, or are pinned) keep them current. Phones (≤ 600 px
// wide) keep style.css's own layout: tiles one under another, scrolling.

const ASPECT = 16 / 9;
const PHONE = matchMedia('(max-width: 600px)');

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
  const tiles = [...grid.children].filter((el) => el.classList.contains('tile'));
  // The tile drawn large: the pinned one, or in the speaker view the dominant speaker's.
  const pinned = tiles.find((el) => el.dataset.featured === 'true');
  grid.classList.toggle('fitted', !PHONE.matches);
  if (PHONE.matches) {
    grid.classList.remove('pinned-beside', 'pinned-below');
    return;
  }
  const css = getComputedStyle(grid);
  const px = (v) => parseFloat(v) || 0;
  const width = grid.clientWidth - px(css.paddingLeft) - px(css.paddingRight);
  const height = grid.clientHeight - px(css.paddingTop) - px(css.paddingBottom);
  const gap = px(css.rowGap);
  if (width <= 0 || height <= 0) return;
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

/** Keeps `grid` laid out: on resizes, tiles added or removed, a tile pinned or unpinned. */
export function wire(grid) {
  const again = () => update(grid);
  new ResizeObserver(again).observe(grid);
  new MutationObserver(again).observe(grid, { childList: true });
  new MutationObserver(again).observe(grid, { subtree: true, attributeFilter: ['data-featured'] });
  PHONE.addEventListener('change', again);
  again();
}
