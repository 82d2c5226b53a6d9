// toro-vmm: a minimal KVM launcher that boots an ELF64 kernel as Firecracker does (boot_layout.hpp):
// through PVH when the kernel has a XEN_ELFNOTE_PHYS32_ENTRY note, else through the Linux 64-bit boot
// protocol, with Firecracker's legacy devices (serial.hpp), in one thread, as fast as the host allows:
// guest RAM is lazily-backed anonymous memory and only the boot structures and the kernel's file bytes
// are ever written.
//
//   toro-vmm [--mem MiB] [--cmdline STR] [--boot auto|pvh|linux64] [--timing] KERNEL.elf
//
// Exit status: a guest status from isa-debug-exit (port 0xf4) is (v << 1) | 1, always odd; a guest
// reset (i8042, 0xcf9) or triple fault is 0, as under QEMU -no-reboot; a launcher or KVM failure is 2,
// so it never looks like a guest status. HLT waits inside KVM (the LAPIC is in-kernel, as in
// Firecracker), so a guest that halts with interrupts off hangs, as it would there; the caller's timeout
// ends it. KVM_EXIT_HLT itself (only possible without an in-kernel LAPIC) is treated as the end: 0.
#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "vmm/boot_layout.hpp"
#include "vmm/serial.hpp"

namespace vmm = toro::tools::vmm;

namespace {

constexpr int exit_launcher_error = 2;
static_assert(vmm::layout::boot_timer_addr == vmm::boot_timer_base);

// Linux 6.1's <linux/kvm.h> declares flexible arrays with __DECLARE_FLEX_ARRAY, which in C++ adds an
// empty struct of size 1: kvm_cpuid2 and kvm_msrs get the wrong size and entry offset, and the ioctl
// numbers that encode that size are wrong too (KVM answers EINVAL). So these two use C-layout headers.
struct cpuid2_header {
    std::uint32_t nent;
    std::uint32_t padding;
};
struct msrs_header {
    std::uint32_t nmsrs;
    std::uint32_t pad;
};
constexpr unsigned long kvm_get_supported_cpuid = _IOWR(KVMIO, 0x05, cpuid2_header);
constexpr unsigned long kvm_set_cpuid2 = _IOW(KVMIO, 0x90, cpuid2_header);
constexpr unsigned long kvm_set_msrs = _IOW(KVMIO, 0x89, msrs_header);
static_assert(kvm_get_supported_cpuid == 0xc008ae05 && kvm_set_cpuid2 == 0x4008ae90 &&
              kvm_set_msrs == 0x4008ae89);
static_assert(sizeof(kvm_cpuid_entry2) == 40 && sizeof(kvm_msr_entry) == 16);

std::uint64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

std::uint64_t launch_ns = 0;
vmm::port_bus bus;

// Guest console output goes out a line at a time (and before any message of ours, to keep order).
void flush_console() {
    std::string& out = bus.com1.output();
    std::size_t done = 0;
    while (done < out.size()) {
        const ssize_t n = write(STDOUT_FILENO, out.data() + done, out.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break; // stdout is gone: drop the output rather than fail the guest
        done += static_cast<std::size_t>(n);
    }
    out.clear();
}

[[gnu::format(printf, 1, 2)]] void note(const char* fmt, ...) {
    flush_console();
    std::va_list ap;
    va_start(ap, fmt);
    std::fputs("toro-vmm: ", stderr);
    std::vfprintf(stderr, fmt, ap);
    std::fputc('\n', stderr);
    va_end(ap);
}

[[noreturn, gnu::format(printf, 1, 2)]] void die(const char* fmt, ...) {
    flush_console();
    std::va_list ap;
    va_start(ap, fmt);
    std::fputs("toro-vmm: error: ", stderr);
    std::vfprintf(stderr, fmt, ap);
    std::fputc('\n', stderr);
    va_end(ap);
    std::exit(exit_launcher_error);
}

void usage(std::FILE* to) {
    std::fputs(
        "usage: toro-vmm [--mem MiB] [--cmdline STR] [--boot auto|pvh|linux64] [--timing] KERNEL.elf\n"
        "\n"
        "Boots an ELF64 kernel on KVM as Firecracker does: PT_LOADs at their physical addresses, then\n"
        "  PVH           at the Xen PHYS32_ENTRY note's address, 32-bit protected mode with paging off,\n"
        "                ebx -> hvm_start_info at 0x6000;\n"
        "  Linux 64-bit  at e_entry, long mode on an identity map of the first GiB, rsi -> zero page.\n"
        "\n"
        "  --mem MiB      guest RAM in MiB (default 128, 2..261120)\n"
        "  --cmdline STR  kernel command line (at most 2047 bytes)\n"
        "  --boot MODE    auto (default): PVH if the kernel has the note, else Linux 64-bit;\n"
        "                 pvh or linux64: that protocol (pvh needs the note)\n"
        "  --timing       print launch -> first VM exit and launch -> end, in us, to stderr\n"
        "  --help         this text\n"
        "\n"
        "Devices: COM1 (0x3f8) to stdout; isa-debug-exit at 0xf4 (exit status (v << 1) | 1);\n"
        "i8042 reset (0x64 <- 0xfe) and 0xcf9 reset end the VM with status 0; Firecracker's boot\n"
        "timer (MMIO 0xc0000000 <- 123). Launcher errors exit with 2.\n",
        to);
}

struct options {
    std::uint64_t mem_mib = 128;
    std::string cmdline;
    vmm::boot_request boot = vmm::boot_request::automatic;
    bool timing = false;
    const char* kernel = nullptr;
};

options parse_args(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        auto value = [&](std::string_view name) -> const char* {
            if (i + 1 >= argc)
                die("%.*s needs a value (see --help)", static_cast<int>(name.size()), name.data());
            return argv[++i];
        };
        if (a == "--help" || a == "-h") {
            usage(stdout);
            std::exit(0);
        } else if (a == "--mem") {
            const char* v = value(a);
            char* end = nullptr;
            errno = 0;
            const unsigned long long n = std::strtoull(v, &end, 10);
            if (errno != 0 || end == v || *end != '\0' || v[0] == '-')
                die("--mem %s: expected a whole number of MiB, e.g. --mem 128", v);
            o.mem_mib = n;
        } else if (a == "--cmdline") {
            o.cmdline = value(a);
        } else if (a == "--boot") {
            auto b = vmm::parse_boot_request(value(a));
            if (!b) die("%s", b.error().message.c_str());
            o.boot = *b;
        } else if (a == "--timing") {
            o.timing = true;
        } else if (a.size() > 1 && a[0] == '-') {
            die("unknown option %s (see --help)", argv[i]);
        } else if (o.kernel != nullptr) {
            die("more than one kernel given (%s and %s)", o.kernel, argv[i]);
        } else {
            o.kernel = argv[i];
        }
    }
    if (o.kernel == nullptr) {
        usage(stderr);
        std::exit(exit_launcher_error);
    }
    return o;
}

std::vector<std::uint8_t> read_file(const char* path) {
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("cannot open kernel %s: %s", path, std::strerror(errno));
    struct stat st {};
    if (fstat(fd, &st) != 0) die("cannot stat kernel %s: %s", path, std::strerror(errno));
    if (!S_ISREG(st.st_mode)) die("kernel %s is not a regular file", path);
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(st.st_size));
    std::size_t done = 0;
    while (done < bytes.size()) {
        const ssize_t n = read(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) die("cannot read kernel %s: %s", path, std::strerror(errno));
        if (n == 0) break;
        done += static_cast<std::size_t>(n);
    }
    bytes.resize(done);
    close(fd);
    return bytes;
}

// ioctl that dies with the request's name on failure.
template <class Arg>
int xioctl(int fd, unsigned long request, Arg arg, const char* name) {
    int r;
    do r = ioctl(fd, request, arg);
    while (r < 0 && errno == EINTR);
    if (r < 0) die("%s failed: %s", name, std::strerror(errno));
    return r;
}
#define KVM(fd, req, arg) xioctl(fd, req, arg, #req)

int open_kvm() {
    const int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        const int e = errno;
        if (e == ENOENT)
            die("/dev/kvm does not exist: KVM is not available. Load the module (modprobe kvm_intel or "
                "kvm_amd), enable virtualization in the firmware, or on a VM enable nested virtualization");
        if (e == EACCES || e == EPERM) {
            struct stat st {};
            char mode[16] = "?";
            if (stat("/dev/kvm", &st) == 0)
                std::snprintf(mode, sizeof mode, "%03o uid %u gid %u", st.st_mode & 0777u, st.st_uid,
                              st.st_gid);
            die("no permission to open /dev/kvm (mode %s): run as a user in its group (usually kvm: sudo "
                "usermod -aG kvm $USER, then log in again), grant access (sudo setfacl -m u:$USER:rw "
                "/dev/kvm) "
                "or run as root",
                mode);
        }
        die("cannot open /dev/kvm: %s", std::strerror(e));
    }
    const int version = ioctl(fd, KVM_GET_API_VERSION, 0);
    if (version != KVM_API_VERSION)
        die("/dev/kvm speaks KVM API version %d, toro-vmm needs %d: the host kernel is too old or this "
            "is not Linux KVM",
            version, KVM_API_VERSION);
    return fd;
}

// KVM_EXIT_* names by number (<linux/kvm.h>), for error messages.
const char* exit_reason_name(std::uint32_t r) {
    // clang-format off
    static const char* const names[] = {
        "UNKNOWN", "EXCEPTION", "IO", "HYPERCALL", "DEBUG", "HLT", "MMIO", "IRQ_WINDOW_OPEN", "SHUTDOWN",
        "FAIL_ENTRY", "INTR", "SET_TPR", "TPR_ACCESS", "S390_SIEIC", "S390_RESET", "DCR", "NMI",
        "INTERNAL_ERROR", "OSI", "PAPR_HCALL", "S390_UCONTROL", "WATCHDOG", "S390_TSCH", "EPR", "SYSTEM_EVENT",
        "S390_STSI", "IOAPIC_EOI", "HYPERV", "ARM_NISV", "X86_RDMSR", "X86_WRMSR", "DIRTY_RING_FULL",
        "AP_RESET_HOLD", "X86_BUS_LOCK", "XEN", "RISCV_SBI", "RISCV_CSR", "NOTIFY",
    };
    // clang-format on
    return r < std::size(names) ? names[r] : "?";
}

void dump_segment(const char* name, const kvm_segment& s) {
    std::fprintf(stderr, "  %-3s sel=%04x base=%016llx limit=%08x type=%x p=%u dpl=%u db=%u s=%u l=%u g=%u\n",
                 name, s.selector, static_cast<unsigned long long>(s.base), s.limit, s.type, s.present, s.dpl,
                 s.db, s.s, s.l, s.g);
}

vmm::boot_mode boot_mode = vmm::boot_mode::linux64;

void dump_vcpu(int vcpu) {
    std::fprintf(stderr, "  (entered through %s)\n", vmm::boot_mode_name(boot_mode));
    kvm_regs r{};
    kvm_sregs s{};
    if (ioctl(vcpu, KVM_GET_REGS, &r) != 0 || ioctl(vcpu, KVM_GET_SREGS, &s) != 0) {
        std::fprintf(stderr, "  (registers unavailable: %s)\n", std::strerror(errno));
        return;
    }
    auto x = [](std::uint64_t v) { return static_cast<unsigned long long>(v); };
    std::fprintf(stderr,
                 "  rip=%016llx rflags=%016llx\n"
                 "  rax=%016llx rbx=%016llx rcx=%016llx rdx=%016llx\n"
                 "  rsi=%016llx rdi=%016llx rbp=%016llx rsp=%016llx\n"
                 "  r8 =%016llx r9 =%016llx r10=%016llx r11=%016llx\n"
                 "  r12=%016llx r13=%016llx r14=%016llx r15=%016llx\n"
                 "  cr0=%016llx cr2=%016llx cr3=%016llx cr4=%016llx efer=%016llx\n"
                 "  gdt=%016llx/%04x idt=%016llx/%04x\n",
                 x(r.rip), x(r.rflags), x(r.rax), x(r.rbx), x(r.rcx), x(r.rdx), x(r.rsi), x(r.rdi), x(r.rbp),
                 x(r.rsp), x(r.r8), x(r.r9), x(r.r10), x(r.r11), x(r.r12), x(r.r13), x(r.r14), x(r.r15),
                 x(s.cr0), x(s.cr2), x(s.cr3), x(s.cr4), x(s.efer), x(s.gdt.base), s.gdt.limit, x(s.idt.base),
                 s.idt.limit);
    dump_segment("cs", s.cs);
    dump_segment("ss", s.ss);
    dump_segment("ds", s.ds);
    dump_segment("es", s.es);
    dump_segment("fs", s.fs);
    dump_segment("gs", s.gs);
    dump_segment("tr", s.tr);
}

kvm_segment to_kvm(const vmm::segment& s) {
    kvm_segment k{};
    k.base = s.base;
    k.limit = s.limit;
    k.selector = s.selector;
    k.type = s.type;
    k.present = s.present;
    k.dpl = s.dpl;
    k.db = s.db;
    k.s = s.s;
    k.l = s.l;
    k.g = s.g;
    k.avl = s.avl;
    k.unusable = s.unusable;
    return k;
}

// The host's CPUID as KVM can offer it, with the hypervisor bit set and APIC IDs 0, like Firecracker's
// normalization minus CPU templates.
void set_cpuid(int kvm, int vcpu) {
    std::vector<std::uint8_t> buf;
    auto* header = static_cast<cpuid2_header*>(nullptr);
    for (std::uint32_t n = 128;; n *= 2) {
        buf.assign(sizeof(cpuid2_header) + n * sizeof(kvm_cpuid_entry2), 0);
        header = reinterpret_cast<cpuid2_header*>(buf.data());
        header->nent = n;
        if (ioctl(kvm, kvm_get_supported_cpuid, header) == 0) break;
        if (errno != E2BIG || n >= 4096) die("KVM_GET_SUPPORTED_CPUID failed: %s", std::strerror(errno));
    }
    auto* entries = reinterpret_cast<kvm_cpuid_entry2*>(buf.data() + sizeof(cpuid2_header));
    for (std::uint32_t i = 0; i < header->nent; ++i) {
        kvm_cpuid_entry2& e = entries[i];
        if (e.function == 1) {
            e.ecx |= 1u << 31;    // running under a hypervisor
            e.ebx &= 0x00ffffffu; // initial APIC ID 0: the only vCPU
        } else if (e.function == 0xb || e.function == 0x1f) {
            e.edx = 0; // x2APIC ID
        }
    }
    xioctl(vcpu, kvm_set_cpuid2, header, "KVM_SET_CPUID2");
}

// Firecracker's boot MSRs: syscall/sysenter state and the TSC zeroed, fast strings on, MTRRs enabled
// with write-back as the default memory type.
void set_boot_msrs(int vcpu) {
    constexpr std::uint32_t indices[] = {0x174,      0x175,      0x176, 0xc0000081, 0xc0000083, 0xc0000102,
                                         0xc0000084, 0xc0000082, 0x10,  0x1a0,      0x2ff};
    constexpr std::size_t n = std::size(indices);
    struct {
        msrs_header header;
        kvm_msr_entry entries[n];
    } msrs{};
    msrs.header.nmsrs = n;
    for (std::size_t i = 0; i < n; ++i) msrs.entries[i].index = indices[i];
    msrs.entries[9].data = 1;               // IA32_MISC_ENABLE: fast string operations
    msrs.entries[10].data = (1u << 11) | 6; // IA32_MTRR_DEF_TYPE: MTRRs on, default WB
    const int set = xioctl(vcpu, kvm_set_msrs, &msrs, "KVM_SET_MSRS");
    if (set != static_cast<int>(n))
        die("KVM_SET_MSRS set %d of %zu boot MSRs; KVM refused MSR %#x", set, n, msrs.entries[set].index);
}

// LINT0 delivers the PIC's interrupts (ExtINT), LINT1 NMIs: the virtual-wire setup Firecracker makes.
void set_lint(int vcpu) {
    kvm_lapic_state lapic{};
    KVM(vcpu, KVM_GET_LAPIC, &lapic);
    auto reg = [&](std::size_t off, std::uint32_t mode) {
        std::uint32_t v;
        std::memcpy(&v, lapic.regs + off, 4);
        v = (v & ~0x700u) | (mode << 8);
        std::memcpy(lapic.regs + off, &v, 4);
    };
    reg(0x350, 0x7); // LVT LINT0: ExtINT
    reg(0x360, 0x4); // LVT LINT1: NMI
    KVM(vcpu, KVM_SET_LAPIC, &lapic);
}

void set_registers(int vcpu, const vmm::boot_cpu_state& st) {
    kvm_sregs s{};
    KVM(vcpu, KVM_GET_SREGS, &s); // start from reset state, as Firecracker does
    s.gdt.base = st.gdt_base;
    s.gdt.limit = st.gdt_limit;
    s.idt.base = st.idt_base;
    s.idt.limit = st.idt_limit;
    s.cs = to_kvm(st.code);
    s.ds = s.es = s.fs = s.gs = s.ss = to_kvm(st.data);
    s.tr = to_kvm(st.tss);
    s.cr0 = (s.cr0 & ~st.cr0_clear) | st.cr0_set;
    s.cr3 = st.cr3;
    s.cr4 = (s.cr4 & ~st.cr4_clear) | st.cr4_set;
    s.efer = (s.efer & ~st.efer_clear) | st.efer_set;
    KVM(vcpu, KVM_SET_SREGS, &s);

    kvm_regs r{};
    r.rip = st.rip;
    r.rsp = st.rsp;
    r.rbp = st.rbp;
    r.rsi = st.rsi;
    r.rbx = st.rbx;
    r.rflags = st.rflags;
    KVM(vcpu, KVM_SET_REGS, &r);
}

struct timing {
    bool enabled = false;
    std::uint64_t first_exit_ns = 0;
};
timing times;

// Tearing a VM with an in-kernel irqchip down takes KVM 6-25 ms here (it waits for SRCU grace periods
// while it unregisters the PIC, IOAPIC and PIT), against 0.4 ms without one. Whoever drops the last
// reference to the VM pays that, and if that is us, our parent sees our exit status only afterwards.
// So at the end a child that shares our memory (clone(CLONE_VM): nothing is copied, and it is a process
// of its own, not a thread) takes over the VM's file descriptors and keeps them, and our address
// space, until our whole thread group is gone (a pidfd becomes readable then; KVM's own
// "kvm-nx-lpage-recovery" worker is a thread of ours, so waiting for our main thread alone is not
// enough). The teardown then runs in that child after our status is out. It keeps nothing else open,
// so pipes to our stdout and stderr still close when we exit.
struct reaper_state {
    int keep[4] = {-1, -1, -1, -1}; // /dev/kvm, the VM, the vCPU, a pidfd of this process
};
reaper_state reaper;
alignas(16) char reaper_stack[16384];

int reaper_main(void*) {
    // Only raw system calls: this runs on a private stack beside our exiting process.
    int keep[4];
    std::copy(std::begin(reaper.keep), std::end(reaper.keep), keep);
    std::sort(std::begin(keep), std::end(keep));
    unsigned first = 0;
    for (int k : keep) {
        if (static_cast<unsigned>(k) > first) close_range(first, static_cast<unsigned>(k) - 1, 0);
        first = static_cast<unsigned>(k) + 1;
    }
    close_range(first, ~0u, 0);
    pollfd launcher{reaper.keep[3], POLLIN, 0};
    while (poll(&launcher, 1, -1) < 0 && errno == EINTR) {
    }
    return 0; // the last references to the VM and its memory go with us: the VM is destroyed here
}

// Hands the VM to a reaper; on any failure we keep it and pay the teardown in _exit.
void defer_vm_teardown() {
    if (reaper.keep[1] < 0) return;
    const int self = static_cast<int>(syscall(SYS_pidfd_open, getpid(), 0)); // Linux >= 5.3
    if (self < 0) return;
    reaper.keep[3] = self;
    // exit signal 0: nobody waits for it; once we are gone it is reparented and reaped like any orphan.
    if (clone(reaper_main, reaper_stack + sizeof reaper_stack, CLONE_VM, nullptr) < 0) close(self);
}

[[noreturn]] void finish(int status) {
    flush_console();
    if (times.enabled) {
        const std::uint64_t end = now_ns();
        std::fprintf(stderr, "toro-vmm: launch -> first exit = %llu us, launch -> end = %llu us\n",
                     static_cast<unsigned long long>((times.first_exit_ns - launch_ns) / 1000),
                     static_cast<unsigned long long>((end - launch_ns) / 1000));
    }
    std::fflush(stderr);
    defer_vm_teardown();
    _exit(status);
}

[[noreturn]] void fail_with_registers(int vcpu, const char* fmt, ...) {
    flush_console();
    std::va_list ap;
    va_start(ap, fmt);
    std::fputs("toro-vmm: error: ", stderr);
    std::vfprintf(stderr, fmt, ap);
    std::fputc('\n', stderr);
    va_end(ap);
    dump_vcpu(vcpu);
    finish(exit_launcher_error);
}

[[noreturn]] void run(int vcpu, kvm_run* run_state) {
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) != 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            fail_with_registers(vcpu, "KVM_RUN failed: %s", std::strerror(errno));
        }
        if (times.first_exit_ns == 0) times.first_exit_ns = now_ns();
        kvm_run& k = *run_state;
        switch (k.exit_reason) {
        case KVM_EXIT_IO: {
            auto* data = reinterpret_cast<std::uint8_t*>(run_state) + k.io.data_offset;
            const std::size_t size = k.io.size;
            for (std::uint32_t i = 0; i < k.io.count; ++i, data += size) {
                std::span<std::uint8_t> bytes{data, size};
                if (k.io.direction == KVM_EXIT_IO_IN) {
                    bus.io_in(k.io.port, bytes);
                    continue;
                }
                const vmm::io_action a = bus.io_out(k.io.port, bytes);
                if (a.kind == vmm::io_action::exit) {
                    if (a.why != nullptr) note("%s; exiting with status %d", a.why, a.status);
                    finish(a.status);
                }
            }
            std::string& out = bus.com1.output();
            if (!out.empty() && (out.back() == '\n' || out.size() >= 4096)) flush_console();
            break;
        }
        case KVM_EXIT_MMIO:
            if (k.mmio.is_write) {
                if (vmm::mmio_write(k.mmio.phys_addr, {k.mmio.data, k.mmio.len}) ==
                    vmm::mmio_event::boot_complete)
                    note("guest boot time = %llu us (since launch)",
                         static_cast<unsigned long long>((now_ns() - launch_ns) / 1000));
            } else {
                std::memset(k.mmio.data, 0, sizeof k.mmio.data);
            }
            break;
        case KVM_EXIT_SHUTDOWN:
            // A triple fault: QEMU -no-reboot ends with 0 here, and so do we.
            note("guest triple-faulted (KVM_EXIT_SHUTDOWN); exiting with status 0 as QEMU -no-reboot does");
            dump_vcpu(vcpu);
            finish(0);
        case KVM_EXIT_HLT:
            // Only reachable without an in-kernel LAPIC (ours always has one, where HLT waits in KVM): a
            // halted single vCPU with no device to wake it is finished.
            note("guest halted (KVM_EXIT_HLT) with nothing to wake it; exiting with status 0");
            finish(0);
        case KVM_EXIT_SYSTEM_EVENT:
            note("guest system event %u (KVM_EXIT_SYSTEM_EVENT: 1 shutdown, 2 reset, 3 crash); exiting with "
                 "status 0",
                 k.system_event.type);
            finish(0);
        case KVM_EXIT_FAIL_ENTRY:
            fail_with_registers(vcpu,
                                "KVM could not enter the guest (exit reason 9 FAIL_ENTRY, hardware "
                                "reason %#llx)",
                                static_cast<unsigned long long>(k.fail_entry.hardware_entry_failure_reason));
        case KVM_EXIT_INTERNAL_ERROR: {
            std::string extra;
            for (std::uint32_t i = 0; i < k.internal.ndata && i < 16; ++i) {
                char w[24];
                std::snprintf(w, sizeof w, " %#llx", static_cast<unsigned long long>(k.internal.data[i]));
                extra += w;
            }
            fail_with_registers(vcpu, "KVM internal error (exit reason 17 INTERNAL_ERROR), suberror %u%s%s%s",
                                k.internal.suberror,
                                k.internal.suberror == KVM_INTERNAL_ERROR_EMULATION ? " (emulation failure)"
                                                                                    : "",
                                extra.empty() ? "" : ", data:", extra.c_str());
        }
        default:
            fail_with_registers(vcpu, "unexpected VM exit, reason %u %s", k.exit_reason,
                                exit_reason_name(k.exit_reason));
        }
    }
}

} // namespace

int main(int argc, char** argv) {
    launch_ns = now_ns();
    const options opt = parse_args(argc, argv);
    times.enabled = opt.timing;

    auto plan = vmm::plan_memory(opt.mem_mib);
    if (!plan) die("%s", plan.error().message.c_str());
    if (opt.cmdline.size() + 1 > vmm::layout::cmdline_max_size)
        die("--cmdline is %zu bytes; at most %llu fit (Firecracker's limit)", opt.cmdline.size(),
            static_cast<unsigned long long>(vmm::layout::cmdline_max_size - 1));
    const std::vector<std::uint8_t> kernel = read_file(opt.kernel);
    // Check the kernel before any KVM work, so a bad file fails fast and clearly.
    auto image = toro::tools::parse_elf64(kernel);
    if (!image) {
        const std::string& m = image.error().message;
        die("%s: %s%s", opt.kernel, m.c_str(),
            m.find("ELFCLASS32") != std::string::npos
                ? " (toro-vmm boots the ELF64 kernel, e.g. hello.elf, not its Multiboot wrapper hello32.elf)"
                : "");
    }
    // The entry (and whether --boot pvh is possible) is known from the file alone: fail before KVM work.
    auto entry = vmm::select_boot_entry(*image, opt.boot);
    if (!entry) die("%s: %s", opt.kernel, entry.error().message.c_str());
    boot_mode = entry->mode;

    const int kvm = open_kvm();
    const int vm = KVM(kvm, KVM_CREATE_VM, 0);

    void* host = mmap(nullptr, plan->total, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (host == MAP_FAILED)
        die("cannot reserve %llu MiB of guest memory: %s (try a smaller --mem)",
            static_cast<unsigned long long>(opt.mem_mib), std::strerror(errno));
    auto* base = static_cast<std::uint8_t*>(host);
    // Memory slots go in before the irqchip: once an in-kernel irqchip exists, each slot change waits for
    // KVM to synchronize with it (5-11 ms per slot measured here, against 0.1-0.2 ms before).
    kvm_userspace_memory_region low{};
    low.slot = 0;
    low.guest_phys_addr = 0;
    low.memory_size = plan->low_size;
    low.userspace_addr = reinterpret_cast<std::uint64_t>(base);
    KVM(vm, KVM_SET_USER_MEMORY_REGION, &low);
    if (plan->high_size != 0) {
        kvm_userspace_memory_region high{};
        high.slot = 1;
        high.guest_phys_addr = vmm::layout::first_addr_past_32bits;
        high.memory_size = plan->high_size;
        high.userspace_addr = reinterpret_cast<std::uint64_t>(base + plan->low_size);
        KVM(vm, KVM_SET_USER_MEMORY_REGION, &high);
    }

    KVM(vm, KVM_SET_TSS_ADDR, static_cast<unsigned long>(vmm::layout::kvm_tss_addr));
    // KVM's identity-map page (only used for real mode on hosts without unrestricted guests) defaults
    // to the page below the TSS, which is where Firecracker leaves it too.
    KVM(vm, KVM_CREATE_IRQCHIP, 0);
    kvm_pit_config pit{};
    pit.flags = KVM_PIT_SPEAKER_DUMMY;
    KVM(vm, KVM_CREATE_PIT2, &pit);

    const std::span<std::uint8_t> low_mem{base, static_cast<std::size_t>(plan->low_size)};
    // The MADT lists the IOAPIC KVM_CREATE_IRQCHIP made, so the guest finds its one CPU and the IOAPIC
    // through ACPI (the zero page and the start info point at the RSDP) instead of scanning for them.
    auto state =
        vmm::prepare_boot(*image, *entry, low_mem, plan->total, opt.cmdline, vmm::ioapic_presence::present);
    if (!state) die("%s: %s", opt.kernel, state.error().message.c_str());

    const int vcpu = KVM(vm, KVM_CREATE_VCPU, 0);
    reaper.keep[0] = kvm;
    reaper.keep[1] = vm;
    reaper.keep[2] = vcpu;
    const int run_size = KVM(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    void* run_map =
        mmap(nullptr, static_cast<std::size_t>(run_size), PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run_map == MAP_FAILED) die("cannot map the vCPU's kvm_run area: %s", std::strerror(errno));

    set_cpuid(kvm, vcpu);
    set_boot_msrs(vcpu);
    set_registers(vcpu, *state);
    set_lint(vcpu);

    run(vcpu, static_cast<kvm_run*>(run_map));
}
