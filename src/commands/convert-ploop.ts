// convert on ploop: in place through the ploop engine (pending its convert module).
import type { Context } from './context.js';
import type { ChangeReport } from './report.js';
import type { OpenedImage } from './open.js';
import type { ConvertRequest } from './convert.js';
import { NotSupported } from '../util/errors.js';

export async function convertPloop(opened: OpenedImage, request: ConvertRequest, context: Context): Promise<ChangeReport> {
  void context;
  void request;
  throw new NotSupported(`convert of ploop images ("${opened.hdd}") is not available yet in this version; nothing was changed.`);
}
