// merge on a ploop image: folds the delta chain into the base (pending the ploop engine's delta primitives).
import type { Context } from './context.js';
import type { ChangeReport } from './report.js';
import type { MergeRequest } from './merge.js';
import { NotSupported } from '../util/errors.js';

export async function mergePloop(request: MergeRequest, context: Context): Promise<ChangeReport> {
  void context;
  throw new NotSupported(`merge of ploop images ("${request.hdd}") is not available yet in this version; nothing was changed.`);
}
