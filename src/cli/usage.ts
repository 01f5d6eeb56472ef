// The usage text (--usage, -h, and after argument errors).

export const USAGE = `Usage:
  prl_disk_tool resize  --hdd PATH --size SIZE [--resize_partition] [--force] [-n]
  prl_disk_tool resize  --hdd PATH --info [--units K|M|G|T]
  prl_disk_tool compact --hdd PATH [-n]
  prl_disk_tool compact --hdd PATH --info
  prl_disk_tool merge   --hdd PATH [--external] [-n]
  prl_disk_tool convert --hdd PATH (--plain | --expanding) [-n]
  prl_disk_tool -h | --help | --usage
`;

export const HELP = `prl_disk_tool: resize, compact, merge and convert Virtuozzo disk images, in place.

${USAGE}
Operations:
  resize    Change the virtual size (--size). With --resize_partition (always, on a ploop image)
            the last partition and its filesystem follow, growing or shrinking. --info shows the size and the smallest sizes
            that resize accepts, with and without --resize_partition.
  compact   Give the host back the space that no filesystem in the image uses. --info shows the
            block counts and how much compact would free.
  merge     Delete the internal snapshots (qcow2) or fold the snapshot deltas (ploop), keeping the
            current state. --external folds a qcow2 backing chain into one image at PATH.
  convert   Make the image fully allocated (--plain) or sparse (--expanding).

Options:
  --hdd PATH            The image: a qcow2 file, a ploop folder holding DiskDescriptor.xml, or a
                        file inside such a folder.
  --size SIZE           Digits with an optional unit K, M, G or T (binary); no unit means M.
  --resize_partition    Resize the last partition and its content with the disk.
  --force               Accepted for compatibility; the checks that protect data still apply.
  -i, --info            Report instead of changing anything (a shared lock; read-only).
  --units K|M|G|T       Unit of the numbers printed by resize --info (default M).
  -n, --dry-run         Check everything and print the plan; change nothing.
  --json                Print one JSON object on stdout (sizes in bytes); progress as NDJSON on stderr.
  -v, --verbose         Print every plan step and external command with its duration.
  --comm NAME           Accepted for compatibility and ignored.
  -h, --help            Show this help.
  --usage               Show the usage lines.

Exit codes are listed in the manual page prl_disk_tool(8) and the README.
`;
