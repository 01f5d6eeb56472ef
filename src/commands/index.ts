// Dispatch from a parsed request to the command that carries it out.
import type { Request } from './request.js';
import type { Context } from './context.js';
import type { Report } from './report.js';
import { compactInfo } from './compact/info.js';
import { compact } from './compact/compact.js';
import { resizeInfo } from './resize/info.js';
import { resize } from './resize/resize.js';
import { runMerge } from './merge/merge.js';
import { runConvert } from './convert/convert.js';

type Operational = Exclude<Request, { kind: 'help' } | { kind: 'usage' }>;

export async function runRequest(request: Operational, context: Context): Promise<Report> {
  switch (request.kind) {
    case 'resize-info':
      return resizeInfo(request.hdd, context);
    case 'resize':
      return resize(request, context);
    case 'compact-info':
      return compactInfo(request.hdd, context);
    case 'compact':
      return compact(request.hdd, request.dryRun, context);
    case 'merge':
      return runMerge(request, context);
    case 'convert':
      return runConvert(request, context);
  }
}
