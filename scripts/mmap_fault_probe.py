#!/usr/bin/env python3
# Probe for the large-value Normal-mode stalls (docs/BENCHMARKS.md): copies 1 MiB chunks into a
# MAP_SHARED 64 MiB file while another thread fdatasyncs it every 100 ms, for a fallocated
# (unwritten extents) and a zero-filled file. Run from a directory on the WAL filesystem.
import mmap, os, time, threading
def run(prep):
    fn='mmstall.bin'
    if os.path.exists(fn): os.remove(fn)
    fd=os.open(fn, os.O_RDWR|os.O_CREAT, 0o644)
    size=64<<20
    if prep=='fallocate': os.posix_fallocate(fd,0,size)
    else:
        z=b'\0'*(1<<20)
        for i in range(64): os.write(fd,z)
    os.fdatasync(fd)
    m=mmap.mmap(fd,size,mmap.MAP_SHARED,mmap.PROT_READ|mmap.PROT_WRITE)
    stop=False
    def syncer():
        while not stop:
            time.sleep(0.1); os.fdatasync(fd)
    t=threading.Thread(target=syncer); t.start()
    data=os.urandom(1<<20); lat=[]
    for i in range(63):
        t0=time.perf_counter(); m[i<<20:(i+1)<<20]=data; lat.append((time.perf_counter()-t0)*1e6)
        time.sleep(0.002)
    stop=True; t.join()
    lat.sort()
    print(f"{prep:9s} per-MiB copy p50 {lat[31]:7.0f} us  p90 {lat[56]:7.0f} us  max {lat[-1]:7.0f} us")
    m.close(); os.close(fd); os.remove(fn)
for p in ['fallocate','zeroed','fallocate','zeroed','fallocate','zeroed']: run(p)
