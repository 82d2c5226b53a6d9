"""./cloudit bench boot|size|build|mem|sched|dev: boot cost against each path's floor, image sizes, build times,
heap and scheduler costs, device throughput.

Boot: for every path, launch -> exit wall time of `hello --profile-boot` (kernel_main's first statement exits)
and of the floor guest (test/qemu/floor: its first instruction exits, same VMM flags), interleaved run by run
so both see the same machine noise; medians, min, max and the ratio toro/floor. The guest's own view comes from
its TSC: `toro.boot_trace` makes hello print cycles from its first instruction to kernel_main and to the app.
"""
import json
import os
import re
import statistics
import subprocess
import time

from . import build as builder
from . import deps, vm
from .common import ROOT, CloudItError, say

PATHS = ["seabios", "qboot", "microvm", "grub", "kvm"]
# The seed's figures (FOSDEM'19, Atom C2550, QEMU 2.5): launch -> KernelMain on the closest equivalent path.
SEED_MS = {"grub": ("disk image + SeaBIOS", 1457), "seabios": ("Multiboot -kernel", 452),
           "qboot": ("Multiboot + qboot", 132), "microvm": ("NEMU", 95), "kvm": ("Firecracker 0.14", 17)}


def _time_ms(cmd):
    start = time.perf_counter()
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ms = (time.perf_counter() - start) * 1000
    if r.returncode != 1:  # status 0 through isa-debug-exit (or toro-vmm) is exit code 1
        raise CloudItError(f"{' '.join(cmd)} exited {r.returncode}, not status 0:\n{r.stderr.decode()[-800:]}")
    return ms


def _stats(xs):
    return {"median": round(statistics.median(xs), 2), "min": round(min(xs), 2), "max": round(max(xs), 2)}


def host_tsc_mhz():
    """The host's TSC rate (a KVM or TCG guest's TSC runs at it): /proc/cpuinfo's 'cpu MHz'."""
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^cpu MHz\s*:\s*([\d.]+)", f.read(), re.M)
        return float(m.group(1)) if m else None
    except OSError:
        return None


def boot_trace(kernels, accel, cpu, runs, bdir, vmm="microvm"):
    """Median cycles first instruction -> kernel_main and -> app entry, from hello's boot trace."""
    to_main, to_app = [], []
    for _ in range(runs):
        r = vm.boot(vm.vm_command(kernels, vmm, accel, cpu, cmdline="toro.boot_trace", build_dir=bdir), 120,
                    echo=False)
        m = re.search(r"kernel_main (\d+) cycles, -> app entry (\d+) cycles", r.output)
        if m:
            to_main.append(int(m.group(1)))
            to_app.append(int(m.group(2)))
    if not to_main:
        return None
    return {"kernel_main_cycles": statistics.median(to_main), "app_cycles": statistics.median(to_app)}


def bench_boot(args):
    deps.ensure(deps.IMAGE)
    hello = builder.Appliance("hello")
    toro_k = builder.build(hello, profile_boot=True, static_tables=args.static_page_tables)
    plain_k = builder.build(hello, static_tables=args.static_page_tables)
    floor_app = builder.Appliance(os.path.join(ROOT, "test", "qemu", "floor"))
    bdir = os.path.join(ROOT, "build", "default")
    accel, cpu = vm.choose_accel(args.accel)
    paths = args.paths.split(",") if args.paths else list(PATHS)
    if accel != "kvm" and "kvm" in paths:
        paths.remove("kvm")
        say("the kvm path needs KVM; skipped")
    needed = ["test/qemu/floor.elf", "test/qemu/floor32.elf"] + (["tools/toro-vmm"] if "kvm" in paths else [])
    if not builder.ninja(bdir, needed):
        raise CloudItError("could not build the floor guest and the launcher")
    floor_k = builder.kernel_paths(floor_app, bdir)
    isos = {}
    if "grub" in paths:
        isos = {"toro": vm.make_iso(toro_k[1], "", toro_k[0][:-4] + "-bench.iso"),
                "floor": vm.make_iso(floor_k[1], "", floor_k[0][:-4] + "-bench.iso")}
    results = {}
    for path in paths:
        cmds = {which: vm.vm_command(k, path, accel, cpu, build_dir=bdir, iso=isos.get(which))
                for which, k in (("toro", toro_k), ("floor", floor_k))}
        times = {"toro": [], "floor": []}
        for _ in range(args.runs):
            for which in ("toro", "floor"):
                times[which].append(_time_ms(cmds[which]))
        t, f = _stats(times["toro"]), _stats(times["floor"])
        results[path] = {"toro_ms": t, "floor_ms": f, "ratio": round(t["median"] / f["median"], 3),
                         "seed_ms": SEED_MS[path][1], "seed_path": SEED_MS[path][0]}
        say(f"{path}: toro {t['median']} ms, floor {f['median']} ms")
    trace = boot_trace(plain_k, accel, cpu, args.runs, bdir)
    mhz = host_tsc_mhz()
    out = {"accel": accel, "cpu": cpu, "runs": args.runs, "static_page_tables": args.static_page_tables,
           "paths": results}
    if trace:
        out["guest_tsc"] = dict(trace, tsc_mhz=mhz, path="microvm")
        if mhz:
            out["guest_tsc"]["kernel_main_us"] = round(trace["kernel_main_cycles"] / mhz, 1)
            out["guest_tsc"]["app_us"] = round(trace["app_cycles"] / mhz, 1)
    print_boot_table(out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        say(f"wrote {args.json}")
    svg = args.svg or os.path.join(ROOT, "docs", "boot-times.svg")
    write_svg(out, svg)
    say(f"wrote {svg}")
    return 0


def print_boot_table(out):
    print(f"\nboot: launch -> kernel_main, {out['accel']}, median of {out['runs']} (min-max), ms")
    print(f"| path | toro | floor | toro/floor | seed ({'Toro 2019'}) |")
    print("|---|---|---|---|---|")
    for path, r in out["paths"].items():
        t, f = r["toro_ms"], r["floor_ms"]
        print(f"| {path} | {t['median']} ({t['min']}-{t['max']}) | {f['median']} ({f['min']}-{f['max']}) "
              f"| {r['ratio']} | {r['seed_ms']} ({r['seed_path']}) |")
    g = out.get("guest_tsc")
    if g:
        us = f" = {g.get('kernel_main_us')} us / {g.get('app_us')} us at {g['tsc_mhz']} MHz" if g.get("tsc_mhz") else ""
        print(f"\nguest TSC (microvm): first instruction -> kernel_main {g['kernel_main_cycles']:.0f} cycles, "
              f"-> app entry {g['app_cycles']:.0f} cycles{us}")


def write_svg(out, path):
    """A grouped bar chart (log scale): toro and floor per path, the seed's figure as a marker."""
    import math
    paths = list(out["paths"].items())
    width, height, left, top, bottom = 640, 320, 60, 30, 40
    plot_h = height - top - bottom
    values = [v for _, r in paths for v in (r["toro_ms"]["median"], r["floor_ms"]["median"], r["seed_ms"])]
    lo, hi = 1.0, max(values + [10]) * 1.5
    def y(v):
        v = max(v, lo)
        return top + plot_h - plot_h * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    group = (width - left - 20) / max(1, len(paths))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             'font-size="11">',
             f'<text x="{left}" y="16" font-size="13">Boot to kernel_main, median ms ({out["accel"]}, log scale)</text>']
    for decade in range(0, int(math.log10(hi)) + 1):
        v = 10 ** decade
        parts.append(f'<line x1="{left}" x2="{width - 20}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>')
    for i, (name, r) in enumerate(paths):
        x0 = left + i * group + group * 0.15
        bw = group * 0.3
        for j, (key, colour) in enumerate((("toro_ms", "#1f77b4"), ("floor_ms", "#aaaaaa"))):
            v = r[key]["median"]
            parts.append(f'<rect x="{x0 + j * bw:.1f}" y="{y(v):.1f}" width="{bw - 2:.1f}" '
                         f'height="{top + plot_h - y(v):.1f}" fill="{colour}"/>'
                         f'<text x="{x0 + j * bw + bw / 2:.1f}" y="{y(v) - 3:.1f}" text-anchor="middle">{v:g}</text>')
        sy = y(r["seed_ms"])
        parts.append(f'<line x1="{x0 - 4:.1f}" x2="{x0 + 2 * bw + 2:.1f}" y1="{sy:.1f}" y2="{sy:.1f}" '
                     f'stroke="#d62728" stroke-width="2" stroke-dasharray="4,2"/>'
                     f'<text x="{x0 + bw:.1f}" y="{height - bottom + 16}" text-anchor="middle">{name}</text>')
    parts.append(f'<rect x="{width - 200}" y="24" width="10" height="10" fill="#1f77b4"/>'
                 f'<text x="{width - 186}" y="33">toro (hello --profile-boot)</text>'
                 f'<rect x="{width - 200}" y="40" width="10" height="10" fill="#aaaaaa"/>'
                 f'<text x="{width - 186}" y="49">floor (first instruction exits)</text>'
                 f'<line x1="{width - 200}" x2="{width - 190}" y1="61" y2="61" stroke="#d62728" stroke-width="2"/>'
                 f'<text x="{width - 186}" y="65">seed (Toro 2019)</text></svg>')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def elf_loaded_bytes(path):
    from .testing import loaded_bytes
    return loaded_bytes(path)


def bench_size(args):
    deps.ensure(deps.IMAGE)
    print("| example | ELF64 loaded bytes | ELF32 wrapper loaded bytes | ELF32 file bytes | ISO bytes |")
    print("|---|---|---|---|---|")
    for name in builder.list_examples():
        elf64, elf32 = builder.build(builder.Appliance(name))
        iso = vm.make_iso(elf32, "", elf64[:-4] + ".iso")
        print(f"| {name} | {elf_loaded_bytes(elf64)} | {elf_loaded_bytes(elf32)} | {os.path.getsize(elf32)} "
              f"| {os.path.getsize(iso)} |")
    return 0


def bench_mem(args):
    """Heap throughput on the host against glibc (same workload), in the guest, and boot cost vs RAM size."""
    deps.ensure(deps.RUN)
    bdir = builder.build_all()
    if bdir is None:
        raise CloudItError("the build failed")
    r = subprocess.run([os.path.join(bdir, "tools", "heap_bench"), "2000000", str(args.runs)],
                       stdout=subprocess.PIPE, text=True)
    print("host (tools/bench/heap_bench, 2M pairs):\n" + r.stdout)
    kernels = builder.kernel_paths(builder.Appliance(os.path.join(ROOT, "test", "qemu", "mem")), bdir)
    mhz = host_tsc_mhz()
    accel, cpu = vm.choose_accel(args.accel)
    cycles = []
    for _ in range(args.runs):
        out = vm.boot(vm.vm_command(kernels, "microvm", accel, cpu, cmdline="bench"), 300, echo=False).output
        m = re.search(r"(\d+) cycles per pair", out)
        if m:
            cycles.append(int(m.group(1)))
    if cycles:
        c = statistics.median(cycles)
        print(f"guest ({accel}, microvm, 50k pairs): {c:.0f} cycles per pair"
              + (f" = {c / mhz * 1000:.0f} ns, {mhz / c:.2f} M pairs/s" if mhz else ""))
    boot = {}
    for mem in ("128M", "16G"):
        xs = []
        for _ in range(args.runs):
            out = vm.boot(vm.vm_command(kernels, "microvm", accel, cpu, mem=mem, cmdline="toro.boot_trace"), 300,
                          echo=False).output
            m = re.search(r"-> app entry (\d+) cycles", out)
            if m:
                xs.append(int(m.group(1)))
        boot[mem] = statistics.median(xs) if xs else None
    if boot["128M"] and boot["16G"]:
        print(f"boot to the app's entry with the memory unit ({accel}, microvm, guest TSC, median of {args.runs}): "
              f"128M {boot['128M']:.0f} cycles, 16G {boot['16G']:.0f} cycles, ratio {boot['16G'] / boot['128M']:.3f}")
    return 0


SCHED_HOST = re.compile(r"^(\w+)\s+toro ([\d.]+) ns \(([\d.]+)-([\d.]+)\)\s+linux ([\d.]+) ns "
                        r"\(([\d.]+)-([\d.]+)\)\s+toro/linux ([\d.]+)", re.M)
SCHED_GUEST = re.compile(r"bench: yield_ns (\d+) create_join_ns (\d+) remote_start_ns (\d+) sleep_late_avg_ns (\d+) "
                         r"sleep_late_max_ns (\d+) cpus (\d+)")
GUEST_FIELDS = ["yield_ns", "create_join_ns", "remote_start_ns", "sleep_late_avg_ns", "sleep_late_max_ns"]


def bench_sched(args):
    """The process unit: the scheduler on the host against Linux (tools/bench/sched_bench, same run), the same
    operations in the guest (test/qemu/proc `bench`, -smp 2), and the boot cost of the process unit: guest TSC
    to the app's entry for test/qemu/proc at -smp 1 and -smp 4 against hello (and test/qemu/mem, the memory
    unit without the process unit) at -smp 1, interleaved."""
    deps.ensure(deps.RUN)
    bdir = os.path.join(ROOT, "build", "default")
    builder.configure(ROOT, bdir)
    if not builder.ninja(bdir, ["tools/sched_bench", "test/qemu/proc.elf", "test/qemu/mem.elf",
                             "examples/hello/hello.elf"]):
        raise CloudItError("could not build tools/sched_bench, test/qemu/proc, test/qemu/mem and hello")
    out = {"runs": args.runs}

    r = subprocess.run([os.path.join(bdir, "tools", "sched_bench"), str(args.runs)], stdout=subprocess.PIPE,
                       text=True)
    if r.returncode != 0:
        raise CloudItError(f"sched_bench exited {r.returncode}:\n{r.stdout}")
    print("host (tools/sched_bench):\n" + r.stdout)
    out["host"] = {m.group(1): {"toro_ns": {"median": float(m.group(2)), "min": float(m.group(3)),
                                            "max": float(m.group(4))},
                                "linux_ns": {"median": float(m.group(5)), "min": float(m.group(6)),
                                             "max": float(m.group(7))},
                                "ratio": float(m.group(8))}
                   for m in SCHED_HOST.finditer(r.stdout)}

    accel, cpu = vm.choose_accel(args.accel)
    out.update(accel=accel, cpu=cpu)
    proc_k = builder.kernel_paths(builder.Appliance(os.path.join(ROOT, "test", "qemu", "proc")), bdir)
    hello_k = builder.kernel_paths(builder.Appliance("hello"), bdir)
    samples = {f: [] for f in GUEST_FIELDS}
    for _ in range(args.runs):
        res = vm.boot(vm.vm_command(proc_k, "microvm", accel, cpu, smp=2, cmdline="bench"), 600, echo=False)
        m = SCHED_GUEST.search(res.output)
        if not m:
            say(f"test/qemu/proc bench printed no bench line (status {res.status}, timed out {res.timed_out}):\n"
                + "\n".join(res.output.splitlines()[-8:]))
            continue
        for f, v in zip(GUEST_FIELDS, m.groups()):
            samples[f].append(int(v))
    if samples["yield_ns"]:
        out["guest"] = {f: _stats(xs) for f, xs in samples.items()}
        out["guest"]["boots"] = len(samples["yield_ns"])
        g = out["guest"]
        print(f"guest ({accel}, microvm -smp 2, test/qemu/proc bench, median of {g['boots']} boots (min-max), ns):")
        for f in GUEST_FIELDS:
            print(f"  {f:18} {g[f]['median']:.0f} ({g[f]['min']:.0f}-{g[f]['max']:.0f})")

    # hello: the core alone (the baseline); mem: the core and the memory unit, which proc names before process.
    mem_k = builder.kernel_paths(builder.Appliance(os.path.join(ROOT, "test", "qemu", "mem")), bdir)
    configs = [("hello_smp1", hello_k, 1, "toro.boot_trace"), ("mem_smp1", mem_k, 1, "toro.boot_trace"),
               ("proc_smp1", proc_k, 1, "cpus toro.boot_trace"), ("proc_smp4", proc_k, 4, "cpus toro.boot_trace")]
    cycles = {name: [] for name, *_ in configs}
    for _ in range(args.runs):  # interleaved, so every configuration sees the same noise
        for name, kernels, smp, cmdline in configs:
            res = vm.boot(vm.vm_command(kernels, "microvm", accel, cpu, smp=smp, cmdline=cmdline), 300, echo=False)
            m = re.search(r"-> app entry (\d+) cycles", res.output)
            if m:
                cycles[name].append(int(m.group(1)))
    if all(cycles.values()):
        base = statistics.median(cycles["hello_smp1"])
        mhz = host_tsc_mhz()
        out["boot_app_entry_cycles"] = {name: dict(_stats(xs), ratio_to_hello=round(statistics.median(xs) / base, 3))
                                        for name, xs in cycles.items()}
        out["tsc_mhz"] = mhz
        print(f"\nboot to the app's entry ({accel}, microvm, guest TSC, median of {args.runs} (min-max), cycles):")
        for name, s in out["boot_app_entry_cycles"].items():
            ms = f" = {s['median'] / mhz / 1000:.2f} ms" if mhz else ""
            print(f"  {name:11} {s['median']:.0f} ({s['min']:.0f}-{s['max']:.0f}){ms}, /hello {s['ratio_to_hello']}")
    else:
        say("no boot trace from some configuration: " + ", ".join(f"{k} {len(v)}" for k, v in cycles.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        say(f"wrote {args.json}")
    return 0


BLK_BENCH = re.compile(r"bench: blk bytes (\d+) read_ns (\d+) write_ns (\d+) rand_reads (\d+) rand_ns (\d+)")
NET_BENCH = re.compile(r"bench: net tx_frames (\d+) tx_ns (\d+) tx_ring_full (\d+) echoed (\d+) echo_ns (\d+)")
# (name, VMM, -device): the disk and each NIC on the transports the devices unit drives.
DEV_BLK = [("virtio-blk mmio (microvm)", "microvm", "virtio-blk-device"),
           ("virtio-blk pci modern (seabios)", "seabios", "virtio-blk-pci,disable-legacy=on")]
DEV_NET = [("virtio-net mmio (microvm)", "microvm", "virtio-net-device"),
           ("virtio-net pci modern (seabios)", "seabios", "virtio-net-pci,disable-legacy=on"),
           ("e1000 (seabios)", "seabios", "e1000")]


def host_disk_reference(image, size, rand_reads=4096):
    """dd over the image file (128 KiB blocks, the guest's request size; the write ends with fdatasync, as the
    guest's ends with a flush), and 4 KiB random preads through the page cache, like QEMU's default cache."""
    def dd(*a):
        t0 = time.monotonic()
        subprocess.run(["dd", *a, "bs=128k", f"count={size // (128 * 1024)}", "status=none"], check=True)
        return time.monotonic() - t0
    read_s = dd(f"if={image}", "of=/dev/null")
    write_s = dd("if=/dev/zero", f"of={image}", "conv=notrunc,fdatasync")
    import random
    rng = random.Random(1)
    fd = os.open(image, os.O_RDONLY)
    t0 = time.monotonic()
    for _ in range(rand_reads):
        os.pread(fd, 4096, rng.randrange(size // 4096) * 4096)
    rand_s = time.monotonic() - t0
    os.close(fd)
    return {"read_MBps": size / read_s / 1e6, "write_MBps": size / write_s / 1e6, "rand_iops": rand_reads / rand_s}


def bench_dev(args):
    """The devices unit: virtio-blk sequential read/write MB/s (128 KiB requests, a 64 MiB image) and 4 KiB
    random-read IOPS (one request at a time), next to dd/pread on the same image file; frames per second per
    NIC (the guest transmitting 60-byte frames; echoes with 32 frames in flight) next to a host process in
    the guest's place. test/qemu/dev's blkbench and netbench modes; medians of --runs boots."""
    from . import netpeer
    deps.ensure(deps.RUN)
    bdir = os.path.join(ROOT, "build", "default")
    builder.configure(ROOT, bdir)
    if not builder.ninja(bdir, ["test/qemu/dev.elf", "test/qemu/dev32.elf"]):
        raise CloudItError("could not build test/qemu/dev")
    kernels = builder.kernel_paths(builder.Appliance(os.path.join(ROOT, "test", "qemu", "dev")), bdir)
    accel, cpu = vm.choose_accel(args.accel)
    out = {"accel": accel, "runs": args.runs, "blk": {}, "net": {}}
    size = 64 << 20
    image = os.path.join(bdir, "bench-dev.img")
    with open(image, "wb") as f:
        f.truncate(size)

    def med(xs):
        return round(statistics.median(xs), 1) if xs else None

    host = {"read_MBps": [], "write_MBps": [], "rand_iops": []}
    for name, vmm, device in DEV_BLK:
        got = {"read_MBps": [], "write_MBps": [], "rand_iops": []}
        for _ in range(args.runs):
            extra = (["-machine", "acpi=off"] if vmm == "microvm" else []) + [
                "-drive", f"if=none,id=d0,file={image},format=raw", "-device", f"{device},drive=d0"]
            r = vm.boot(vm.vm_command(kernels, vmm, accel, cpu, 1, "256M", "blkbench", extra), 600, echo=False)
            m = BLK_BENCH.search(r.output)
            if not m:
                say(f"{name}: no bench line (status {r.status}):\n" + "\n".join(r.output.splitlines()[-6:]))
                continue
            b, rd, wr, n, rn = (int(g) for g in m.groups())
            got["read_MBps"].append(b / rd * 1e3)
            got["write_MBps"].append(b / wr * 1e3)
            got["rand_iops"].append(n / rn * 1e9)
            ref = host_disk_reference(image, size)  # right after, so both see the same machine state
            for k in host:
                host[k].append(ref[k])
        out["blk"][name] = {k: med(v) for k, v in got.items()}
    out["blk"]["host dd/pread"] = {k: med(v) for k, v in host.items()}
    print(f"virtio-blk ({accel}, 64 MiB image, median of {args.runs}):")
    print(f"  {'':34} {'read MB/s':>10} {'write MB/s':>11} {'4K rand IOPS':>13}")
    for name, v in out["blk"].items():
        print(f"  {name:34} {v['read_MBps'] or 0:10.1f} {v['write_MBps'] or 0:11.1f} {v['rand_iops'] or 0:13.0f}")

    hostnet = {"tx_fps": [], "echo_fps": []}
    for name, vmm, device in DEV_NET:
        got = {"tx_fps": [], "echo_fps": [], "guest_tx_fps": [], "lost": []}
        for _ in range(args.runs):
            peer = netpeer.Peer()
            mac = bytes([0x52, 0x54, 0, 0x12, 0x34, 0x56])
            extra = (["-machine", "acpi=off"] if vmm == "microvm" else []) + peer.netdev("n0") + [
                "-device", f"{device},netdev=n0,mac=52:54:00:12:34:56"]
            result = {}
            import threading
            th = threading.Thread(target=lambda: result.update(netpeer.guest_bench(peer, mac)), daemon=True)
            th.start()
            r = vm.boot(vm.vm_command(kernels, vmm, accel, cpu, 1, "128M", "netbench", extra), 600, echo=False)
            th.join(10)
            peer.close()
            m = NET_BENCH.search(r.output)
            if not m or not result:
                say(f"{name}: no bench line (status {r.status}):\n" + "\n".join(r.output.splitlines()[-6:]))
                continue
            got["tx_fps"].append(result["tx_fps"])
            got["echo_fps"].append(result["echo_fps"])
            got["guest_tx_fps"].append(int(m.group(1)) / int(m.group(2)) * 1e9)
            got["lost"].append(netpeer.BENCH_TX_FRAMES - result["tx_frames"])
            ref = netpeer.host_bench()
            for k in hostnet:
                hostnet[k].append(ref[k])
        out["net"][name] = {k: med(v) for k, v in got.items()}
    out["net"]["host process (python, loopback)"] = {k: med(v) for k, v in hostnet.items()}
    base = out["net"]["host process (python, loopback)"]
    print(f"\nframes per second ({accel}, 60-byte frames, median of {args.runs}; ratio to the host process):")
    print(f"  {'':34} {'tx at peer':>12} {'tx in guest':>12} {'lost':>5} {'echo (32 in flight)':>20}")
    for name, v in out["net"].items():
        tx, echo = v["tx_fps"] or 0, v["echo_fps"] or 0
        rt = f" ({tx / base['tx_fps']:.2f})" if base["tx_fps"] else ""
        re_ = f" ({echo / base['echo_fps']:.2f})" if base["echo_fps"] else ""
        gtx = f"{v['guest_tx_fps']:12.0f}" if v.get("guest_tx_fps") else f"{'-':>12}"
        lost = f"{v['lost']:5.0f}" if v.get("lost") is not None else f"{'-':>5}"
        print(f"  {name:34} {tx:7.0f}{rt:7}{gtx} {lost} {echo:13.0f}{re_:7}")

    # The unit's boot cost: first instruction -> app entry (guest TSC) of test/qemu/dev with one device on
    # each path, against test/qemu/proc (memory + process, the units dev names before devices), interleaved.
    proc_k = builder.kernel_paths(builder.Appliance(os.path.join(ROOT, "test", "qemu", "proc")), bdir)
    builder.ninja(bdir, ["test/qemu/proc.elf", "test/qemu/proc32.elf"])
    configs = [("proc (no devices unit)", proc_k, "microvm", "cpus toro.boot_trace", ["-machine", "acpi=off"]),
               ("dev, virtio-net mmio", kernels, "microvm", "none toro.boot_trace",
                ["-machine", "acpi=off", "-netdev", "user,id=u0", "-device", "virtio-net-device,netdev=u0"]),
               ("dev, virtio-net mmio via ACPI", kernels, "microvm", "none toro.boot_trace",
                ["-machine", "acpi=on", "-netdev", "user,id=u0", "-device", "virtio-net-device,netdev=u0"]),
               ("proc on seabios", proc_k, "seabios", "cpus toro.boot_trace", []),
               ("dev, virtio-net pci (seabios)", kernels, "seabios", "none toro.boot_trace",
                ["-netdev", "user,id=u0", "-device", "virtio-net-pci,netdev=u0"]),
               ("dev, e1000 (seabios)", kernels, "seabios", "none toro.boot_trace",
                ["-netdev", "user,id=u0", "-device", "e1000,netdev=u0"])]
    cycles = {name: [] for name, *_ in configs}
    for _ in range(args.runs):
        for name, k, vmm, cmdline, extra in configs:
            res = vm.boot(vm.vm_command(k, vmm, accel, cpu, 1, "128M", cmdline, extra), 300, echo=False)
            m = re.search(r"-> app entry (\d+) cycles", res.output)
            if m:
                cycles[name].append(int(m.group(1)))
    mhz = host_tsc_mhz()
    out["boot_app_entry_cycles"] = {name: _stats(xs) for name, xs in cycles.items() if xs}
    print(f"\nboot to the app's entry ({accel}, guest TSC, median of {args.runs}):")
    for name, st in out["boot_app_entry_cycles"].items():
        ms = f" = {st['median'] / mhz / 1000:.2f} ms" if mhz else ""
        print(f"  {name:34} {st['median']:.0f} cycles{ms}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        say(f"wrote {args.json}")
    return 0


def bench_build(args):
    """Clean build of an example's kernels (after configuring) and the rebuild after touching its source."""
    import shutil
    import tempfile
    deps.ensure(deps.BUILD)
    name = args.example
    app = builder.Appliance(name)
    src = os.path.join(ROOT, "examples", name, "main.cpp")
    targets = [f"examples/{name}/{name}.elf", f"examples/{name}/{name}32.elf"]
    clean, incremental = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            bdir = os.path.join(tmp, "b")
            builder.configure(ROOT, bdir)
            start = time.perf_counter()
            if not builder.ninja(bdir, targets, quiet=True):
                raise CloudItError("build failed")
            clean.append((time.perf_counter() - start) * 1000)
            os.utime(src)
            start = time.perf_counter()
            builder.ninja(bdir, targets, quiet=True)
            incremental.append((time.perf_counter() - start) * 1000)
            shutil.rmtree(bdir, ignore_errors=True)
    print(f"build of {app.name}, median of {args.runs}: clean {statistics.median(clean):.0f} ms "
          f"(min {min(clean):.0f}), rebuild after touching main.cpp {statistics.median(incremental):.0f} ms "
          f"(min {min(incremental):.0f})")
    return 0
