"""The exact box extraction, without materialising the full-resolution map (Wang et al. 2017's boxes).

Hand-written because no library labels a map it is not given: ``scipy.ndimage.label`` needs the map at
full resolution, and materialising, normalising and labelling a 1024 x 1024 map costs tens of milliseconds
per map and threshold (about a minute for the 984 NIH rows at two thresholds). What it computes is exactly
what that would give (the tests compare the two bit for bit); the labelling itself is left to
``scipy.sparse.csgraph.connected_components`` on a small graph.

The map is separable: rows first (:attr:`MapBatch.rows`: height x w values, cheap), then columns. A
*block* is the product of a run of image rows that interpolate between the same two heatmap rows and a run
of columns that interpolate between the same two heatmap columns. Along a row inside a block the values
are monotone exactly (see :func:`~thoracic.heatmaps.upsampling.lerp`), so a row of a block holds one
interval of pixels above the threshold at most, found from the values at the row's two end pixels and,
where they differ, the crossing pixel (an analytic guess, then bisection in the rare case that the guess
is off). Across a block the exact bilinear interpolant of the same weights peaks at the block's corners,
and the computed values differ from it by a few units of rounding (a bound from the four heatmap values);
so a block whose corners all clear the cut by that bound is entirely above it or entirely below it, and
only the blocks that the region boundaries cross are looked at row by row.

:func:`extract_batch` goes in five steps, one function each:

1. :func:`_cuts`: the smallest raw value whose normalised value is above each threshold;
2. :func:`_whole_runs`: runs of whole blocks above the cut along each block row (graph nodes);
3. :func:`_mixed_rows` and :func:`_chains`: the interval above the cut in every row of every crossed
   block, and the chains of touching intervals inside one block (graph nodes);
4. :func:`_edges`: which nodes touch (8-connectivity) across block rows, between crossed blocks side by
   side, and between a chain and the whole blocks beside it;
5. :func:`_regions`: the connected components of that graph, their boxes, areas and exact peaks.

Every value compared with the cut is computed as ``upsample_heatmap`` computes it, so the result is the
plain algorithm's, bit for bit. Many maps of one shape and size go in one batch (:class:`MapBatch`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thoracic.heatmaps.upsampling import CellCentres, default_cell_centres, expand_runs, interpolation_taps, lerp

_UNIT_ROUNDOFF = 2.0 ** -53
#: |computed - exact bilinear| <= ~10 u max|H| for two nested lerp; 32 u leaves room for the bound's own rounding
_BOUND_FACTOR = 32 * _UNIT_ROUNDOFF

#: One map's regions at one threshold: ``(boxes (K, 4) x, y, w, h; scores (K,); areas (K,))``, largest first.
Regions = tuple[np.ndarray, np.ndarray, np.ndarray]


class MapBatch:
    """``(B, h, w)`` maps of one shape, image size and registration, and what the box extraction and the
    peak search need of them: the interpolated rows, the blocks with their value bounds, and the exact
    minimum and maximum of every full-resolution map."""

    def __init__(self, maps: np.ndarray, size: tuple[int, int], cell_centres: CellCentres | None) -> None:
        self.maps = maps
        self.n_maps = len(maps)
        self.height, self.width = size
        if cell_centres is None:
            cell_centres = default_cell_centres(maps.shape, size)
        row_centres, col_centres = cell_centres
        rt = self.rt = interpolation_taps(maps.shape[1], self.height, row_centres)
        ct = self.ct = interpolation_taps(maps.shape[2], self.width, col_centres)
        # rows interpolated exactly as upsample_heatmap does: (B, height, w); the difference of each
        # segment's two heatmap rows is taken once per segment, the very floats lerp computes per pixel
        difference = maps[:, rt.upper[rt.seg_start], :] - maps[:, rt.lower[rt.seg_start], :]
        self.rows = np.ascontiguousarray(maps[:, rt.lower, :] + rt.weight[None, :, None] * difference[:, rt.seg_of, :])
        self.flat_rows = self.rows.reshape(-1)  # a view: values are gathered from it by flat index
        # blocks (p, q): image rows r0[p]..r1[p] x columns c0[q]..c1[q]
        r0, r1, c0, c1 = self.r0, self.r1, self.c0, self.c1 = rt.seg_start, rt.seg_end, ct.seg_start, ct.seg_end
        n_p, n_q = len(r0), len(c0)
        corner_cols = np.r_[c0, c1]
        at_rows = self.rows[:, np.r_[r0, r1], :]
        corners = lerp(at_rows[:, :, ct.lower[corner_cols]], at_rows[:, :, ct.upper[corner_cols]],
                        ct.weight[corner_cols]).reshape(self.n_maps, 2, n_p, 2, n_q)
        self.corner_low, self.corner_high = corners.min(axis=(1, 3)), corners.max(axis=(1, 3))  # exact pixels
        magnitude = np.abs(maps)
        magnitude = np.maximum(magnitude[:, rt.lower[r0], :], magnitude[:, rt.upper[r0], :])
        magnitude = np.maximum(magnitude[:, :, ct.lower[c0]], magnitude[:, :, ct.upper[c0]])
        slack = 2.0 * (_BOUND_FACTOR * magnitude + 1e-300)  # corner to pixel: twice the rounding bound
        self.block_high, self.block_low = self.corner_high + slack, self.corner_low - slack  # all pixels within
        # exact min and max of every map: the corners, then the rows of every block that could beat them
        self.high, self.low = self.corner_high.max(axis=(1, 2)), self.corner_low.min(axis=(1, 2))
        b, p, q = np.nonzero(self.block_high >= self.high[:, None, None])
        owner, _, larger, _ = self.block_rows(b, p, q)
        np.maximum.at(self.high, b[owner], larger)
        b, p, q = np.nonzero(self.block_low <= self.low[:, None, None])
        owner, _, _, smaller = self.block_rows(b, p, q)
        np.minimum.at(self.low, b[owner], smaller)

    def value(self, b: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """The full-resolution map at pixels (row i, column j) of maps b, as upsample_heatmap has it."""
        ct, flat = self.ct, self.flat_rows
        base = (b * self.height + i) * self.rows.shape[2]
        return lerp(flat.take(base + ct.lower[j]), flat.take(base + ct.upper[j]), ct.weight[j])

    def block_rows(self, b: np.ndarray, p: np.ndarray, q: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per row of blocks (b, p, q): (block index, row, larger, smaller of the row's two end values).
        Along a row of a block the map is monotone: these are the row's extremes in the block."""
        owner, i = expand_runs(self.r0[p], self.r1[p] - self.r0[p] + 1)
        first, last = self.value(b[owner], i, self.c0[q[owner]]), self.value(b[owner], i, self.c1[q[owner]])
        return owner, i, np.maximum(first, last), np.minimum(first, last)

    def peaks(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, column) of every map's maximum; the first in raster order where it is reached several
        times (``numpy.argmax`` of the materialised map)."""
        b, p, q = np.nonzero(self.block_high >= self.high[:, None, None])
        owner, i = expand_runs(self.r0[p], self.r1[p] - self.r0[p] + 1)
        b, q = b[owner], q[owner]
        first_col, last_col = self.c0[q], self.c1[q]
        first_top = self.value(b, i, first_col) == self.high[b]
        rising = ~first_top & (self.value(b, i, last_col) == self.high[b])
        column = np.where(first_top, first_col, -1)
        lo, hi = first_col + 1, last_col.copy()  # rising rows: the first pixel reaching the maximum
        active = np.flatnonzero(rising & (lo < hi))
        while len(active):
            middle = (lo[active] + hi[active]) // 2
            hit = self.value(b[active], i[active], middle) >= self.high[b[active]]
            hi[active] = np.where(hit, middle, hi[active])
            lo[active] = np.where(hit, lo[active], middle + 1)
            active = active[lo[active] < hi[active]]
        column = np.where(rising, lo, column)
        found = column >= 0
        key = np.full(self.n_maps, np.iinfo(np.int64).max)
        np.minimum.at(key, b[found], i[found] * self.width + column[found])
        return np.divmod(key, self.width)


def _cuts(batch: MapBatch, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(cut (T, B), scale (B,))``: normalised > T  <=>  raw >= cut[t, b] (normalising is monotone, so a
    smallest such float exists; ``inf`` for a constant map); ``scale`` is ``normalize_heatmap``'s factor."""
    high, low = batch.high, batch.low
    constant = ~(high > low)
    scale = np.where(constant, 0.0, 255.0 / np.where(constant, 1.0, high - low))
    cut = np.empty((len(thresholds), batch.n_maps))
    for t, threshold in enumerate(thresholds):
        with np.errstate(divide="ignore", invalid="ignore"):
            guess = np.where(constant, np.inf, low + threshold / np.where(constant, 1.0, scale))

        def above(u: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore"):  # constant maps (scale 0, cut inf) are left out below
                return (u - low) * scale > threshold

        while np.any(move := ~constant & ~above(guess)):
            guess = np.where(move, np.nextafter(guess, np.inf), guess)
        while np.any(move := ~constant & above(np.nextafter(guess, -np.inf))):
            guess = np.where(move, np.nextafter(guess, -np.inf), guess)
        cut[t] = guess
    return cut, scale


@dataclass(frozen=True)
class _Runs:
    """Runs of whole blocks (every pixel above the cut) along a block row: ``(t, b, p, first_q..last_q)``,
    one graph node each; ``of_block`` is the run of every whole block (-1 elsewhere) and
    ``block_owner`` / ``block_q`` list the blocks of every run."""

    t: np.ndarray
    b: np.ndarray
    p: np.ndarray
    first_q: np.ndarray
    last_q: np.ndarray
    of_block: np.ndarray
    block_owner: np.ndarray
    block_q: np.ndarray

    @property
    def n(self) -> int:
        return len(self.first_q)


def _whole_runs(whole: np.ndarray) -> _Runs:
    """The runs of ``whole`` ``(T, B, P, Q)`` blocks along their last axis."""
    padded = np.pad(whole, ((0, 0), (0, 0), (0, 0), (1, 1)))
    run_first = np.argwhere(padded[..., 1:-1] & ~padded[..., :-2])
    last_q = np.argwhere(padded[..., 1:-1] & ~padded[..., 2:])[:, 3]
    t, b, p, first_q = run_first.T
    of_block = np.full(whole.shape, -1, dtype=np.int64)
    block_owner, block_q = expand_runs(first_q, last_q - first_q + 1)
    of_block[t[block_owner], b[block_owner], p[block_owner], block_q] = block_owner
    return _Runs(t, b, p, first_q, last_q, of_block, block_owner, block_q)


@dataclass(frozen=True)
class _MixedRows:
    """Every row of every mixed block (some pixels above the cut, some maybe not), in block order: block
    ``m`` = ``(mt, mb, mp, mq)[m]`` holds rows ``offsets[m] .. offsets[m] + heights[m] - 1``. Per row:
    its block (``owner``), image row ``i``, threshold ``t``, map ``b``, block column ``q``, the interval
    ``[start, stop]`` of columns above the cut (empty when ``start > stop``), whether its first / last
    pixel is above the cut and their values."""

    mt: np.ndarray
    mb: np.ndarray
    mp: np.ndarray
    mq: np.ndarray
    heights: np.ndarray
    offsets: np.ndarray
    owner: np.ndarray
    i: np.ndarray
    t: np.ndarray
    b: np.ndarray
    q: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    first_in: np.ndarray
    last_in: np.ndarray
    first_value: np.ndarray
    last_value: np.ndarray

    @property
    def filled(self) -> np.ndarray:
        return self.start <= self.stop


def _crossings(batch: MapBatch, b: np.ndarray, i: np.ndarray, q: np.ndarray, cut: np.ndarray,
               rising: np.ndarray) -> np.ndarray:
    """Per row (map ``b``, image row ``i``, block column ``q``) whose two end pixels lie on different sides
    of ``cut``: the first column of the block whose side differs from the first pixel's (``rising``: the
    first pixel is below). An analytic guess from the row's two heatmap columns, checked at the guess and
    the pixel before it, then bisection where the guess was off (flat segments, rounding)."""
    ct, rows = batch.ct, batch.rows
    first_col, last_col = batch.c0[q], batch.c1[q]
    a = rows[b, i, ct.lower[first_col]]
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = np.nan_to_num((cut - a) / (rows[b, i, ct.upper[first_col]] - a), nan=0.5)
    key = 2.0 * ct.seg_of + ct.weight  # grows along the image: segment, then weight inside it
    lo, hi = first_col + 1, last_col.copy()
    guess = np.clip(np.searchsorted(key, 2.0 * q + np.clip(weight, 0.0, 1.0)), lo, hi)

    def flipped(k: np.ndarray, j: np.ndarray) -> np.ndarray:
        return (batch.value(b[k], i[k], j) >= cut[k]) == rising[k]

    every = np.arange(len(b))
    hit = flipped(every, guess)
    hi, lo = np.where(hit, guess, hi), np.where(hit, lo, guess + 1)
    hit = flipped(every, guess - 1)
    hi, lo = np.where(hit, np.minimum(hi, guess - 1), hi), np.where(hit, lo, np.maximum(lo, guess))
    active = np.flatnonzero(lo < hi)
    while len(active):
        middle = (lo[active] + hi[active]) // 2
        hit = flipped(active, middle)
        hi[active] = np.where(hit, middle, hi[active])
        lo[active] = np.where(hit, lo[active], middle + 1)
        active = active[lo[active] < hi[active]]
    return lo


def _mixed_rows(batch: MapBatch, mixed: np.ndarray, cut: np.ndarray) -> _MixedRows:
    """The interval above the cut in each row of each mixed block (monotone along a block row: from the
    row's two end pixels and, where they differ in side, the crossing column)."""
    mt, mb, mp, mq = np.nonzero(mixed)
    heights = batch.r1[mp] - batch.r0[mp] + 1
    offsets = np.cumsum(heights) - heights
    owner, i = expand_runs(batch.r0[mp], heights)
    t, b, q = mt[owner], mb[owner], mq[owner]
    first_col, last_col = batch.c0[q], batch.c1[q]
    cut_row = cut[t, b]
    first_value, last_value = batch.value(b, i, first_col), batch.value(b, i, last_col)
    first_in, last_in = first_value >= cut_row, last_value >= cut_row
    start = np.where(first_in, first_col, last_col + 1)
    stop = np.where(last_in, last_col, first_col - 1)
    cross = np.flatnonzero(first_in != last_in)
    if len(cross):
        rising = ~first_in[cross]
        flip = _crossings(batch, b[cross], i[cross], q[cross], cut_row[cross], rising)
        start[cross] = np.where(rising, flip, first_col[cross])
        stop[cross] = np.where(rising, last_col[cross], flip - 1)
    return _MixedRows(mt, mb, mp, mq, heights, offsets, owner, i, t, b, q, start, stop, first_in, last_in,
                      first_value, last_value)


@dataclass(frozen=True)
class _Chains:
    """Consecutive rows of one mixed block whose intervals touch, one graph node each: ``of_row`` is the
    chain of every filled row; per chain its group (``t * n_maps + b``), extent, area and peak value."""

    of_row: np.ndarray
    group: np.ndarray
    top: np.ndarray
    left: np.ndarray
    bottom: np.ndarray
    left_most: np.ndarray
    right: np.ndarray
    area: np.ndarray
    peak: np.ndarray

    @property
    def n(self) -> int:
        return len(self.group)


def _chains(rows: _MixedRows, n_maps: int) -> _Chains:
    """Chain the filled rows of every mixed block whose intervals touch (8-connectivity)."""
    filled, start, stop, owner, i = rows.filled, rows.start, rows.stop, rows.owner, rows.i
    # monotone along the row: an interval peaks at whichever of the segment's ends it holds
    row_peak = np.maximum(np.where(rows.first_in, rows.first_value, -np.inf),
                          np.where(rows.last_in, rows.last_value, -np.inf))
    joined = np.zeros(len(i), dtype=bool)
    joined[1:] = (filled[1:] & filled[:-1] & (owner[1:] == owner[:-1])
                  & (start[1:] <= stop[:-1] + 1) & (start[:-1] <= stop[1:] + 1))
    of_row = np.cumsum(filled & ~joined) - 1  # chain index of every filled row
    kept = np.flatnonzero(filled)
    heads = np.flatnonzero(~joined[kept])
    if not len(heads):
        empty = np.zeros(0, dtype=np.int64)
        return _Chains(of_row, empty, empty, empty, empty, empty, empty, empty, np.zeros(0))
    return _Chains(
        of_row, (rows.t * n_maps + rows.b)[kept][heads], i[kept][heads], start[kept][heads],
        np.maximum.reduceat(i[kept], heads), np.minimum.reduceat(start[kept], heads),
        np.maximum.reduceat(stop[kept], heads), np.add.reduceat((stop - start + 1)[kept], heads),
        np.maximum.reduceat(row_peak[kept], heads))


def _edges_across_block_rows(batch: MapBatch, runs: _Runs, rows: _MixedRows, chains: _Chains,
                             n_maps: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges between nodes on either side of a block-row boundary: rows ``r1[p]`` and ``r1[p] + 1`` hold
    the end rows of runs (their whole width) and of chains (their interval)."""
    r0, r1, c0, c1 = batch.r0, batch.r1, batch.c0, batch.c1
    n_runs = runs.n
    run_rows = np.r_[r0[runs.p], r1[runs.p]]
    twice = np.r_[np.arange(n_runs), np.arange(n_runs)]
    single = np.r_[np.ones(n_runs, bool), r1[runs.p] > r0[runs.p]]  # a one-row block row appears once
    block_p = rows.mp[rows.owner]
    edge_rows = np.flatnonzero(rows.filled & ((rows.i == r0[block_p]) | (rows.i == r1[block_p])))
    node = np.r_[twice[single], n_runs + chains.of_row[edge_rows]]
    group = np.r_[(runs.t * n_maps + runs.b)[twice][single], (rows.t * n_maps + rows.b)[edge_rows]]
    row = np.r_[run_rows[single], rows.i[edge_rows]]
    first = np.r_[np.r_[c0[runs.first_q], c0[runs.first_q]][single], rows.start[edge_rows]]
    last = np.r_[np.r_[c1[runs.last_q], c1[runs.last_q]][single], rows.stop[edge_rows]]
    stride = batch.width + 2
    line = (group * (batch.height + 1) + row) * stride  # one spare row per group: nothing follows its last row
    order = np.argsort(line + first, kind="stable")
    node, line, first, last = node[order], line[order], first[order], last[order]
    # 8-connectivity with the next row: last >= first - 1 and first <= last + 1
    begin = np.searchsorted(line + last, line + stride + first - 1, side="left")
    end = np.searchsorted(line + first, line + stride + last + 1, side="right")
    source, target = expand_runs(begin, np.clip(end - begin, 0, None))
    return node[source], node[target]


def _edges(batch: MapBatch, whole_shape: tuple[int, ...], runs: _Runs, rows: _MixedRows, chains: _Chains,
           n_maps: int) -> tuple[np.ndarray, np.ndarray]:
    """Every edge of the graph (runs are nodes ``0 .. runs.n - 1``, chains the next ones)."""
    n_runs, n_q = runs.n, len(batch.c0)
    chain, owner, heights, offsets = chains.of_row, rows.owner, rows.heights, rows.offsets
    edges = [_edges_across_block_rows(batch, runs, rows, chains, n_maps)]
    # inside a block row, between horizontally adjacent mixed blocks: rows at most one apart whose
    # intervals reach the shared block edge
    first_col, last_col = batch.c0[rows.q], batch.c1[rows.q]
    left_edge = rows.filled & (rows.start == first_col)
    right_edge = rows.filled & (rows.stop == last_col)
    mt, mb, mp, mq = rows.mt, rows.mb, rows.mp, rows.mq
    index_of = np.full(whole_shape, -1, dtype=np.int64)
    index_of[mt, mb, mp, mq] = np.arange(len(mt))
    right_q = np.minimum(mq + 1, n_q - 1)
    neighbour = np.where(mq + 1 < n_q, index_of[mt, mb, mp, right_q], -1)
    pair = np.flatnonzero(neighbour >= 0)
    pair_owner, row_in_block = expand_runs(np.zeros(len(pair), dtype=np.int64), heights[pair])
    left_rows = offsets[pair][pair_owner] + row_in_block
    touching = np.flatnonzero(right_edge[left_rows])
    left_rows, pair_owner, row_in_block = left_rows[touching], pair_owner[touching], row_in_block[touching]
    for shift in (-1, 0, 1):
        other = row_in_block + shift
        fits = (other >= 0) & (other < heights[pair][pair_owner])
        right_rows = offsets[neighbour[pair]][pair_owner] + np.clip(other, 0, None)
        hit = np.flatnonzero(fits & left_edge[np.minimum(right_rows, len(rows.i) - 1)])
        edges.append((n_runs + chain[left_rows[hit]], n_runs + chain[right_rows[hit]]))
    # a chain row reaching its block's left / right edge touches a run of whole blocks beside it
    mq_row = mq[owner]
    for reach, side in ((left_edge, -1), (right_edge, 1)):
        beside_q = mq_row + side
        inside = reach & (beside_q >= 0) & (beside_q < n_q)
        hit = np.flatnonzero(inside)
        beside = runs.of_block[rows.t[hit], rows.b[hit], mp[owner][hit], beside_q[hit]]
        hit, beside = hit[beside >= 0], beside[beside >= 0]
        edges.append((n_runs + chain[hit], beside))
    return np.concatenate([e[0] for e in edges]), np.concatenate([e[1] for e in edges])


def _regions(batch: MapBatch, runs: _Runs, chains: _Chains, source: np.ndarray, target: np.ndarray,
             n_maps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The connected components of the graph: ``(group, boxes, peak, area)`` per region, ranked by group,
    then largest area first, equal areas in raster order of their first pixel (``ndimage.label``'s
    numbering); ``peak`` is the region's exact raw maximum."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    r0, r1, c0, c1, width = batch.r0, batch.r1, batch.c0, batch.c1, batch.width
    n_nodes = runs.n + chains.n
    graph = coo_matrix((np.ones(len(source), dtype=np.int8), (source, target)), shape=(n_nodes, n_nodes))
    _, label = connected_components(graph, directed=False)
    # regions: aggregates of their nodes
    node_group = np.r_[runs.t * n_maps + runs.b, chains.group]
    node_top = np.r_[r0[runs.p], chains.top]
    node_bottom = np.r_[r1[runs.p], chains.bottom]
    node_left = np.r_[c0[runs.first_q], chains.left_most]
    node_right = np.r_[c1[runs.last_q], chains.right]
    node_area = np.r_[(r1 - r0 + 1)[runs.p] * (c1[runs.last_q] - c0[runs.first_q] + 1), chains.area]
    node_raster = np.r_[r0[runs.p] * width + c0[runs.first_q], chains.top * width + chains.left]
    # a run's exact peak is known only for the blocks that could hold its region's peak (below)
    block_owner, block_q = runs.block_owner, runs.block_q
    bb, bp = runs.b[block_owner], runs.p[block_owner]
    run_floor = np.full(runs.n, -np.inf)
    np.maximum.at(run_floor, block_owner, batch.corner_high[bb, bp, block_q])
    node_peak = np.r_[run_floor, chains.peak]
    by_label = np.argsort(label, kind="stable")
    heads = np.r_[0, np.flatnonzero(np.diff(label[by_label])) + 1]
    region_group = node_group[by_label][heads]
    top = np.minimum.reduceat(node_top[by_label], heads)
    bottom = np.maximum.reduceat(node_bottom[by_label], heads)
    left = np.minimum.reduceat(node_left[by_label], heads)
    right = np.maximum.reduceat(node_right[by_label], heads)
    area = np.add.reduceat(node_area[by_label], heads)
    raster = np.minimum.reduceat(node_raster[by_label], heads)
    peak = np.maximum.reduceat(node_peak[by_label], heads)
    # blocks of runs that could beat what their region's peak is so far: their rows, exactly
    region_of_label = np.empty(len(heads), dtype=np.int64)
    region_of_label[label[by_label][heads]] = np.arange(len(heads))
    block_region = region_of_label[label[block_owner]]
    suspect = np.flatnonzero(batch.block_high[bb, bp, block_q] > peak[block_region])
    if len(suspect):
        rows_of, _, larger, _ = batch.block_rows(bb[suspect], bp[suspect], block_q[suspect])
        np.maximum.at(peak, block_region[suspect][rows_of], larger)
    ranking = np.lexsort((raster, -area, region_group))
    boxes = np.stack([left, top, right - left + 1, bottom - top + 1], axis=1).astype(np.float64)[ranking]
    return region_group[ranking], boxes, peak[ranking], area[ranking].astype(np.float64)


def extract_batch(batch: MapBatch, thresholds: list[float], largest_only: bool) -> list[dict[float, Regions]]:
    """Exact regions of a batch of maps at every threshold: one dict ``{threshold: Regions}`` per map,
    holding the thresholds with at least one region (largest first; ``largest_only``: that one alone).
    Scores are the region's peak of the normalised map divided by 255, in [0, 1]."""
    n_maps = batch.n_maps
    results: list[dict[float, Regions]] = [{} for _ in range(n_maps)]
    thr = np.asarray(thresholds, dtype=np.float64)
    if not len(thr):
        return results
    cut, scale = _cuts(batch, thr)
    cut_b = cut[:, :, None, None]
    whole = batch.block_low >= cut_b  # (T, B, P, Q): every pixel above the cut
    mixed = ~whole & (batch.block_high >= cut_b)
    runs = _whole_runs(whole)
    rows = _mixed_rows(batch, mixed, cut)
    chains = _chains(rows, n_maps)
    if runs.n + chains.n == 0:
        return results
    source, target = _edges(batch, whole.shape, runs, rows, chains, n_maps)
    group, boxes, peak, area = _regions(batch, runs, chains, source, target, n_maps)
    region_b = group % n_maps
    scores = np.clip((peak - batch.low[region_b]) * scale[region_b] / 255.0, 0.0, 1.0)
    edges_of = np.searchsorted(group, np.arange(len(thr) * n_maps + 1))
    for g in range(len(thr) * n_maps):
        t_g, b_g = divmod(g, n_maps)
        lo_g, hi_g = edges_of[g], edges_of[g + 1]
        if largest_only:
            hi_g = min(hi_g, lo_g + 1)
        if hi_g > lo_g:
            results[b_g][thresholds[t_g]] = (boxes[lo_g:hi_g], scores[lo_g:hi_g], area[lo_g:hi_g])
    return results


__all__ = ["MapBatch", "Regions", "extract_batch"]
