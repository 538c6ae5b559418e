#!/usr/bin/env bash
# Checks what Lightning DB needs from this machine and says what to change:
# io_uring allowed, RLIMIT_MEMLOCK for registered buffers, O_DIRECT on the target directory.
#   scripts/check_env.sh [database-dir]
set -u
dir="${1:-.}"
ok=1
echo "kernel: $(uname -r), CPUs: $(nproc)"
if [ -r /proc/sys/kernel/io_uring_disabled ]; then
  v=$(cat /proc/sys/kernel/io_uring_disabled)
  if [ "$v" != "0" ]; then echo "!! kernel.io_uring_disabled=$v: io_uring is restricted (set it to 0)"; ok=0
  else echo "io_uring: enabled (kernel.io_uring_disabled=0)"; fi
fi
grep -q Seccomp:.*2 /proc/self/status && echo "note: a seccomp filter is active; Docker's default profile blocks io_uring"
ml=$(ulimit -l)
echo "RLIMIT_MEMLOCK: $ml KiB (Sync mode registers 512 KiB per shard; root/CAP_IPC_LOCK is exempt)"
fs=$(stat -f -c %T "$dir" 2>/dev/null || echo unknown)
echo "filesystem of $dir: $fs"
probe="$dir/.ldb-direct-probe.$$"
if python3 - "$probe" <<'PY' 2>/dev/null; then echo "O_DIRECT: supported"; else echo "!! O_DIRECT: not supported here (set direct_io: false for Sync mode)"; ok=0; fi
import os, sys, mmap
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o600)
os.write(fd, mmap.mmap(-1, 4096)); os.close(fd); os.unlink(sys.argv[1])
PY
rm -f "$probe"
[ "$ok" = 1 ] && echo "environment OK" || { echo "environment needs changes (see !! lines)"; exit 1; }
