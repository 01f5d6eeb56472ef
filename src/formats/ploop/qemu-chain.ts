// How QEMU is told about a chain of ploop deltas. Its parallels driver reads an unallocated cluster from the
// node's backing, but a delta header names no backing file (the chain lives in DiskDescriptor.xml), so the
// chain, top first, becomes one json: pseudo-filename of nested parallels nodes.

export function qemuDeltaChain(paths: readonly string[]): string {
  if (paths.length === 1) return paths[0]!;
  const node = (index: number): Record<string, unknown> => ({
    driver: 'parallels',
    file: { driver: 'file', filename: paths[index] },
    ...(index + 1 < paths.length ? { backing: node(index + 1) } : {}),
  });
  return `json:${JSON.stringify(node(0))}`;
}
