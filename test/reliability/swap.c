/* Swaps two names atomically (renameat2 RENAME_EXCHANGE) in a tight loop until killed: the attacker of
 * race-ploop.test.ts, who replaces a delta with a symlink to another container's file between check and use. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: swap A B\n");
    return 2;
  }
  for (;;) {
    if (syscall(SYS_renameat2, AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE) != 0) {
      perror("renameat2");
      return 1;
    }
  }
}
