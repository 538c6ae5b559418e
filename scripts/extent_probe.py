#!/usr/bin/env python3
"""Fallocated (unwritten extents) against zero-filled 64 MiB files, the two ways the WAL writes.

  mapped: 1 MiB copies into a MAP_SHARED mapping while another thread fdatasyncs every 100 ms
          (the Normal/Async path; docs/BENCHMARKS.md, large values)
  dsync:  2000 sequential 4 KiB O_DIRECT|O_DSYNC writes (the Sync path; ADR 0002 addendum)

Three alternating rounds each. Run from a directory on the WAL's filesystem (not tmpfs):
  cd target && python3 ../scripts/extent_probe.py
"""
import mmap
import os
import threading
import time

SIZE = 64 << 20
FILE = "extent-probe.bin"


def make(prep):
    if os.path.exists(FILE):
        os.remove(FILE)
    fd = os.open(FILE, os.O_RDWR | os.O_CREAT, 0o644)
    if prep == "fallocate":
        os.posix_fallocate(fd, 0, SIZE)
    else:
        zeros = b"\0" * (1 << 20)
        for _ in range(SIZE >> 20):
            os.write(fd, zeros)
    os.fdatasync(fd)
    return fd


def pct(lat, q):
    return lat[min(len(lat) - 1, int(len(lat) * q))]


def mapped(prep):
    fd = make(prep)
    m = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    stop = threading.Event()

    def syncer():
        while not stop.is_set():
            time.sleep(0.1)
            os.fdatasync(fd)

    t = threading.Thread(target=syncer)
    t.start()
    data, lat = os.urandom(1 << 20), []
    for i in range((SIZE >> 20) - 1):
        t0 = time.perf_counter()
        m[i << 20:(i + 1) << 20] = data
        lat.append((time.perf_counter() - t0) * 1e6)
        time.sleep(0.002)
    stop.set()
    t.join()
    m.close()
    os.close(fd)
    lat.sort()
    print(f"mapped {prep:9s} 1 MiB copy  p50 {pct(lat, .5):7.0f} us  p90 {pct(lat, .9):7.0f} us  max {lat[-1]:7.0f} us")


def dsync(prep, n=2000):
    os.close(make(prep))
    fd = os.open(FILE, os.O_RDWR | os.O_DIRECT | os.O_DSYNC)
    buf = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT needs
    buf.write(os.urandom(4096))
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        os.pwritev(fd, [buf], i * 4096)
        lat.append((time.perf_counter() - t0) * 1e6)
    os.close(fd)
    lat.sort()
    print(f"dsync  {prep:9s} 4 KiB write p50 {pct(lat, .5):7.1f} us  p90 {pct(lat, .9):7.1f} us  p99 {pct(lat, .99):7.1f} us")


for probe in (mapped, dsync):
    for prep in ["fallocate", "zeroed"] * 3:
        probe(prep)
os.remove(FILE)
