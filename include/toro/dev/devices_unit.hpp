// The devices unit: `toro::devices<Drivers...>` probes at boot for the devices the named drivers handle,
// starts one driver instance per device found, wires its interrupt, and registers it (register_block_driver,
// register_network_interface: toro/dev/registry.hpp). Only the drivers named are compiled in:
//
//     using os = toro::appliance<toro::memory, toro::process,
//                                toro::devices<toro::virtio_blk_driver<>, toro::e1000_driver<>>>;
//     ... toro::find_block_device("virtio-blk0"), toro::find_network_interface("eth0") ...
//
// Where devices are looked for: virtio-mmio devices the command line announces (virtio_mmio.device=, QEMU
// microvm with acpi=off, Firecracker), else those the ACPI DSDT describes (microvm with ACPI); then, when a
// named driver may run PCI devices, every PCI function (ECAM where MCFG gives it, else ports 0xCF8/0xCFC),
// BARs firmware left at 0 assigned (qboot). A driver's probe says whether the device is its own; a device no
// driver claims is skipped (its INTx pin disabled); a device that fails to start is reported and skipped,
// and the appliance goes on.
//
// Interrupts. A driver instance waits on an event its interrupt handler sets: MSI-X when the PCI function has
// it (one table entry, vector on the boot CPU), else the IOAPIC (virtio-mmio's GSI; PCI INTx through the
// chipset's routing or the interrupt line firmware wrote, level-triggered, shared between devices on one
// line). The thread sleeps meanwhile; its CPU halts when nothing else runs. A device with no usable interrupt
// is polled by a sleeping thread every poll_interval_ns (reported at probe), never by a spinning one.
//
// Instances live in heap memory that is never freed (they outlive the app's entry: the kernel has no exit
// path that would stop devices first); nothing is allocated after start.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>
#include <utility>

#include <toro/base/expected.hpp>
#include <toro/dev/blk/virtio_blk.hpp>
#include <toro/dev/net/e1000.hpp>
#include <toro/dev/net/virtio_net.hpp>
#include <toro/dev/pci/config.hpp>
#include <toro/dev/pci/pci.hpp>
#include <toro/dev/registry.hpp>
#include <toro/dev/virtio/acpi_mmio.hpp>
#include <toro/dev/virtio/mmio.hpp>
#include <toro/dev/virtio/pci.hpp>
#include <toro/kernel.hpp>
#include <toro/mem/memory_unit.hpp>
#include <toro/proc/process_unit.hpp>

namespace toro {

// A waiting thread with no interrupt to wake it checks this often (sleeping in between).
inline constexpr std::uint64_t poll_interval_ns = 1'000'000;
// A blocking driver operation gives up (and resets its device) after this long without an answer.
inline constexpr std::uint64_t device_timeout_ns = 10'000'000'000;

// ---- waiting for a device ------------------------------------------------------------------------------

// The wait policy of kernel driver instances: sleeps on `ev` (set by the device's interrupt handler) until
// ready(), re-checking after arming the event so a completion that landed in between is not lost. Without an
// interrupt (`*irq` false) it wakes every poll_interval_ns. Returns with ready() false after `timeout_ns`
// (the driver then gives up on the device) or, for wait_until, at the deadline.
struct interrupt_wait {
    event* ev = nullptr;
    const bool* irq = nullptr;
    std::uint64_t timeout_ns = device_timeout_ns;

    template <class Ready>
    void wait(Ready&& ready) {
        (void)wait_until(ready, deadline_after_ns(timeout_ns));
    }

    // deadline: a clock-tick deadline (deadline_after_ns); 0 waits forever. Checked on every pass: a
    // shared line or a cause that brings no completion wakes the waiter too.
    template <class Ready>
    bool wait_until(Ready&& ready, std::uint64_t deadline) {
        for (;;) {
            if (ready()) return true;
            if (deadline != 0 && arch::rdtsc() >= deadline) return false;
            ev->reset();
            // The reset must be visible before ready() reads the device's index (and, with EVENT_IDX, before
            // it does: the used_event the driver just wrote): otherwise the handler's set() can land before
            // our reset and a completion that came in between is slept through.
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            if (ready()) return true;
            std::uint64_t until = deadline;
            if (!*irq) {
                const std::uint64_t tick = deadline_after_ns(poll_interval_ns);
                if (until == 0 || tick < until) until = tick;
            }
            (void)ev->wait_until(until);
        }
    }
};
static_assert(std::is_trivially_destructible_v<interrupt_wait>);

// ---- interrupt lines -----------------------------------------------------------------------------------

namespace detail {

// A GSI shared by several devices (PCI INTx lines are): one vector, every handler run on each interrupt.
// Level-triggered lines stay asserted until each device is acknowledged, so every handler acknowledges its
// own device (reading its ISR or ICR) whether or not it raised the line.
struct shared_line {
    static constexpr std::size_t max_handlers = 4;
    std::uint32_t gsi = 0;
    std::uint8_t vector = 0;
    std::array<interrupt_slot, max_handlers> handlers{};
    std::uint32_t count = 0; // release-published after the slot is filled
};
inline std::array<shared_line, device_vectors> shared_lines{};
inline std::size_t shared_line_count = 0;

inline void run_shared_line(void* context) {
    const auto* line = static_cast<const shared_line*>(context);
    const std::uint32_t n = __atomic_load_n(&line->count, __ATOMIC_ACQUIRE);
    for (std::uint32_t i = 0; i < n; ++i) line->handlers[i].fn(line->handlers[i].context);
}

} // namespace detail

// Runs fn(context) on each interrupt of `gsi`, delivered to `cpu`. Called at start (boot CPU, one thread).
inline expected<void> attach_gsi(std::uint32_t gsi, arch::trigger_mode trigger, arch::polarity pol,
                                 interrupt_handler fn, void* context, std::uint32_t cpu = 0) {
    for (std::size_t i = 0; i < detail::shared_line_count; ++i) {
        detail::shared_line& l = detail::shared_lines[i];
        if (l.gsi != gsi) continue;
        if (l.count == detail::shared_line::max_handlers)
            return unexpected{"too many devices share one interrupt line; GSI", gsi};
        l.handlers[l.count] = {fn, context};
        __atomic_store_n(&l.count, l.count + 1, __ATOMIC_RELEASE);
        return {};
    }
    if (detail::shared_line_count == detail::shared_lines.size())
        return unexpected{"no free device interrupt vector; in use", device_vectors};
    detail::shared_line& l = detail::shared_lines[detail::shared_line_count];
    l.handlers[0] = {fn, context};
    l.count = 0; // a vector left by an earlier failed route may still name this slot: it runs nothing
    auto vector = register_interrupt(&detail::run_shared_line, &l);
    if (!vector) return unexpected{vector.error()};
    // Handler first, then the route: the pin is unmasked with its handler in place. A line whose route
    // failed is not recorded, so a later device on the same GSI does not believe it is wired.
    __atomic_store_n(&l.count, 1u, __ATOMIC_RELEASE);
    if (auto ok = route_gsi(gsi, *vector, cpu, trigger, pol); !ok) {
        __atomic_store_n(&l.count, 0u, __ATOMIC_RELEASE);
        return ok;
    }
    l.gsi = gsi;
    l.vector = *vector;
    ++detail::shared_line_count;
    return {};
}

// A PCI function's INTx pin through the firmware's overrides (QEMU's MADT makes PCI IRQs 5, 9, 10, 11
// level, active high). PCI lines are level-triggered whatever ISA's default says. Returns the ISA IRQ.
template <pci_config_access A>
expected<std::uint8_t> attach_intx(A& a, const pci_function& fn, interrupt_handler handler, void* context,
                                   std::uint32_t cpu = 0) {
    auto irq = intx_isa_irq(a, fn);
    if (!irq) return irq;
    const arch::gsi_route r = arch::isa_route(*irq, detail::platform.override_list());
    if (auto ok = attach_gsi(r.gsi, arch::trigger_mode::level, r.pol, handler, context, cpu); !ok)
        return unexpected{ok.error()};
    // Firmware (or an earlier MSI-X attempt) may have left the pin disabled.
    write_command(a, fn.address, read_command(a, fn.address).set_interrupt_disable(false));
    return irq;
}

// MSI-X entry `entry` of a function whose capability is `m`, to a vector of its own on `cpu`. Maps the
// table (uncached), enables MSI-X (INTx off) and programs the entry.
template <pci_config_access A>
expected<void> attach_msix(A& config, const pci_function& fn, const msix_info& m, const pci_bar_list& bars,
                           std::uint16_t entry, interrupt_handler handler, void* context,
                           std::uint32_t cpu = 0) {
    if (cpu >= proc.cpu_count) return unexpected{"MSI-X: no such CPU", cpu};
    if (auto ok = check_msix_bars(m, bars); !ok) return ok;
    const std::uint64_t table = bars[m.table_bir].address + m.table_offset;
    auto window = kernel_map.map_device(table, std::uint64_t{m.table_size} * msix_entry::size);
    if (!window) return unexpected{window.error()};
    if (entry >= m.table_size) return unexpected{"MSI-X: no such table entry; entry", entry};
    // Everything that can fail is checked before a vector is taken (there are 16, never given back).
    if (auto probe = x86_msi_message(proc.apic_ids[cpu], first_device_vector); !probe)
        return unexpected{probe.error()};
    auto vector = register_interrupt(handler, context);
    if (!vector) return unexpected{vector.error()};
    // The entry is programmed (masked while written) before MSI-X goes on; the other entries keep the
    // masked state they have out of reset.
    msix_table<arch::mmio_window> t{arch::mmio_window{static_cast<volatile std::uint32_t*>(*window)},
                                    m.table_size};
    if (auto ok = t.set(entry, *x86_msi_message(proc.apic_ids[cpu], *vector)); !ok) return ok;
    enable_msix(config, fn.address, m);
    return {};
}

// ---- what a driver binding gets at probe time ----------------------------------------------------------

struct probe_context {
    kernel_config_access<> config; // ECAM where MCFG gives it, else ports
    virtio::pci_bar_window window;
    std::uint32_t irq_cpu = 0; // where device interrupts are delivered
};

// How an instance's interrupt was wired, for the probe report.
struct irq_wiring {
    enum class kind : std::uint8_t { none, gsi, intx, msix } how = kind::none;
    std::uint32_t number = 0; // the GSI or INTx line
    error why{""};            // kind::none: what failed
};

inline void print_wiring(const irq_wiring& w) {
    switch (w.how) {
    case irq_wiring::kind::gsi:
        print("GSI {}", w.number);
        break;
    case irq_wiring::kind::intx:
        print("INTx IRQ {}", w.number);
        break;
    case irq_wiring::kind::msix:
        print("MSI-X");
        break;
    case irq_wiring::kind::none:
        print("no interrupt ({}), polled every {} us", w.why, poll_interval_ns / 1000);
        break;
    }
}

// Allocates a T for the kernel's life, with T's alignment (rings want pages).
template <class T, class... Args>
expected<T*> make_instance(Args&&... args) {
    auto p = get_aligned_mem(sizeof(T), alignof(T) < 16 ? 16 : alignof(T));
    if (!p) return unexpected{p.error()};
    return ::new (*p) T(std::forward<Args>(args)...);
}

// What wires an instance's interrupt, given its handler: the IOAPIC for virtio-mmio, INTx for PCI (MSI-X:
// virtio_pci_start).
inline irq_wiring wire_gsi(std::uint32_t gsi, interrupt_handler h, void* ctx, const probe_context& pc) {
    // virtio-mmio lines are level-triggered, active high (QEMU raises them while the ISR is non-zero).
    if (auto r = attach_gsi(gsi, arch::trigger_mode::level, arch::polarity::active_high, h, ctx, pc.irq_cpu);
        !r)
        return {irq_wiring::kind::none, gsi, r.error()};
    return {irq_wiring::kind::gsi, gsi, error{""}};
}
inline irq_wiring wire_intx(probe_context& pc, const pci_function& fn, interrupt_handler h, void* ctx) {
    auto irq = attach_intx(pc.config, fn, h, ctx, pc.irq_cpu);
    if (!irq) return {irq_wiring::kind::none, 0, irq.error()};
    return {irq_wiring::kind::intx, *irq, error{""}};
}

// ---- starting a virtio-pci instance (shared by the virtio drivers) --------------------------------------

// The virtio transports a binding drives, a bit each. An appliance that knows its VMM names fewer, and the
// driver code for the others is not compiled in (microvm and Firecracker: via_mmio).
enum virtio_via : unsigned { via_mmio = 1, via_pci_modern = 2, via_pci_legacy = 4, via_pci = 6, via_any = 7 };

// Creates the modern or legacy instance for `d` (as Via allows), wires its interrupt and starts its driver.
// MSI-X when the function has it: entry 0, programmed before the driver starts so that every queue gets it
// during queue setup (4.1.5.1.3), no configuration-change vector; for a legacy function MSI-X also goes on
// before the transport is made, since it moves the device configuration from 0x14 to 0x18. Otherwise, or
// when MSI-X cannot be set up, INTx once the driver runs.
template <unsigned Via, class Modern, class Legacy, class DriverOf, class Finish>
expected<void> virtio_pci_start(probe_context& pc, virtio::virtio_pci_device& d, DriverOf&& driver_of,
                                Finish&& finish) {
    auto run = [&](auto* inst, auto make_transport) -> expected<void> {
        using inst_t = std::remove_pointer_t<decltype(inst)>;
        irq_wiring w{irq_wiring::kind::none, 0, error{""}};
        if (d.msix) {
            if (auto ok = attach_msix(pc.config, d.function, *d.msix, d.bars, 0, &inst_t::on_interrupt, inst,
                                      pc.irq_cpu);
                ok)
                w = {irq_wiring::kind::msix, 0, error{""}};
            else
                print("devices: PCI {:#x}: MSI-X: {}; trying INTx\n", d.function.address.bdf(), ok.error());
        }
        d.msix_enabled = w.how == irq_wiring::kind::msix;
        // Firmware may have left MSI-X on (kexec, iPXE): off, or a legacy device would serve its
        // configuration at 0x18 while we read 0x14, and its INTx would never fire.
        if (!d.msix_enabled && d.msix) disable_msix(pc.config, d.function.address, *d.msix);
        auto t = make_transport();
        if (!t) return unexpected{t.error()};
        if (d.msix_enabled) t->use_queue_vector(0);
        auto& drv = driver_of(*inst);
        if (auto ok = drv.start(*t); !ok) return ok;
        if (!d.msix_enabled) w = wire_intx(pc, d.function, &inst_t::on_interrupt, inst);
        inst->set_irq(w.how);
        return finish(*inst, w);
    };
    if constexpr ((Via & via_pci_modern) != 0) {
        if (d.modern) {
            auto inst = make_instance<Modern>();
            if (!inst) return unexpected{inst.error()};
            return run(*inst, [&] {
                return virtio::modern_transport(d, [](std::uint64_t phys, std::uint64_t size) {
                    return kernel_map.map_device(phys, size);
                });
            });
        }
    }
    if constexpr ((Via & via_pci_legacy) != 0) {
        if (d.transitional) {
            auto inst = make_instance<Legacy>();
            if (!inst) return unexpected{inst.error()};
            return run(*inst, [&] { return virtio::legacy_transport(d); });
        }
    }
    return unexpected{"virtio-pci: the device's interface (legacy or modern) is not compiled in; device",
                      d.virtio_id};
}

// ---- virtio-blk ----------------------------------------------------------------------------------------

namespace detail {

// One block device: the driver, its event and lock. Models block_device; operations are serialised by the
// mutex (the driver has one owner at a time), so any thread may use it.
template <virtio::transport T, std::uint16_t QueueSize>
class blk_instance {
public:
    using driver_type = blk::virtio_blk<T, QueueSize, interrupt_wait>;

    blk_instance() : drv_{interrupt_wait{&ev_, &irq_}} {}

    std::size_t block_size() const { return drv_.block_size(); }
    std::uint64_t block_count() const { return drv_.block_count(); }
    expected<void> read(std::uint64_t lba, std::span<std::byte> dst) {
        return locked([&] { return drv_.read(lba, dst); });
    }
    expected<void> write(std::uint64_t lba, std::span<const std::byte> src) {
        return locked([&] { return drv_.write(lba, src); });
    }
    expected<void> flush() {
        return locked([&] { return drv_.flush(); });
    }

    driver_type& driver() { return drv_; }
    void set_irq(irq_wiring::kind k) {
        irq_ = k != irq_wiring::kind::none;
        msix_ = k == irq_wiring::kind::msix;
    }
    // A message names this device alone: nothing to acknowledge (and MSI-X is wired before the driver
    // starts, when there is no transport yet). A line may be another device's: the ISR read acknowledges
    // ours (the line drops) and says whether it was.
    static void on_interrupt(void* self) {
        auto* i = static_cast<blk_instance*>(self);
        if (i->msix_ || (i->drv_.started() && i->drv_.transport().interrupt_status() != 0)) i->ev_.set();
    }

private:
    template <class F>
    expected<void> locked(F&& f) {
        lock_.lock();
        expected<void> r = f();
        lock_.unlock();
        return r;
    }

    driver_type drv_;
    event ev_;
    mutex lock_;
    bool irq_ = false;
    bool msix_ = false;
};

// The virtio-blk binding's instance type and registration (virtio_binding below).
struct blk_kind {
    template <class T, std::uint16_t Q>
    using instance = blk_instance<T, Q>;
    template <class Inst>
    static expected<void> add(Inst& inst, const irq_wiring& w, string_view transport) {
        auto name = register_block_driver("virtio-blk", "virtio-blk", block_device_ref{inst});
        if (!name) return unexpected{name.error()};
        print("devices: {}: virtio-blk over {}, {} blocks of {} bytes, ", *name, transport,
              inst.block_count(), inst.block_size());
        print_wiring(w);
        print("\n");
        return {};
    }
};
} // namespace detail

// ---- virtio drivers ------------------------------------------------------------------------------------

// What every virtio binding does: claims the devices of its id on virtio-mmio and virtio-pci, makes
// Kind::instance<Transport, QueueSize> over the transport found (legacy PCI devices impose their queue size:
// QEMU's is 256), wires its interrupt and hands it to Kind::add (which registers it).
template <std::uint32_t DeviceId, class Kind, std::uint16_t QueueSize, unsigned Via>
struct virtio_binding {
    static_assert(Via != 0 && (Via & ~unsigned{via_any}) == 0,
                  "Via: a mask of via_mmio, via_pci_modern, via_pci_legacy");
    using mmio_t = virtio::mmio_transport<arch::mmio_window>;
    using modern_t = virtio::modern_pci_transport<virtio::pci_mmio_regs>;
    using legacy_t = virtio::legacy_pci_transport<virtio::pci_port_regs>;
    static constexpr std::uint16_t legacy_queue = 256;

    static constexpr bool uses_pci = (Via & via_pci) != 0;

    static bool claims_mmio(const mmio_t& t) { return (Via & via_mmio) != 0 && t.device_id() == DeviceId; }
    static bool claims_pci(probe_context& pc, const pci_function& fn) {
        return (Via & via_pci) != 0 && virtio::virtio_pci_id(pc.config, fn) == DeviceId;
    }

    static expected<void> start_mmio(probe_context& pc, const virtio::mmio_device_desc& d, mmio_t t) {
        if constexpr ((Via & via_mmio) == 0)
            return unexpected{"virtio-mmio is not compiled in"};
        else
            return start_mmio_instance(pc, d, t);
    }

    static expected<void> start_pci(probe_context& pc, const pci_function& fn) {
        if constexpr ((Via & via_pci) == 0) {
            return unexpected{"virtio-pci is not compiled in"};
        } else {
            auto d = virtio::setup_virtio_pci(pc.config, fn, pc.window);
            if (!d) return unexpected{d.error()};
            return virtio_pci_start<Via, typename Kind::template instance<modern_t, QueueSize>,
                                    typename Kind::template instance<legacy_t, legacy_queue>>(
                pc, *d, [](auto& inst) -> auto& { return inst.driver(); },
                [](auto& inst, const irq_wiring& w) {
                    return Kind::add(inst, w,
                                     inst.driver().transport().legacy() ? "virtio-pci legacy"
                                                                        : "virtio-pci modern");
                });
        }
    }

private:
    static expected<void> start_mmio_instance(probe_context& pc, const virtio::mmio_device_desc& d,
                                              mmio_t t) {
        using inst_t = typename Kind::template instance<mmio_t, QueueSize>;
        auto inst = make_instance<inst_t>();
        if (!inst) return unexpected{inst.error()};
        if (auto ok = (*inst)->driver().start(t); !ok) return ok;
        const irq_wiring w = wire_gsi(d.irq, &inst_t::on_interrupt, *inst, pc);
        (*inst)->set_irq(w.how);
        return Kind::add(**inst, w, "virtio-mmio");
    }
};

// virtio-blk over the transports Via names (all by default). QueueSize: where the driver chooses it.
template <std::uint16_t QueueSize = 128, unsigned Via = via_any>
struct virtio_blk_driver : virtio_binding<virtio::device_block, detail::blk_kind, QueueSize, Via> {
    static constexpr string_view name = "virtio-blk";
};

// ---- network interfaces --------------------------------------------------------------------------------

namespace detail {

// One NIC: the driver and the event its interrupt sets. Models net_interface_source, so the registry's
// net_interface_ref reaches it. Ack(driver&) acknowledges the device's interrupt (so a level line drops).
// Not locked: one thread at a time uses an interface (the network stack owns it).
template <class Driver, class Ack>
class nic_instance {
public:
    using driver_type = Driver;
    using rx_token = typename Driver::rx_token;
    using tx_token = typename Driver::tx_token;

    nic_instance() : drv_{make_driver()} {}

    maybe<received<rx_token, tx_token>> receive() { return drv_.receive(); }
    maybe<tx_token> transmit() { return drv_.transmit(); }
    mac_address mac() const { return drv_.mac(); }
    std::size_t mtu() const { return drv_.mtu(); }
    bool link_up() { return drv_.link_up(); }
    // A device the driver gave up on (reset after a protocol violation) will never answer: no wait.
    bool wait_frame(std::uint64_t deadline) {
        if (!usable()) return false;
        return wait().wait_until([this] { return drv_.has_frame() || !usable(); }, deadline) && usable();
    }

    Driver& driver() { return drv_; }
    void set_irq(irq_wiring::kind k) {
        irq_ = k != irq_wiring::kind::none;
        msix_ = k == irq_wiring::kind::msix;
    }
    // As blk_instance's: a line may be another device's, so only our own cause wakes the waiter.
    static void on_interrupt(void* self) {
        auto* i = static_cast<nic_instance*>(self);
        if (i->msix_ || Ack{}(i->drv_)) i->ev_.set();
    }

private:
    interrupt_wait wait() { return interrupt_wait{&ev_, &irq_}; }
    bool usable() const {
        if constexpr (requires { drv_.broken(); })
            return drv_.started() && !drv_.broken();
        else
            return drv_.started();
    }
    Driver make_driver() {
        if constexpr (std::is_constructible_v<Driver, interrupt_wait>)
            return Driver{wait()};
        else
            return Driver{};
    }

    Driver drv_;
    event ev_;
    bool irq_ = false;
    bool msix_ = false;
};

// Reads and acknowledges the ISR: non-zero when the device raised the line.
struct virtio_ack {
    template <class D>
    bool operator()(D& d) const {
        return d.interrupt_status() != 0;
    }
};

template <class Inst>
expected<void> register_nic(Inst& inst, const irq_wiring& w, string_view driver, string_view where) {
    auto name = register_network_interface(driver, net_interface_ref{inst});
    if (!name) return unexpected{name.error()};
    const mac_address m = inst.mac();
    print("devices: {}: {} over {}, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, ", *name, driver, where,
          m[0], m[1], m[2], m[3], m[4], m[5]);
    print_wiring(w);
    print("\n");
    return {};
}

struct net_kind {
    template <class T, std::uint16_t Q>
    using instance = nic_instance<net::virtio_net<T, Q, interrupt_wait>, virtio_ack>;
    template <class Inst>
    static expected<void> add(Inst& inst, const irq_wiring& w, string_view transport) {
        return register_nic(inst, w, "virtio-net", transport);
    }
};

} // namespace detail

// virtio-net over the transports Via names (all by default). QueueSize: both queues, where the driver
// chooses.
template <std::uint16_t QueueSize = 64, unsigned Via = via_any>
struct virtio_net_driver : virtio_binding<virtio::device_net, detail::net_kind, QueueSize, Via> {
    static constexpr string_view name = "virtio-net";
};

// ---- e1000 ----------------------------------------------------------------------------------------------

namespace detail {
// Reading ICR acknowledges every cause (the level line drops); a frame's cause wakes the waiter.
struct e1000_ack {
    template <class D>
    bool operator()(D& d) const {
        return d.started() && d.interrupt_cause().value() != 0;
    }
};
} // namespace detail

// Binds the Intel 82540EM (QEMU's -device e1000, PCI 8086:100e): BAR0 (its 128 KiB of registers, assigned
// when firmware left it at 0) mapped uncached, INTx (the chip has no MSI), receive and link interrupts.
template <std::size_t RxCount = 32, std::size_t TxCount = 32>
struct e1000_driver {
    static constexpr string_view name = "e1000";
    static constexpr bool uses_pci = true;
    using instance = detail::nic_instance<net::e1000<arch::mmio_window, RxCount, TxCount>, detail::e1000_ack>;

    static bool claims_pci(probe_context&, const pci_function& fn) {
        return fn.vendor_id == 0x8086 && fn.device_id == 0x100e;
    }

    static expected<void> start_pci(probe_context& pc, const pci_function& fn) {
        auto bars = read_bars(pc.config, fn);
        if (!bars) return unexpected{bars.error()};
        if (bars->count == 0 || !(*bars)[0].is_memory()) return unexpected{"e1000: BAR0 is not a memory BAR"};
        if (auto ok = virtio::assign_bars(pc.config, fn.address, *bars, pc.window); !ok)
            return unexpected{ok.error()};
        auto regs = kernel_map.map_device((*bars)[0].address, (*bars)[0].size);
        if (!regs) return unexpected{regs.error()};
        auto inst = make_instance<instance>();
        if (!inst) return unexpected{inst.error()};
        auto& drv = (*inst)->driver();
        if (auto ok = drv.start(arch::mmio_window{static_cast<volatile std::uint32_t*>(*regs)}); !ok)
            return ok;
        const irq_wiring w = wire_intx(pc, fn, &instance::on_interrupt, *inst);
        (*inst)->set_irq(w.how);
        // Receive and link causes only (transmit write-backs are reclaimed by the next send), and none when
        // nothing would acknowledge them: a level line nobody reads ICR for stays asserted.
        if (w.how != irq_wiring::kind::none)
            drv.enable_interrupts(
                net::e1000_regs::interrupts{}.set_rxt0(true).set_rxo(true).set_rxdmt0(true).set_lsc(true));
        return detail::register_nic(**inst, w, name, "PCI");
    }
};

// ---- the unit -------------------------------------------------------------------------------------------

// What a driver binding provides: a name, whether a virtio-mmio transport or a PCI function is its device,
// and how to start an instance on it (registering it); uses_pci: whether it may drive PCI devices at all.
// Bindings are stateless types.
template <class D>
concept device_driver = requires(probe_context& pc, const pci_function& fn) {
    { D::name } -> std::convertible_to<string_view>;
    { D::uses_pci } -> std::convertible_to<bool>;
    { D::claims_pci(pc, fn) } -> std::same_as<bool>;
    { D::start_pci(pc, fn) } -> std::same_as<expected<void>>;
};

template <device_driver... Drivers>
struct devices {
    static constexpr string_view name = "devices";

    expected<void> start(const boot_info& boot) {
        probe_context pc;
        if constexpr ((Drivers::uses_pci || ...))
            if (auto ecam = map_ecam()) pc.config = kernel_config_access<>{x86_port_io32{}, *ecam};
        // A malformed entry is reported, not fatal: the rest of the machine may still be usable.
        auto parsed = virtio::parse_virtio_mmio_cmdline(boot.cmdline());
        if (!parsed) print("devices: command line: {}\n", parsed.error());
        virtio::mmio_device_list list = parsed ? *parsed : virtio::mmio_device_list{};
        if (list.count == 0 && detail::platform.rsdp_address != 0) {
            // microvm with ACPI lists its transports only in the DSDT. A machine without (pc) has no
            // LNRO0005 device; tables the walk cannot read are reported, and PCI is probed all the same.
            firmware_reader reader;
            auto acpi = virtio::find_virtio_mmio_acpi(reader, detail::platform.rsdp_address);
            if (acpi)
                list = *acpi;
            else
                print("devices: ACPI: {}\n", acpi.error());
        }
        // toro.boot_trace: what finding the devices cost, and each one's start (TSC cycles).
        const bool trace = has_word(boot.cmdline(), "toro.boot_trace");
        const std::uint64_t t0 = arch::rdtsc();
        std::uint64_t starting = 0;
        auto timed = [&](auto&& probe) {
            const std::uint64_t a = arch::rdtsc();
            if (!probe()) return;
            const std::uint64_t took = arch::rdtsc() - a;
            starting += took;
            if (trace) print("toro: boot trace: device start {} cycles\n", took);
        };
        for (std::size_t i = 0; i < list.count; ++i) timed([&] { return probe_mmio(pc, list.devices[i]); });
        // No driver that could run a PCI device: no PCI code in the image, no scan at boot.
        if constexpr ((Drivers::uses_pci || ...))
            for_each_function(pc.config, [&](const pci_function& fn) {
                if (fn.header_layout == pci::header_general) timed([&] { return probe_pci(pc, fn); });
                return true;
            });
        if (trace)
            print("toro: boot trace: device discovery {} cycles (PCI configuration through {})\n",
                  arch::rdtsc() - t0 - starting, pc.config.uses_ecam() ? "ECAM" : "ports");
        return {};
    }

private:
    // Segment 0's ECAM region from MCFG (q35, microvm with pcie=on), mapped uncached; none on pc.
    static maybe<ecam_config_access> map_ecam() {
        if (detail::platform.rsdp_address == 0) return nothing;
        firmware_reader reader;
        auto mcfg = find_mcfg(reader, detail::platform.root_table);
        if (!mcfg) return nothing;
        const mcfg_entry* e = mcfg->find(0, mcfg->list().empty() ? 0 : mcfg->list()[0].start_bus);
        if (e == nullptr) return nothing;
        auto window = kernel_map.map_device(e->window_address(), e->window_size());
        if (!window) {
            print("devices: PCI ECAM at {:#x}: {}; using ports\n", e->window_address(), window.error());
            return nothing;
        }
        return ecam_config_access{*window, e->start_bus, e->end_bus};
    }

    // Both say whether a driver claimed the device.
    static bool probe_mmio(probe_context& pc, const virtio::mmio_device_desc& d) {
        auto regs = kernel_map.map_device(d.base, d.size);
        if (!regs) return report_mmio(d, regs.error()), false;
        using mmio_t = virtio::mmio_transport<arch::mmio_window>;
        auto t = mmio_t::probe(arch::mmio_window{static_cast<volatile std::uint32_t*>(*regs)});
        if (!t) {
            if (t.error().what != virtio::mmio_error::no_device)
                report_mmio(d, t.error()); // else: an empty slot
            return false;
        }
        return ((claims_mmio<Drivers>(*t) ? (start_mmio<Drivers>(pc, d, *t), true) : false) || ...);
    }

    // A function no driver runs is silenced: its INTx pin could share a line we route, and a level line
    // nobody acknowledges would interrupt forever.
    static bool probe_pci(probe_context& pc, const pci_function& fn) {
        bool running = false;
        const bool claimed =
            ((Drivers::claims_pci(pc, fn) ? (running = report_pci(fn, Drivers::start_pci(pc, fn)), true)
                                          : false) ||
             ...);
        if (!running && fn.interrupt_pin != 0)
            write_command(pc.config, fn.address,
                          read_command(pc.config, fn.address).set_interrupt_disable(true));
        return claimed;
    }

    template <class D>
    static bool claims_mmio(const virtio::mmio_transport<arch::mmio_window>& t) {
        if constexpr (requires { D::claims_mmio(t); })
            return D::claims_mmio(t);
        else
            return false;
    }
    template <class D>
    static void start_mmio(probe_context& pc, const virtio::mmio_device_desc& d,
                           const virtio::mmio_transport<arch::mmio_window>& t) {
        if constexpr (requires { D::start_mmio(pc, d, t); })
            if (auto r = D::start_mmio(pc, d, t); !r) report_mmio(d, r.error());
    }

    static void report_mmio(const virtio::mmio_device_desc& d, const error& e) {
        print("devices: virtio-mmio at {:#x}: {}\n", d.base, e);
    }
    static bool report_pci(const pci_function& fn, const expected<void>& r) {
        if (!r)
            print("devices: PCI {:02x}:{:02x}.{} ({:04x}:{:04x}): {}\n", fn.address.bus, fn.address.device,
                  fn.address.function, fn.vendor_id, fn.device_id, r.error());
        return r.has_value();
    }
};

} // namespace toro
