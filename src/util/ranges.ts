// Byte-range arithmetic for compact: merging, intersecting and counting the clusters that ranges cover.

/** A half-open byte range [start, start + length). */
export interface Range {
  start: number;
  length: number;
}

const end = (range: Range): number => range.start + range.length;

/** Sorted, non-overlapping, non-empty ranges; touching ranges are joined. */
export function normalize(ranges: Iterable<Range>): Range[] {
  const sorted = [...ranges].filter((r) => r.length > 0).sort((a, b) => a.start - b.start);
  const out: Range[] = [];
  for (const range of sorted) {
    const last = out[out.length - 1];
    if (last && range.start <= end(last)) last.length = Math.max(end(last), end(range)) - last.start;
    else out.push({ start: range.start, length: range.length });
  }
  return out;
}

/** The bytes in both lists (each list is normalized first). */
export function intersect(a: Iterable<Range>, b: Iterable<Range>): Range[] {
  const left = normalize(a);
  const right = normalize(b);
  const out: Range[] = [];
  let i = 0;
  let j = 0;
  while (i < left.length && j < right.length) {
    const l = left[i]!;
    const r = right[j]!;
    const start = Math.max(l.start, r.start);
    const stop = Math.min(end(l), end(r));
    if (stop > start) out.push({ start, length: stop - start });
    if (end(l) < end(r)) i++;
    else j++;
  }
  return out;
}

/** The bytes of `within` that no range of `minus` covers. */
export function subtract(within: Range, minus: Iterable<Range>): Range[] {
  const out: Range[] = [];
  let at = within.start;
  for (const range of normalize(minus)) {
    if (end(range) <= at) continue;
    if (range.start >= end(within)) break;
    if (range.start > at) out.push({ start: at, length: range.start - at });
    at = Math.max(at, end(range));
  }
  if (at < end(within)) out.push({ start: at, length: end(within) - at });
  return out;
}

export function totalBytes(ranges: Iterable<Range>): number {
  let sum = 0;
  for (const range of ranges) sum += range.length;
  return sum;
}

/** Indices of the clusters that the ranges cover completely. */
export function coveredClusters(ranges: Iterable<Range>, clusterBytes: number): number[] {
  const out: number[] = [];
  for (const range of normalize(ranges)) {
    const first = Math.ceil(range.start / clusterBytes);
    const stop = Math.floor(end(range) / clusterBytes);
    for (let index = first; index < stop; index++) out.push(index);
  }
  return out;
}

/** How many clusters the ranges touch (a partly covered cluster counts once). */
export function touchedClusters(ranges: Iterable<Range>, clusterBytes: number): number {
  let count = 0;
  let lastCounted = -1;
  for (const range of normalize(ranges)) {
    const first = Math.max(Math.floor(range.start / clusterBytes), lastCounted + 1);
    const last = Math.floor((end(range) - 1) / clusterBytes);
    if (last >= first) {
      count += last - first + 1;
      lastCounted = last;
    }
  }
  return count;
}

/** The part of a range whose start and end fall on cluster boundaries (what a discard can release). */
export function alignInward(range: Range, clusterBytes: number): Range | undefined {
  const start = Math.ceil(range.start / clusterBytes) * clusterBytes;
  const stop = Math.floor(end(range) / clusterBytes) * clusterBytes;
  return stop > start ? { start, length: stop - start } : undefined;
}
