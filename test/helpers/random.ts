// Seeded randomness for the tests: every randomized case and crash state is reproducible from its printed seed.

/** A seeded generator (mulberry32) of numbers in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Integers in [0, n) from a seeded generator. */
export function seededInts(seed: number): (n: number) => number {
  const random = rng(seed);
  return (n) => Math.floor(random() * n);
}
