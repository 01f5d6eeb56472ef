// The descriptor edit that ends a ploop merge: the base becomes the only image, under the top's GUID (what ploop's
// ploop_di_merge_image does: references to the merged parent move to the child's GUID, so TopGUID stays valid).
// Edits the parsed tree in place; unknown nodes are kept.
import type { Element } from '@xmldom/xmldom';
import type { PloopDescriptor } from '../../formats/ploop/descriptor.js';
import { removeElement } from '../../formats/ploop/descriptor-text.js';
import { NotSupported } from '../../util/errors.js';

function children(parent: Element, name: string): Element[] {
  const out: Element[] = [];
  for (let node = parent.firstChild; node !== null; node = node.nextSibling) {
    if (node.nodeType === 1 && (node as Element).nodeName === name) out.push(node as Element);
  }
  return out;
}

function guidOf(element: Element): string {
  return (children(element, 'GUID')[0]?.textContent ?? '').trim().toLowerCase();
}

function setGuid(element: Element, guid: string): void {
  const node = children(element, 'GUID')[0]!;
  while (node.firstChild) node.removeChild(node.firstChild);
  node.appendChild(element.ownerDocument!.createTextNode(guid));
}

/** Images and Shots outside the chain (another branch) would lose their parents: refused before any change. */
export function refuseBranches(descriptor: PloopDescriptor): void {
  const chain = new Set(descriptor.chain.map((link) => link.guid));
  const root = descriptor.document.documentElement!;
  const storage = children(children(root, 'StorageData')[0]!, 'Storage')[0]!;
  const shots = children(children(root, 'Snapshots')[0]!, 'Shot');
  const stray = [...children(storage, 'Image'), ...shots].map(guidOf).find((guid) => !chain.has(guid));
  if (stray !== undefined) {
    throw new NotSupported(`The ploop image "${descriptor.folder}" has a snapshot ${stray} outside the current chain (a branch); merge does not fold branched images. Nothing was changed.`);
  }
}

/** Leaves one Image (the base's file) and one Shot, both under the top's GUID. */
export function setSingleImage(descriptor: PloopDescriptor): void {
  refuseBranches(descriptor);
  const top = descriptor.chain[0]!;
  const base = descriptor.chain[descriptor.chain.length - 1]!;
  const root = descriptor.document.documentElement!;
  const storage = children(children(root, 'StorageData')[0]!, 'Storage')[0]!;
  const topImage = children(storage, 'Image').find((image) => guidOf(image) === top.guid)!;
  const topGuidText = (children(topImage, 'GUID')[0]!.textContent ?? '').trim();
  for (const image of children(storage, 'Image')) {
    if (guidOf(image) === base.guid) setGuid(image, topGuidText);
    else removeElement(image);
  }
  const snapshots = children(root, 'Snapshots')[0]!;
  for (const shot of children(snapshots, 'Shot')) {
    if (guidOf(shot) === base.guid) setGuid(shot, topGuidText);
    else removeElement(shot);
  }
  descriptor.chain = [{ ...base, guid: top.guid }];
}
