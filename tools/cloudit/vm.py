"""Booting a kernel under QEMU: accelerator probing, VMM command lines, console streaming, exit statuses."""
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

from .common import ROOT, CloudItError, say

QEMU = "qemu-system-x86_64"
PANIC_STATUS = 101  # toro::panic_status

# Each QEMU path: machine flags, and which kernel it loads (PVH ELF64 or the Multiboot ELF32 wrapper).
# "grub" boots an ISO (cloudit image) from disk under SeaBIOS; "kvm" is toro's own launcher (tools/vmm).
QEMU_PATHS = {
    # microvm keeps its PIT: the only clock to calibrate the TSC against under TCG (no CPUID leaf, no kvmclock).
    "microvm": (["-M", "microvm,x-option-roms=off,pit=on,pic=off,rtc=off"], "elf64"),
    "qboot": (["-M", "pc", "-bios", "/usr/share/qemu/qboot.rom"], "elf32"),
    "seabios": (["-M", "pc"], "elf32"),
    "grub": (["-M", "pc"], "iso"),
}
VMMS = list(QEMU_PATHS) + ["kvm"]

_probe_lock = threading.Lock()
_probe_cache = None


def _qemu_version():
    r = subprocess.run([QEMU, "--version"], stdout=subprocess.PIPE, text=True)
    return r.stdout.splitlines()[0] if r.stdout else "?"


def _try_cpu(cpu):
    """Starts QEMU paused with KVM and this -cpu, then quits over QMP: fails fast where KVM cannot run it."""
    qmp = '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'
    cmd = [QEMU, "-M", "microvm", "-accel", "kvm", "-cpu", cpu, "-nodefaults", "-no-user-config",
           "-display", "none", "-S", "-qmp", "stdio"]
    try:
        r = subprocess.run(cmd, input=qmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False, "QEMU did not answer the KVM probe within 20 s"
    return r.returncode == 0, (r.stderr.strip().splitlines() or [""])[0]


def probe_kvm():
    """Returns (cpu model for KVM or None, reason KVM is unusable). Cached per QEMU version and kernel."""
    global _probe_cache
    with _probe_lock:
        if _probe_cache is not None:
            return _probe_cache
        if not os.path.exists("/dev/kvm"):
            _probe_cache = (None, "/dev/kvm does not exist")
            return _probe_cache
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            _probe_cache = (None, "/dev/kvm is not readable and writable by this user")
            return _probe_cache
        key = f"{_qemu_version()} {os.uname().release}"
        cache_file = os.path.join(ROOT, "build", "kvm-probe.json")
        try:
            with open(cache_file) as f:
                saved = json.load(f)
            if saved.get("key") == key:
                _probe_cache = (saved["cpu"], saved["reason"])
                return _probe_cache
        except (OSError, ValueError, KeyError):
            pass
        result, reason = None, ""
        # -cpu host is best; some nested KVMs reject its MSR 0x10a (arch capabilities), so retry without it.
        for cpu in ("host", "host,arch-capabilities=off"):
            ok, why = _try_cpu(cpu)
            if ok:
                result = cpu
                break
            reason = why
        _probe_cache = (result, "" if result else f"KVM refused every CPU model ({reason})")
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        with open(cache_file, "w") as f:
            json.dump({"key": key, "cpu": _probe_cache[0], "reason": _probe_cache[1]}, f)
        return _probe_cache


def choose_accel(requested, quiet=False):
    """Returns (accel, cpu). KVM when it works and was not refused, else TCG with a one-line notice."""
    if requested == "tcg":
        return "tcg", "max"
    cpu, reason = probe_kvm()
    if cpu:
        return "kvm", cpu
    if requested == "kvm":
        raise CloudItError(f"--accel kvm asked for, but KVM is unusable: {reason}")
    if not quiet:
        say(f"KVM is unusable ({reason}); using TCG software emulation")
    return "tcg", "max"


def make_iso(elf32, cmdline, iso):
    """A BIOS-bootable ISO whose GRUB loads the Multiboot wrapper at once (the seed's "Image" row)."""
    import tempfile
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "boot", "grub"))
        shutil.copy(elf32, os.path.join(root, "boot", "kernel32.elf"))
        # Single-quoted for GRUB's script parser, so ; $ # and quotes in the command line stay literal.
        quoted = "'" + cmdline.replace("'", "'\\''") + "'" if cmdline else ""
        with open(os.path.join(root, "boot", "grub", "grub.cfg"), "w") as f:
            f.write("set timeout=0\nset default=0\nmenuentry toro {\n"
                    f"  multiboot /boot/kernel32.elf {quoted}\n  boot\n}}\n")
        r = subprocess.run(["grub-mkrescue", "-o", iso, root], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    if r.returncode != 0:
        raise CloudItError(f"grub-mkrescue could not write {iso}:\n{r.stdout}")
    return iso


def find_launcher(build_dir):
    for rel in ("tools/toro-vmm", "subprojects/toro/tools/toro-vmm"):
        path = os.path.join(build_dir, rel)
        if os.path.isfile(path):
            return path
    raise CloudItError(f"the KVM launcher toro-vmm is not built under {build_dir}")


def mem_mib(mem):
    m = re.fullmatch(r"(\d+)([MG]?)", mem.upper())
    if not m:
        raise CloudItError(f"--mem {mem}: give a size like 128M or 2G")
    return int(m.group(1)) * (1024 if m.group(2) == "G" else 1)


def vm_command(kernels, vmm="microvm", accel="tcg", cpu="max", smp=1, mem="128M", cmdline="", extra=(),
               build_dir=None, iso=None):
    """The command line that boots `kernels` (elf64, elf32) on one path."""
    if vmm == "kvm":
        cmd = [find_launcher(build_dir), "--mem", str(mem_mib(mem))]
        return cmd + (["--cmdline", cmdline] if cmdline else []) + list(extra) + [kernels[0]]
    if vmm not in QEMU_PATHS:
        raise CloudItError(f"unknown --vmm '{vmm}' (have: {', '.join(VMMS)})")
    machine, which = QEMU_PATHS[vmm]
    cmd = [QEMU] + machine + ["-accel", accel, "-cpu", cpu, "-smp", str(smp), "-m", mem,
                              "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
                              "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
    if which == "iso":
        cmd += ["-cdrom", iso or make_iso(kernels[1], cmdline, kernels[0][:-4] + ".iso")]
    else:
        cmd += ["-kernel", kernels[0] if which == "elf64" else kernels[1]]
        if cmdline:
            cmd += ["-append", cmdline]
    return cmd + list(extra)


class Result:
    def __init__(self, status, output, qemu_stderr, timed_out, elapsed, marks=None):
        self.status, self.output, self.qemu_stderr = status, output, qemu_stderr
        self.timed_out, self.elapsed = timed_out, elapsed
        self.marks = marks or {}  # console text -> (VMM process CPU seconds, wall seconds) when it appeared


def process_cpu_seconds(pid):
    """User + system CPU time of a running process (Linux /proc), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _qemu_failed(rc, stderr):
    """QEMU's own failures exit 1, as does a guest status of 0: tell them apart by QEMU's error text."""
    errors = [l for l in stderr.splitlines() if l.startswith(QEMU + ":") and "warning:" not in l]
    return rc < 0 or (rc == 1 and errors) or (rc not in (0, 1) and rc % 2 == 0)


def boot(cmd, timeout=30.0, echo=True, marks=()):
    """Runs QEMU, streaming the serial console (QEMU's stdout) to our stdout; returns a Result whose status is
    the guest's (isa-debug-exit's (s << 1) | 1 mapped back to s). For each text in `marks`, the VMM's CPU time
    and the wall time are taken when the text first appears on the console (Result.marks)."""
    if cmd[0] == QEMU and shutil.which(QEMU) is None:
        raise CloudItError(f"{QEMU} not found: install it with apt-get install qemu-system-x86")
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = bytearray(), bytearray()
    seen = {}

    def pump(src, sink, to_stdout):
        while True:
            chunk = os.read(src.fileno(), 4096)
            if not chunk:
                return
            sink.extend(chunk)
            for m in marks:
                if m not in seen and m.encode() in sink:
                    try:
                        seen[m] = (process_cpu_seconds(proc.pid), time.monotonic() - start)
                    except OSError:
                        pass
            if to_stdout:
                try:
                    sys.stdout.buffer.write(chunk)
                    sys.stdout.buffer.flush()
                except (BrokenPipeError, ValueError):
                    to_stdout = False  # the reader went away (| head); keep collecting

    threads = [threading.Thread(target=pump, args=(proc.stdout, out, echo), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, err, False), daemon=True)]
    for t in threads:
        t.start()
    timed_out = False
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        rc = proc.wait()
    for t in threads:
        t.join(timeout=5)
    elapsed = time.monotonic() - start
    output = out.decode(errors="replace").replace("\r\n", "\n")
    stderr = err.decode(errors="replace")
    if timed_out:
        return Result(None, output, stderr, True, elapsed, seen)
    if _qemu_failed(rc, stderr):
        raise CloudItError(f"{os.path.basename(cmd[0])} failed (exit code {rc}):\n{stderr.strip()}\n  command: {' '.join(cmd)}")
    status = rc >> 1 if rc % 2 == 1 else None  # 0: reset or power-off without a status
    return Result(status, output, stderr, False, elapsed, seen)


def symbolize(elf, output):
    """Turns the addresses of a panic's RIP and backtrace into function and line, with llvm-symbolizer."""
    tool = shutil.which("llvm-symbolizer") or shutil.which("llvm-symbolizer-14")
    addrs = re.findall(r"#\d+ (0x[0-9a-f]{16})", output)  # the backtrace's #0 is RIP
    if not tool or not addrs or not os.path.exists(elf):
        return []
    r = subprocess.run([tool, "--obj=" + elf, "--functions=short", "--output-style=GNU"]
                       + addrs, stdout=subprocess.PIPE, text=True)
    lines = r.stdout.strip().splitlines()
    frames = [f"{lines[i]} at {lines[i + 1]}" for i in range(0, len(lines) - 1, 2)]
    return [f"{a}  {f}" for a, f in zip(addrs, frames)]


def explain(result, elf, timeout):
    """Says what happened to a guest that did not exit cleanly; returns CloudIt's exit status."""
    if result.timed_out:
        tail = collections.deque(result.output.splitlines(), maxlen=15)
        say(f"the guest did not finish within {timeout:g} s (hung?). Last console lines:")
        for line in tail:
            print("  | " + line, file=sys.stderr)
        return 124
    if result.status is None:
        say("the guest reset without an exit status (a triple fault, or isa-debug-exit missing)")
        return 125
    if result.status == PANIC_STATUS:
        say(f"the guest panicked (status {PANIC_STATUS}); the panic text is above")
        frames = symbolize(elf, result.output)
        if frames:
            say("symbolized:")
            for f in frames:
                print("  " + f, file=sys.stderr)
    return result.status
