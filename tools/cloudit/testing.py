"""./cloudit test: the clang-format check, host unit tests, fuzz smoke runs, QEMU integration tests and
CloudIt's own error paths. Ends with the line 'N passed, M failed' and a non-zero exit on any failure."""
import concurrent.futures
import glob
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

from . import build as builder
from . import deps, vm
from .common import ROOT, CloudItError

CLANG_FORMAT_DIRS = ["include", "src", "tools", "examples", "test"]
CPP_EXTENSIONS = (".hpp", ".cpp", ".h")

# QEMU integration cases: (name, appliance, vmm, kernel command line, expected status, patterns that must
# appear in the console output[, extra VMM arguments[, only these accelerators]]). Each runs under TCG, and
# under KVM too when KVM works here.
FAULT_HEADER = r"toro: CPU exception {} \({}, vector {}\), error code 0x[0-9a-f]+"
REGISTERS = [r"RIP 0x[0-9a-f]{16}  CS 0x0008", r"RAX 0x[0-9a-f]{16}", r"R15 0x[0-9a-f]{16}",
             r"backtrace:\n    #0 0x[0-9a-f]{16}\n    #1 0x[0-9a-f]{16}", r"toro: panic: unhandled CPU exception"]


PROC_IRQ = [r"^proc: irq: vector 0x30 on CPU 1: woken after \d+ us, handler ran 1 time\(s\) on CPU 1$"]


def proc_cpus(n):
    """What test/qemu/proc's "cpus" mode prints when n CPUs run a thread each, and CPU n does not exist."""
    return [rf"^proc: {n} CPUs, 0 threads on the wrong CPU; a thread on CPU {n}: begin_thread: no such CPU online$"]


QEMU_CASES = [
    ("hello/microvm-pvh", "hello", "microvm", "", 0, [r"^Hello from toro! Booted through PVH\.$"]),
    ("hello/microvm-pvh-acpi-off", "hello", "microvm", "", 0, [r"^Hello from toro! Booted through PVH\.$"],
     ["-machine", "acpi=off"]),
    ("hello/microvm-pvh-acpi-on", "hello", "microvm", "", 0, [r"^Hello from toro! Booted through PVH\.$"],
     ["-machine", "acpi=on"]),
    ("hello/pvh-without-1gib-pages", "hello", "microvm", "", 0, [r"^Hello from toro! Booted through PVH\.$"],
     ["-cpu", "qemu64"]),
    ("hello/multiboot-without-1gib-pages", "hello", "qboot", "", 0,
     [r"^Hello from toro! Booted through Multiboot\.$"], ["-cpu", "qemu64"]),
    ("hello/pc-seabios-multiboot", "hello", "seabios", "", 0, [r"^Hello from toro! Booted through Multiboot\.$"]),
    ("hello/pc-qboot-multiboot", "hello", "qboot", "", 0, [r"^Hello from toro! Booted through Multiboot\.$"]),
    ("hello/grub-iso", "hello", "grub", "from=grub", 0,
     [r"^Hello from toro! Booted through Multiboot\.$", r"^Command line: from=grub$"]),
    ("hello/kvm-launcher-pvh", "hello", "kvm", "from=launcher", 0,
     [r"^Hello from toro! Booted through PVH\.$", r"^Command line: from=launcher$"]),
    ("hello/kvm-launcher-linux64", "hello", "kvm", "from=launcher", 0,
     [r"^Hello from toro! Booted through Linux 64-bit boot protocol\.$", r"^Command line: from=launcher$"],
     ["--boot", "linux64"]),
    ("hello/cmdline-pvh", "hello", "microvm", "answer=42 mode=test", 0, [r"^Command line: answer=42 mode=test$"]),
    ("hello/cmdline-multiboot", "hello", "qboot", "answer=42", 0, [r"^Command line: answer=42$"]),
    ("boot/cmdline-too-long", "hello", "microvm", "x" * 3000, 101, [r"toro: cannot boot: .*command line"]),
    ("fault/divide-error", "test/qemu/fault", "microvm", "de", 101,
     [FAULT_HEADER.format("#DE", "divide error", 0)] + REGISTERS),
    ("fault/null-write", "test/qemu/fault", "microvm", "pf", 101,
     [FAULT_HEADER.format("#PF", "page fault", 14),
      r"CR2 0x0000000000000000  \(write, page not present, kernel mode\)"] + REGISTERS),
    ("fault/unmapped-read", "test/qemu/fault", "microvm", "pfhigh", 101,
     [FAULT_HEADER.format("#PF", "page fault", 14), r"CR2 0x0000400000000000  \(read, page not present"]),
    ("fault/invalid-opcode", "test/qemu/fault", "microvm", "ud", 101, [FAULT_HEADER.format("#UD", "invalid opcode", 6)]),
    ("fault/divide-error-multiboot", "test/qemu/fault", "qboot", "de", 101,
     [FAULT_HEADER.format("#DE", "divide error", 0)] + REGISTERS),
    ("fault/divide-error-kvm-launcher", "test/qemu/fault", "kvm", "de", 101,
     [FAULT_HEADER.format("#DE", "divide error", 0)] + REGISTERS),
    ("fault/divide-error-kvm-launcher-linux64", "test/qemu/fault", "kvm", "de", 101,
     [FAULT_HEADER.format("#DE", "divide error", 0)] + REGISTERS, ["--boot", "linux64"]),
    ("fault/panic", "test/qemu/fault", "microvm", "panic", 101,
     [r"toro: panic: the fault test asked for a panic\n  backtrace:\n    #0 0x[0-9a-f]{16}"]),
    ("fault/assert", "test/qemu/fault", "microvm", "assert", 101,
     [r"toro: panic: assertion failed: what.size\(\) == 0 \(.*main.cpp:\d+\): the command line must be empty"]),
    ("fault/stack-overflow", "test/qemu/fault", "microvm", "overflow", 101,
     [FAULT_HEADER.format("#DF", "double fault", 8),
      r"the fault address is a stack guard page: kernel stack overflow"]),
    ("fault/stack-overflow-kvm-launcher", "test/qemu/fault", "kvm", "overflow", 101,
     [FAULT_HEADER.format("#DF", "double fault", 8), r"kernel stack overflow"]),
    ("boot/map-limit-1gib-pages", "test/qemu/fault", "microvm", "maplimit", 101,
     [r"mapped limit 0x1000000000\n", r"read below the limit: ok", r"CR2 0x0000001000000000  \(read, page not"],
     ["-cpu", "max"], ["tcg"]),  # KVM here offers no 1 GiB pages
    ("boot/map-limit-2mib-pages", "test/qemu/fault", "qboot", "maplimit", 101,
     [r"mapped limit 0x40000000\n", r"read below the limit: ok", r"CR2 0x0000000040000000  \(read, page not"],
     ["-cpu", "qemu64"]),
    ("boot/bss-beyond-bootstrap-map-pvh", "test/qemu/bigbss", "microvm", "", 0,
     [r"^bigbss: 3145728 bytes of BSS at 0x[0-9a-f]+, zeroed: true, written: true$"]),
    ("boot/bss-beyond-bootstrap-map-multiboot", "test/qemu/bigbss", "qboot", "", 0,
     [r"^bigbss: 3145728 bytes of BSS at 0x[0-9a-f]+, zeroed: true, written: true$"]),
    ("boot/bss-beyond-bootstrap-map-linux64", "test/qemu/bigbss", "kvm", "", 0,
     [r"^bigbss: 3145728 bytes of BSS at 0x[0-9a-f]+, zeroed: true, written: true$"], ["--boot", "linux64"]),
    ("mem/exhaust-and-recover-128m", "test/qemu/mem", "microvm", "exhaust", 0,
     [r"^mem: round 0: (\d+) blocks of 1 MiB, then: out of memory", r"^mem: recovered after out of memory: true$"]),
    ("mem/exhaust-and-recover-4m", "test/qemu/mem", "microvm", "exhaust", 0,
     [r"^mem: round 1: [1-3] blocks of 1 MiB", r"^mem: recovered after out of memory: true$"], ["-m", "4M"]),
    ("mem/exhaust-and-recover-3584m-pci-hole", "test/qemu/mem", "qboot", "exhaust", 0,
     [r"^mem: recovered after out of memory: true$"], ["-m", "3584M"]),
    ("mem/exhaust-8g-above-4gib", "test/qemu/mem", "microvm", "exhaust", 0,
     [r"^mem: 85\d{8} bytes usable", r"^mem: recovered after out of memory: true$"], ["-m", "8G"], ["tcg"]),
    ("mem/exhaust-8g-mapped-on-first-touch", "test/qemu/mem", "microvm", "exhaust", 0,
     [r"^mem: 85\d{8} bytes usable", r"^mem: round 1: 81\d\d blocks", r"^mem: recovered after out of memory: true$"],
     ["-m", "8G", "-cpu", "qemu64"]),  # no 1 GiB pages: the boot map ends at 1 GiB, the rest faults in
    ("mem/small-blocks", "test/qemu/mem", "microvm", "small", 0,
     [r"^mem: 2000 small blocks written and checked, 0 bad bytes$"]),
    ("mem/new-delete", "test/qemu/mem", "microvm", "new", 0,
     [r"^mem: new/delete: constructed true, live after delete 0$"]),
    ("mem/new-out-of-memory-panics", "test/qemu/mem", "microvm", "new-huge", 101,
     [r"toro: out of memory: operator new of 1099511627776 bytes failed", r"toro: panic: operator new"]),
    ("mem/double-free-reported", "test/qemu/mem", "microvm", "double-free", 101,
     [r"toro: heap: double free \(pointer 0x[0-9a-f]+, CPU 0\)"]),
    ("mem/bench-runs", "test/qemu/mem", "microvm", "bench", 0, [r"^mem: bench: 50000 pairs in \d+ cycles"], [],
     ["tcg"]),  # under KVM here every guest instruction is emulated: a minute
    ("protection/write-to-kernel-text", "test/qemu/fault", "microvm", "writetext", 101,
     [FAULT_HEADER.format("#PF", "page fault", 14), r"CR2 0x[0-9a-f]{16}  \(write, protection violation, kernel"]),
    ("protection/write-to-kernel-text-multiboot", "test/qemu/fault", "qboot", "writetext", 101,
     [r"\(write, protection violation, kernel"]),
    ("protection/write-to-kernel-text-kvm-launcher", "test/qemu/fault", "kvm", "writetext", 101,
     [r"\(write, protection violation, kernel"]),
    ("protection/execute-data", "test/qemu/fault", "microvm", "execdata", 101,
     [FAULT_HEADER.format("#PF", "page fault", 14), r"\(instruction fetch, protection violation, kernel"]),
    ("fault/exit-status", "test/qemu/fault", "microvm", "exit=42", 42, [r"fault test: exit=42"]),
    # Process unit: CPUs from the MADT (microvm, pc, the launcher), the MP table (microvm acpi=off).
    ("proc/threads-on-4-cpus-madt", "test/qemu/proc", "microvm", "cpus", 0, proc_cpus(4) +
     [r"asked for CPU 3, runs on CPU 3 \(APIC id 3\)"], ["-smp", "4"]),
    ("proc/threads-on-4-cpus-mp-table", "test/qemu/proc", "microvm", "cpus", 0, proc_cpus(4),
     ["-smp", "4", "-machine", "acpi=off"]),
    ("proc/threads-on-4-cpus-pc-qboot", "test/qemu/proc", "qboot", "cpus", 0, proc_cpus(4), ["-smp", "4"]),
    ("proc/threads-on-2-cpus-pc-seabios", "test/qemu/proc", "seabios", "cpus", 0, proc_cpus(2),
     ["-smp", "2,sockets=2"], ["tcg"]),  # SeaBIOS under this KVM: seconds of emulated real mode
    ("proc/acpi-tables-above-the-boot-map", "test/qemu/proc", "seabios", "cpus", 0, proc_cpus(2),
     ["-m", "3G", "-cpu", "qemu64", "-smp", "2,sockets=2"], ["tcg"]),  # SeaBIOS puts them at the top of RAM
    ("proc/threads-on-8-cpus", "test/qemu/proc", "microvm", "cpus", 0, proc_cpus(8), ["-smp", "8"]),
    ("proc/one-cpu-kvm-launcher", "test/qemu/proc", "kvm", "cpus", 0, proc_cpus(1)),
    ("proc/cpu-limit-from-cmdline", "test/qemu/proc", "microvm", "cpus toro.cpus=2", 0, proc_cpus(2),
     ["-smp", "4"]),
    ("proc/10000-threads-no-leak", "test/qemu/proc", "microvm", "many", 0,
     [r"^proc: 10000 threads finished on 4 CPUs, counter 10000$", r"^proc: pages leaked 0 bytes, heap blocks leaked 0$"],
     ["-smp", "4"]),
    # Sleeps of 10 ms wake within 1 ms under KVM (the median: the slowest of 20 also waits for the host, which
    # runs other tests meanwhile); TCG's timers are coarser (within 10 ms). Never early.
    ("proc/sleep-wakes-on-time", "test/qemu/proc", "microvm", "sleep", 0,
     [r"^proc: sleep 10 ms x20: early 0, late by median \d{1,3} us, max \d+ us$"], [], ["kvm"]),
    ("proc/sleep-wakes-on-time-tcg", "test/qemu/proc", "microvm", "sleep", 0,
     [r"^proc: sleep 10 ms x20: early 0, late by median \d{1,4} us, max \d+ us$"], [], ["tcg"]),
    ("proc/sleep-wakes-on-time-kvm-launcher", "test/qemu/proc", "kvm", "sleep", 0,
     [r"^proc: sleep 10 ms x20: early 0, late by median \d{1,3} us, max \d+ us$"]),
    ("proc/sleep-one-shot-timer-pc", "test/qemu/proc", "qboot", "sleep", 0,
     [r"xAPIC, one-shot timer", r"^proc: sleep 10 ms x20: early 0, late by median \d{1,4} us, max \d+ us$"],
     ["-cpu", "qemu64,-x2apic"]),  # no x2APIC, no TSC-deadline: the xAPIC MMIO path and a calibrated one-shot timer
    ("proc/sync-across-cpus", "test/qemu/proc", "microvm", "sync", 0,
     # A 5 ms timed wait: never early; late only by what a loaded host makes of 4 vCPUs (no timing target).
     [r"^proc: mutex counter 12000 \(right\)", r"^proc: timed wait: timed out after (?:[5-9]|[1-9]\d{1,3}) ms$"],
     ["-smp", "4"]),
    ("proc/thread-stack-overflow", "test/qemu/proc", "microvm", "overflow", 101,
     [FAULT_HEADER.format("#DF", "double fault", 8),
      r"the fault address is the guard page of thread \d+'s stack \(8192 bytes, CPU 0\): stack overflow"]),
    ("blk/missing-device-reported", "test/qemu/blk", "microvm", "", 3,
     [r"^blk: no virtio block device on the command line or on PCI: virtio-pci: no such virtio function"]),
    # The devices unit finds nothing to drive: the app is told (empty registries), the boot goes on.
    ("dev/missing-nic-reported", "test/qemu/dev", "qboot", "net", 3,
     [r"^dev: 0 block device\(s\), 0 network interface\(s\)$", r"^dev: no eth0 registered$"]),
    # A NIC nobody drives (QEMU's rtl8139) is skipped; the e1000 next to it is eth0.
    ("dev/unclaimed-device-skipped", "test/qemu/dev", "seabios", "none", 1,
     [r"^devices: eth0: e1000 over PCI, MAC 52:54:00:12:34:57, INTx IRQ \d+$",
      r"^dev: 0 block device\(s\), 1 network interface\(s\)$"],
     ["-netdev", "user,id=u0", "-device", "rtl8139,netdev=u0", "-netdev", "user,id=u1",
      "-device", "e1000,netdev=u1,mac=52:54:00:12:34:57"]),
    # A device interrupt (the PIT's, through the IOAPIC to CPU 1) wakes a thread waiting on CPU 0. microvm's
    # MADT lacks the IRQ 0 -> GSI 2 override its MP table has: tested there with acpi=off.
    ("proc/device-interrupt-wakes-thread-pc", "test/qemu/proc", "qboot", "irq", 0, PROC_IRQ, ["-smp", "2"]),
    ("proc/device-interrupt-wakes-thread-microvm", "test/qemu/proc", "microvm", "irq", 0, PROC_IRQ,
     ["-smp", "2", "-machine", "acpi=off"]),
    ("proc/threads-example", "threads", "microvm", "", 0,
     [r"^4 CPU\(s\)", r"^thread \d+ on CPU 3: round 3", r"^all 4 threads joined \(sum of results 6\)$"],
     ["-smp", "4"]),
]


class Tally:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.failures = []
        self.lock = threading.Lock()

    def record(self, name, ok, detail="", count=1):
        with self.lock:
            if ok:
                self.passed += count
            else:
                self.failed += count
                self.failures.append(name)
            mark = "PASS" if ok else "FAIL"
            print(f"[{mark}] {name}" + (f"  ({count} cases)" if count > 1 else ""), flush=True)
            if not ok and detail:
                print("       " + detail.strip().replace("\n", "\n       "), flush=True)


    def skip(self, name, why):
        with self.lock:
            self.skipped += 1
            print(f"[SKIP] {name}  ({why})", flush=True)


def wanted(args, name):
    return args.filter in name


def check_format(t):
    files = []
    for d in CLANG_FORMAT_DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, d)):
            dirnames[:] = [x for x in dirnames if x not in ("subprojects", "build", "corpus")]
            files += [os.path.join(dirpath, f) for f in filenames if f.endswith(CPP_EXTENSIONS)]
    r = subprocess.run(["clang-format", "--dry-run", "--Werror"] + sorted(files),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    bad = sorted({os.path.relpath(m, ROOT) for m in re.findall(r"^(/\S+?):\d+:\d+: error", r.stdout, re.M)})
    t.record(f"format/clang-format ({len(files)} files)", r.returncode == 0,
             "not clang-formatted: " + ", ".join(bad) + "\n  fix with: clang-format -i <files>")


def catch2_counts(output):
    """Test-case counts from Catch2 v2's summary line."""
    m = re.search(r"All tests passed \(\d+ assertions? in (\d+) test cases?\)", output)
    if m:
        return int(m.group(1)), 0
    m = re.search(r"test cases:\s+(\d+)\s+\|\s+(\d+) passed\s+\|\s+(\d+) failed", output)
    if m:
        return int(m.group(2)), int(m.group(3))
    return 0, 1


def run_host_tests(t, bdir, args):
    for exe in sorted(p for p in glob.glob(os.path.join(bdir, "test", "host_*")) if os.path.isfile(p)):
        name = "host/" + os.path.basename(exe)[5:]
        if not wanted(args, name):
            continue
        try:
            r = subprocess.run([exe], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                               timeout=300)
        except subprocess.TimeoutExpired as e:  # a lost wake-up in a scheduler test hangs rather than fails
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            t.record(name, False, f"did not finish within 300 s\n{out[-3000:]}")
            continue
        ok_n, bad_n = catch2_counts(r.stdout)
        if r.returncode != 0 and bad_n == 0:
            bad_n = 1
        if ok_n:
            t.record(name, True, count=ok_n)
        if bad_n:
            t.record(name, False, r.stdout[-4000:], count=bad_n)


def check_compile_fail(t, args):
    """The formatter rejects a wrong argument count at compile time: the TU fails with the bad line, passes
    without it (so the failure is that line's)."""
    name = "host/format-compile-time-check"
    if not wanted(args, name):
        return
    src = os.path.join(ROOT, "test", "host", "console", "format_compile_fail.cpp")
    base = ["clang++", "-std=c++20", "-fsyntax-only", "-I" + os.path.join(ROOT, "include"), src]
    good = subprocess.run(base, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    bad = subprocess.run(base + ["-DTORO_EXPECT_COMPILE_ERROR"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    t.record(name, good.returncode == 0 and bad.returncode != 0,
             f"without the bad line: exit {good.returncode} {good.stdout[-800:]}\n"
             f"with it: exit {bad.returncode} (must fail)")


def run_fuzzers(t, bdir, args, seconds=10):
    for exe in sorted(p for p in glob.glob(os.path.join(bdir, "test", "fuzz_*")) if os.path.isfile(p)):
        target = os.path.basename(exe)[5:]
        name = f"fuzz/{target} ({seconds} s)"
        if not wanted(args, name):
            continue
        corpus = os.path.join(ROOT, "test", "fuzz", "corpus", target)
        artifacts = os.path.join(bdir, "fuzz-artifacts", target) + "/"
        os.makedirs(artifacts, exist_ok=True)
        with tempfile.TemporaryDirectory() as work:
            cmd = [exe, f"-max_total_time={seconds}", "-seed=1", "-print_final_stats=0",
                   f"-artifact_prefix={artifacts}", work]
            if os.path.isdir(corpus):
                cmd.append(corpus)
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=work)
        t.record(name, r.returncode == 0, r.stdout[-3000:] + f"\n(reproducers kept in {artifacts})")


def loaded_bytes(elf):
    """Sum of p_filesz over an ELF's PT_LOAD segments: the bytes a loader copies."""
    with open(elf, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF":
        raise CloudItError(f"{elf} is not an ELF file")
    is64 = data[4] == 2
    phoff, phentsize, phnum = (struct.unpack_from("<Q", data, 0x20)[0], *struct.unpack_from("<HH", data, 0x36)) \
        if is64 else (struct.unpack_from("<I", data, 0x1c)[0], *struct.unpack_from("<HH", data, 0x2a))
    total = 0
    for i in range(phnum):
        off = phoff + i * phentsize
        p_type = struct.unpack_from("<I", data, off)[0]
        filesz = struct.unpack_from("<Q", data, off + 32)[0] if is64 else struct.unpack_from("<I", data, off + 16)[0]
        if p_type == 1:
            total += filesz
    return total


def check_image(t, bdir, args):
    """hello stays within its size budget and carries nothing but the core."""
    elf = os.path.join(bdir, "examples", "hello", "hello.elf")
    if wanted(args, "image/hello-size"):
        n = loaded_bytes(elf)
        t.record(f"image/hello-size ({n} loaded bytes <= 16384)", n <= 16384,
                 f"hello.elf loads {n} bytes, over the 16 KiB budget")
    if wanted(args, "image/hello-only-core"):
        nm = subprocess.run(["llvm-nm", "-C", elf], stdout=subprocess.PIPE, text=True).stdout
        foreign = [l for l in nm.splitlines() if re.search(r"archetype|toro::testing|mock_io|span_phys_reader", l)]
        t.record("image/hello-only-core", nm != "" and not foreign, "unexpected symbols:\n" + "\n".join(foreign))


def boot_case(t, name, cmd, status, patterns, timeout=120):
    try:
        r = vm.boot(cmd, timeout, echo=False)
    except CloudItError as e:
        t.record(name, False, str(e))
        return
    problems = []
    if r.timed_out:
        problems.append(f"timed out after {timeout} s")
    elif r.status != status:
        problems.append(f"exit status {r.status}, expected {status}")
    problems += [f"missing /{p}/" for p in patterns if not re.search(p, r.output, re.M)]
    detail = "; ".join(problems) + "\n--- console ---\n" + r.output[-2500:] + r.qemu_stderr[-500:]
    t.record(name, not problems, detail)


def accelerators(vmm):
    """TCG always; KVM too when it works. The launcher is KVM only."""
    cpu, reason = vm.probe_kvm()
    if vmm == "kvm":
        return [("kvm", None)] if cpu else []
    return [("tcg", "max")] + ([("kvm", cpu)] if cpu else [])


def run_qemu_tests(t, args, pool):
    jobs, kernels = [], {}
    bdir = os.path.join(ROOT, "build", "default")
    kvm_cpu, reason = vm.probe_kvm()
    if not kvm_cpu:
        print(f"note: KVM is unusable here ({reason}): QEMU tests run under TCG only, launcher tests skip",
              flush=True)
    for name, spec, vmm, cmdline, status, patterns, *rest in QEMU_CASES:
        extra = rest[0] if rest else []
        only = rest[1] if len(rest) > 1 else None  # the accelerators a case is meaningful under
        if vmm == "kvm" and not kvm_cpu:
            t.skip(f"qemu/{name} [kvm]", f"KVM is unusable here: {reason}")
        for accel, cpu in accelerators(vmm):
            full = f"qemu/{name} [{accel}]"
            if not wanted(args, full) or (only and accel not in only):
                continue
            if spec not in kernels:
                app = builder.Appliance(spec if "/" not in spec else os.path.join(ROOT, spec))
                kernels[spec] = builder.kernel_paths(app, app.build_dir(False))
            iso = None
            if vmm == "grub":  # one ISO per case, written before the parallel boots
                iso = vm.make_iso(kernels[spec][1], cmdline, kernels[spec][0][:-4] + f"-{accel}-test.iso")
            cmd = vm.vm_command(kernels[spec], vmm, accel, cpu, 1, "128M", cmdline, extra, bdir, iso)
            jobs.append(pool.submit(boot_case, t, full, cmd, status, patterns))
    return jobs


def cloudit(*argv, timeout=600):
    return subprocess.run([sys.executable, os.path.join(ROOT, "cloudit")] + list(argv), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=ROOT)


def run_cli_tests(t, args, pool):
    """CloudIt end to end, as a user runs it: the out-of-tree appliance, and the error paths."""

    def expect(name, argv, rc, patterns):
        if not wanted(args, name):
            return
        r = cloudit(*argv)
        problems = ([f"exit status {r.returncode}, expected {rc}"] if r.returncode != rc else [])
        problems += [f"missing /{p}/" for p in patterns if not re.search(p, r.stdout, re.M)]
        t.record(name, not problems, "; ".join(problems) + "\n--- output ---\n" + r.stdout[-2500:])

    outoftree = os.path.join(ROOT, "test", "outoftree")
    broken = os.path.join(ROOT, "test", "cloudit", "broken")
    cases = [
        ("cli/out-of-tree-appliance", ["run", outoftree, "--accel", "tcg"], 7,
         [r"^out-of-tree service up \(\d+ bytes of usable RAM in \d+ regions\)$"]),
        ("cli/build-prints-elf-path", ["build", "hello"], 0, [r"hello32\.elf", r"/examples/hello/hello\.elf\n?\Z"]),
        ("cli/unknown-example", ["run", "no-such-example"], 2,
         [r"unknown example 'no-such-example'.*have: .*hello"]),
        ("cli/compiler-error-shown", ["build", broken], 2,
         [r"main\.cpp:\d+:\d+: error:", r"building .*broken failed"]),
        ("cli/hung-guest-reported", ["run", "test/qemu/hang", "--accel", "tcg", "--timeout", "5"], 124,
         [r"did not finish within 5 s", r"\| hang test: about to stop forever"]),
        ("cli/panic-reported", ["run", "test/qemu/fault", "--accel", "tcg", "--cmdline", "de"], 101,
         [r"guest panicked \(status 101\)", r"symbolized:\n\s+0x[0-9a-f]+\s+\S*divide_by_zero"]),
    ]
    return [pool.submit(expect, *c) for c in cases]


def run_launcher_errors(t, bdir, args):
    """toro-vmm's own failures: a clear message and status 2 (never odd, so never a guest status)."""
    vmm = os.path.join(bdir, "tools", "toro-vmm")
    hello = os.path.join(bdir, "examples", "hello", "hello")
    cases = [
        ("vmm/rejects-elf32", [hello + "32.elf"], r"ELFCLASS32 file: expected a 64-bit .*not its Multiboot wrapper"),
        ("vmm/rejects-non-elf", [os.path.join(ROOT, "README.md")], r"not an ELF file \(bad magic\)"),
        ("vmm/missing-kernel", ["/nonexistent/kernel.elf"], r"cannot open kernel /nonexistent/kernel.elf"),
        ("vmm/memory-too-small", ["--mem", "1", hello + ".elf"], r"--mem 1 MiB is too small"),
        ("vmm/cmdline-too-long", ["--cmdline", "x" * 3000, hello + ".elf"], r"--cmdline is 3000 bytes; at most 2047"),
    ]
    for name, argv, pattern in cases:
        if not wanted(args, name):
            continue
        r = subprocess.run([vmm] + argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        ok = r.returncode == 2 and re.search(pattern, r.stdout)
        t.record(name, bool(ok), f"exit {r.returncode} (expected 2), output:\n{r.stdout[-1500:]}")


def run_static_tables(t, args, pool):
    """The -Dstatic_page_tables=true variant boots on the PVH, Multiboot and Linux 64-bit paths."""
    if not wanted(args, "variant/static-page-tables"):
        return []
    bdir = os.path.join(ROOT, "build", "static-page-tables")
    builder.configure(ROOT, bdir, options=["static_page_tables=true"])
    if not builder.ninja(bdir, ["examples/hello/hello.elf", "examples/hello/hello32.elf"]):
        t.record("variant/static-page-tables build", False, "the build failed (above)")
        return []
    kernels = builder.kernel_paths(builder.Appliance("hello"), bdir)
    jobs = []
    for vmm, extra, pattern in (("microvm", [], "PVH"), ("qboot", [], "Multiboot"), ("kvm", [], "PVH"),
                                ("kvm", ["--boot", "linux64"], "Linux 64-bit boot protocol")):
        for accel, cpu in accelerators(vmm):
            cmd = vm.vm_command(kernels, vmm, accel, cpu, extra=extra,
                                build_dir=os.path.join(ROOT, "build", "default"))
            name = f"variant/static-page-tables/{vmm}{' linux64' if extra else ''} [{accel}]"
            jobs.append(pool.submit(boot_case, t, name, cmd, 0, [rf"^Hello from toro! Booted through {pattern}\.$"]))
    return jobs


def idle_case(t, name, cmd, begin="proc: idle begin", end="proc: idle end", forbid=None):
    """Every thread of test/qemu/proc's "idle" mode sleeps 3 s (test/qemu/dev's "netidle": waits 3 s on a NIC
    that receives nothing): the VMM process must stay below 5% of a host core between the two marks (idle CPUs
    halt until their next deadline or interrupt; nothing spins)."""
    try:
        r = vm.boot(cmd, 120, echo=False, marks=(begin, end))
    except CloudItError as e:
        t.record(name, False, str(e))
        return
    if r.status != 0 or begin not in r.marks or end not in r.marks or (forbid and forbid in r.output):
        t.record(name, False, f"status {r.status}, marks seen: {sorted(r.marks)}\n{r.output[-1500:]}")
        return
    cpu = r.marks[end][0] - r.marks[begin][0]
    wall = r.marks[end][1] - r.marks[begin][1]
    share = cpu / wall if wall > 0 else 1.0
    t.record(f"{name} ({share * 100:.1f}% of a core over {wall:.1f} s)", share < 0.05 and wall >= 2.9,
             f"the VMM used {cpu:.2f} s of CPU in {wall:.2f} s while every guest thread slept")


def run_idle_tests(t, args, pool):
    bdir = os.path.join(ROOT, "build", "default")
    kernels = builder.kernel_paths(builder.Appliance(os.path.join(ROOT, "test", "qemu", "proc")), bdir)
    jobs = []
    for vmm, extra in (("microvm", ["-smp", "4"]), ("kvm", [])):
        for accel, cpu in accelerators(vmm):
            name = f"qemu/proc/idle-cpus-halt-{vmm} [{accel}]"
            if wanted(args, name):
                cmd = vm.vm_command(kernels, vmm, accel, cpu, 1, "128M", "idle", extra, bdir)
                jobs.append(pool.submit(idle_case, t, name, cmd))
    return jobs


DISK_SIZE = 1 << 20


def disk_pattern(start, end):
    """The bytes the harness writes into a test disk image: byte at offset o is (o * 131 + o / 512) & 0xff."""
    return bytes((o * 131 + o // 512) & 0xFF for o in range(start, end))


def write_test_disk(image):
    with open(image, "wb") as f:
        f.write(disk_pattern(0, DISK_SIZE))


def check_test_disk(image):
    """What the guest's blk test leaves: sectors 1024-1031 hold (o ^ 0x5a) & 0xff, the rest is untouched.
    Returns (bad bytes in the written sectors, whether everything before them is untouched, the size)."""
    with open(image, "rb") as f:
        data = f.read()
    written = data[1024 * 512:1032 * 512]
    bad = sum(1 for k, b in enumerate(written) if b != ((1024 * 512 + k) ^ 0x5A) & 0xFF) + 8 * 512 - len(written)
    return bad, data[:1024 * 512] == disk_pattern(0, 1024 * 512), len(data)


def blk_case(t, name, kernels, accel, cpu, extra, image, vmm="microvm", device="virtio-blk-device",
             first_line="virtio-mmio"):
    """test/qemu/blk against a disk image: the guest reads the pattern written here and writes its own, which
    is checked in the image file after the guest exits. `vmm` and `device` choose the path: microvm with
    virtio-blk-device (MMIO, announced on the command line with acpi=off, in the DSDT with acpi=on: the case's
    `extra` says which), or a pc VMM with virtio-blk-pci (found on PCI); `first_line` is a regular expression
    for what the guest's first report must say about the transport, after "blk: "."""
    write_test_disk(image)
    drive = ["-drive", f"if=none,id=d0,file={image},format=raw", "-device", f"{device},drive=d0"]
    cmd = vm.vm_command(kernels, vmm, accel, cpu, 1, "128M", "", drive + extra)
    try:
        r = vm.boot(cmd, 120, echo=False)
    except CloudItError as e:
        t.record(name, False, str(e))
        return
    bad, untouched, size = check_test_disk(image)
    ok = (r.status == 0 and "read 128 sectors in 16-sector requests: 0 bad bytes" in r.output and bad == 0
          and re.search(f"^blk: {first_line}", r.output, re.M) and untouched and size == DISK_SIZE)
    t.record(name, ok, f"status {r.status}; {bad} bad bytes in the sectors the guest wrote; the rest untouched: "
             f"{untouched}\n{r.output[-1500:]}{r.qemu_stderr[-500:]}")


# (name, vmm, device, extra QEMU arguments, what the guest's first line says of the transport: a regex)
# microvm lists its virtio-mmio transports on the command line only with acpi=off; with acpi=on (QEMU's
# default) only in the DSDT.
BLK_CASES = [
    ("virtio-blk-mmio-v1", "microvm", "virtio-blk-device", ["-machine", "acpi=off"], r"virtio-mmio v1 at .*: "),
    ("virtio-blk-mmio-v2", "microvm", "virtio-blk-device",
     ["-machine", "acpi=off", "-global", "virtio-mmio.force-legacy=false"], r"virtio-mmio v2 at .*: "),
    ("virtio-blk-mmio-v1-acpi", "microvm", "virtio-blk-device", ["-machine", "acpi=on"],
     r"virtio-mmio v1 at 0x[0-9a-f]+ irq \d+ \(from ACPI\): "),
    ("virtio-blk-mmio-v2-acpi", "microvm", "virtio-blk-device",
     ["-machine", "acpi=on", "-global", "virtio-mmio.force-legacy=false"],
     r"virtio-mmio v2 at 0x[0-9a-f]+ irq \d+ \(from ACPI\): "),
    ("virtio-blk-pci-legacy-qboot", "qboot", "virtio-blk-pci,disable-modern=on", [], "virtio-pci legacy"),
    ("virtio-blk-pci-modern-qboot", "qboot", "virtio-blk-pci,disable-legacy=on", [], "virtio-pci modern"),
    ("virtio-blk-pci-legacy-seabios", "seabios", "virtio-blk-pci,disable-modern=on", [], "virtio-pci legacy"),
    ("virtio-blk-pci-modern-seabios", "seabios", "virtio-blk-pci,disable-legacy=on", [], "virtio-pci modern"),
]


def run_blk_tests(t, args, pool):
    bdir = os.path.join(ROOT, "build", "default")
    kernels = builder.kernel_paths(builder.Appliance(os.path.join(ROOT, "test", "qemu", "blk")), bdir)
    jobs = []
    for case, vmm, device, extra, first_line in BLK_CASES:
        for accel, cpu in accelerators(vmm):
            name = f"qemu/blk/{case}-read-write [{accel}]"
            if wanted(args, name):
                image = os.path.join(bdir, f"blk-{case}-{accel}.img")
                jobs.append(pool.submit(blk_case, t, name, kernels, accel, cpu, extra, image, vmm, device,
                                        first_line))
    return jobs


def microvm_acpi(vmm, more):
    """microvm cases run with ACPI off (transports on the command line) unless they ask for it on."""
    return ["-machine", "acpi=off"] if vmm == "microvm" and "acpi=on" not in " ".join(more) else []


def dev_blk_case(t, name, kernels, vmm, accel, cpu, device, image, irq, more=()):
    """test/qemu/dev's blk mode: the devices unit finds the disk, registers virtio-blk0 and wires its
    interrupt (`irq` is what the probe report must name: GSI, MSI-X or INTx); the pattern is checked as in
    blk_case."""
    write_test_disk(image)
    extra = microvm_acpi(vmm, more) + [
        "-drive", f"if=none,id=d0,file={image},format=raw", "-device", f"{device},drive=d0", *more]
    cmd = vm.vm_command(kernels, vmm, accel, cpu, 1, "128M", "blk", extra)
    try:
        r = vm.boot(cmd, 120, echo=False)
    except CloudItError as e:
        t.record(name, False, str(e))
        return
    bad, untouched, _ = check_test_disk(image)
    probe = re.search(r"^devices: virtio-blk0: virtio-blk over .*, 2048 blocks of 512 bytes, (.*)$", r.output, re.M)
    ok = (r.status == 0 and probe is not None and probe.group(1).startswith(irq) and bad == 0 and untouched
          and "read 128 sectors in 16-sector requests: 0 bad bytes" in r.output)
    t.record(name, ok, f"status {r.status}; {bad} bad bytes written; probe line: "
             f"{probe.group(0) if probe else None}\n{r.output[-1500:]}{r.qemu_stderr[-500:]}")


def dev_net_case(t, name, kernels, vmm, accel, cpu, device, irq, driver, more=(), mode="net", smp=1,
                 image=None, disk_irq=None, needs=()):
    """test/qemu/dev's net mode against netpeer.Peer over QEMU's dgram netdev: frames checked byte for byte
    both ways (guest -> peer, peer -> guest, the guest's echoes), the MAC QEMU was given read back, the link
    up, and the guest woken by device interrupts (the report must name `irq`)."""
    from . import netpeer
    peer = netpeer.Peer()
    mac = bytes([0x52, 0x54, 0x00, 0x12, 0x34, 0x60 + sum(name.encode()) % 32])
    mac_text = ":".join(f"{b:02x}" for b in mac)
    extra = microvm_acpi(vmm, more) + peer.netdev("n0") + [
        "-device", f"{device},netdev=n0,mac={mac_text}", *more]
    if image:  # the disk check of blk mode too, on a device given in `more`
        write_test_disk(image)
        extra += ["-drive", f"if=none,id=d0,file={image},format=raw"]
    cmd = vm.vm_command(kernels, vmm, accel, cpu, smp, "128M", mode, extra)
    problems = []
    worker = threading.Thread(target=lambda: problems.extend(peer.exchange(mac, timeout=100)), daemon=True)
    worker.start()
    try:
        r = vm.boot(cmd, 120, echo=False)
    except CloudItError as e:
        peer.close()
        t.record(name, False, str(e))
        return
    worker.join(10)
    peer.close()
    if worker.is_alive():
        problems.append("the peer was still waiting when the guest exited")
    probe = re.search(rf"^devices: eth0: {driver} .*$", r.output, re.M)
    ok = (r.status == 0 and not problems and probe is not None and irq in probe.group(0)
          and f"dev: eth0 MAC {mac_text}, MTU 1514, link up" in r.output
          and f"from the peer: {netpeer.FRAMES} good, 0 bad" in r.output)
    if image:
        disk = re.search(r"^devices: virtio-blk0: .*$", r.output, re.M)
        bad, untouched, _ = check_test_disk(image)
        ok = (ok and disk is not None and disk_irq in disk.group(0) and bad == 0 and untouched
              and "128 sectors in 16-sector requests: 0 bad" in r.output)
    if smp > 1:
        ok = ok and f"dev: ran on CPU {smp - 1}" in r.output
    ok = ok and all(n in r.output for n in needs)
    t.record(name, ok, f"status {r.status}; peer: {problems or 'every frame as expected'}; probe line: "
             f"{probe.group(0) if probe else None}\n{r.output[-1500:]}{r.qemu_stderr[-500:]}")


# (name, vmm, device, what the probe line says of the interrupt, extra QEMU arguments)
DEV_BLK_CASES = [
    ("blk-virtio-mmio", "microvm", "virtio-blk-device", "GSI", []),
    # With ACPI, microvm lists its transports in the DSDT only, on its second IOAPIC (GSI 24-47).
    ("blk-virtio-mmio-acpi", "microvm", "virtio-blk-device", "GSI 4", ["-machine", "acpi=on"]),
    ("blk-virtio-pci-modern-msix", "seabios", "virtio-blk-pci,disable-legacy=on", "MSI-X", []),
    ("blk-virtio-pci-legacy-msix", "qboot", "virtio-blk-pci,disable-modern=on", "MSI-X", []),
    ("blk-virtio-pci-intx-qboot", "qboot", "virtio-blk-pci,vectors=0", "INTx IRQ", []),
    ("blk-virtio-pci-intx-seabios", "seabios", "virtio-blk-pci,vectors=0", "INTx IRQ", []),
]
# (name, vmm, device, interrupt, the driver's name in the probe line, extra QEMU arguments)
DEV_NET_CASES = [
    ("net-virtio-mmio-v1", "microvm", "virtio-net-device", "GSI", "virtio-net", []),
    ("net-virtio-mmio-v2", "microvm", "virtio-net-device", "GSI", "virtio-net",
     ["-global", "virtio-mmio.force-legacy=false"]),
    ("net-virtio-mmio-acpi", "microvm", "virtio-net-device", "GSI 4", "virtio-net", ["-machine", "acpi=on"]),
    ("net-virtio-pci-modern-msix", "seabios", "virtio-net-pci,disable-legacy=on", "MSI-X", "virtio-net", []),
    ("net-virtio-pci-legacy-msix", "qboot", "virtio-net-pci,disable-modern=on", "MSI-X", "virtio-net", []),
    ("net-virtio-pci-intx", "qboot", "virtio-net-pci,vectors=0", "INTx IRQ", "virtio-net", []),
    ("net-e1000-qboot", "qboot", "e1000", "INTx IRQ", "e1000", []),
    ("net-e1000-seabios", "seabios", "e1000", "INTx IRQ", "e1000", []),
]
# (name, vmm, NIC, probe-line interrupt, driver, extra arguments, mode, CPUs, disk's probe-line interrupt):
# interrupts delivered to CPU 0 wake a thread on the last CPU; a disk and a NIC on one level-triggered line
# (qboot's PIIX3 routes slots 2 and 5 to PIRQB and PIRQA, both IRQ 10), each handler acknowledging its own.
DEV_MIXED_CASES = [
    ("net-waiter-on-another-cpu-msix", "seabios", "virtio-net-pci", "MSI-X", "virtio-net", [], "net lastcpu", 2,
     None, ()),
    ("net-waiter-on-another-cpu-gsi", "microvm", "virtio-net-device", "GSI", "virtio-net", [], "net lastcpu", 2,
     None, ()),
    ("shared-intx-line-disk-and-e1000", "qboot", "e1000,addr=2", "INTx IRQ 10", "e1000",
     ["-device", "virtio-blk-pci,vectors=0,drive=d0,addr=5"], "blk net", 1, "INTx IRQ 10", ()),
    # q35: configuration space through ECAM (MCFG), the disk and the NIC on the PCI Express root.
    ("q35-ecam-disk-and-nic", "seabios", "virtio-net-pci", "MSI-X", "virtio-net",
     ["-machine", "q35", "-device", "virtio-blk-pci,drive=d0"], "blk net toro.boot_trace", 1, "MSI-X",
     ("(PCI configuration through ECAM)",)),
]
# (name, vmm, device): a thread waiting on a silent NIC costs the host nothing.
DEV_IDLE_CASES = [
    ("net-wait-sleeps-virtio-mmio", "microvm", "virtio-net-device"),
    ("net-wait-sleeps-virtio-pci-msix", "seabios", "virtio-net-pci"),
    ("net-wait-sleeps-virtio-pci-intx", "qboot", "virtio-net-pci,vectors=0"),
    ("net-wait-sleeps-e1000-intx", "qboot", "e1000"),
]


def run_dev_tests(t, args, pool):
    bdir = os.path.join(ROOT, "build", "default")
    kernels = builder.kernel_paths(builder.Appliance(os.path.join(ROOT, "test", "qemu", "dev")), bdir)
    jobs = []
    for case, vmm, device, irq, more in DEV_BLK_CASES:
        for accel, cpu in accelerators(vmm):
            name = f"qemu/dev/{case} [{accel}]"
            if wanted(args, name):
                image = os.path.join(bdir, f"dev-{case}-{accel}.img")
                jobs.append(pool.submit(dev_blk_case, t, name, kernels, vmm, accel, cpu, device, image, irq, more))
    for case, vmm, device, irq, driver, more in DEV_NET_CASES:
        for accel, cpu in accelerators(vmm):
            name = f"qemu/dev/{case} [{accel}]"
            if wanted(args, name):
                jobs.append(pool.submit(dev_net_case, t, name, kernels, vmm, accel, cpu, device, irq, driver, more))
    for case, vmm, device, irq, driver, more, mode, smp, disk_irq, needs in DEV_MIXED_CASES:
        for accel, cpu in accelerators(vmm):
            name = f"qemu/dev/{case} [{accel}]"
            if wanted(args, name):
                image = os.path.join(bdir, f"dev-{case}-{accel}.img") if disk_irq else None
                jobs.append(pool.submit(dev_net_case, t, name, kernels, vmm, accel, cpu, device, irq, driver, more,
                                        mode, smp, image, disk_irq, needs))
    # The same app built for microvm only (virtio over MMIO): a disk and a NIC, and no PCI code in its image.
    mmio_kernels = tuple(os.path.join(bdir, "test", "qemu", f) for f in ("dev_mmio.elf", "dev_mmio32.elf"))
    for accel, cpu in accelerators("microvm"):
        name = f"qemu/dev/mmio-only-appliance-disk-and-nic [{accel}]"
        if wanted(args, name):
            image = os.path.join(bdir, f"dev-mmio-only-{accel}.img")
            jobs.append(pool.submit(dev_net_case, t, name, mmio_kernels, "microvm", accel, cpu, "virtio-net-device",
                                    "GSI", "virtio-net", ["-device", "virtio-blk-device,drive=d0"], "blk net", 1,
                                    image, "GSI"))
    if wanted(args, "image/dev-mmio-only-has-no-pci"):
        nm = subprocess.run(["llvm-nm", "-C", mmio_kernels[0]], stdout=subprocess.PIPE, text=True).stdout
        pci = [l for l in nm.splitlines() if re.search(r"pci|e1000|msix", l, re.I)]
        t.record("image/dev-mmio-only-has-no-pci", nm != "" and not pci,
                 "PCI code in an appliance that names virtio over MMIO only:\n" + "\n".join(pci[:20]))
    for case, vmm, device in DEV_IDLE_CASES:
        for accel, cpu in accelerators(vmm):
            name = f"qemu/dev/{case} [{accel}]"
            if wanted(args, name):
                jobs.append(pool.submit(dev_idle_case, t, name, kernels, vmm, accel, cpu, device))
    return jobs


def dev_idle_case(t, name, kernels, vmm, accel, cpu, device):
    from . import netpeer
    peer = netpeer.Peer()  # connected, silent
    extra = microvm_acpi(vmm, []) + peer.netdev("n0") + ["-device", f"{device},netdev=n0"]
    try:
        # A NIC without its interrupt would be polled by a sleeping thread: cheap, but not what is tested.
        idle_case(t, name, vm.vm_command(kernels, vmm, accel, cpu, 1, "128M", "netidle", extra),
                  "dev: idle begin", "dev: idle end", forbid="polled every")
    finally:
        peer.close()


def run_all(args):
    deps.ensure(deps.TEST)
    t = Tally()
    start = time.monotonic()
    if wanted(args, "format/clang-format"):
        check_format(t)
    bdir = builder.build_all()
    if bdir is None:
        t.record("build", False, "the build failed; compiler output above")
    else:
        run_host_tests(t, bdir, args)
        check_image(t, bdir, args)
        check_compile_fail(t, args)
        run_launcher_errors(t, bdir, args)
        run_fuzzers(t, bdir, args)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            jobs = (run_qemu_tests(t, args, pool) + run_idle_tests(t, args, pool) + run_blk_tests(t, args, pool) +
                    run_dev_tests(t, args, pool) +
                    run_cli_tests(t, args, pool) + run_static_tables(t, args, pool))
            for j in jobs:
                j.result()
    if t.failures:
        print("\nfailed: " + ", ".join(t.failures))
    print(f"\n{time.monotonic() - start:.0f} s")
    print(f"{t.passed} passed, {t.failed} failed" + (f", {t.skipped} skipped" if t.skipped else ""))
    return 1 if t.failed or not t.passed else 0
