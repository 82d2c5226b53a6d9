// The I/O APIC: routes a device's interrupt line (a GSI) to a vector on a chosen CPU. ioapic<Mmio> is a
// template over 32-bit MMIO (arch::mmio32_bus), so host tests script its register accesses. Registers are
// reached indirectly: write the index to IOREGSEL (+0x00), then read or write IOWIN (+0x10). A redirection
// entry is 64 bits in two registers (0x10 + 2n low, +1 high); the low half holds the mask bit, so an entry is
// changed with the pin masked and unmasked last, never half-written while live.
//
// isa_route() turns an ISA IRQ into its GSI, polarity and trigger mode from the firmware's interrupt source
// overrides (platform_info): ISA IRQs are edge, active high and identity-mapped unless overridden.
#pragma once

#include <cstdint>
#include <span>

#include <toro/arch/x86_64/lapic.hpp>
#include <toro/base/bitfield.hpp>
#include <toro/base/expected.hpp>
#include <toro/boot/platform.hpp>

namespace toro::arch {

enum class ioapic_reg : std::uint32_t { id = 0x00, version = 0x01, redirection_base = 0x10 };
inline constexpr std::uint32_t ioregsel = 0x00, iowin = 0x10;

enum class trigger_mode : std::uint8_t { edge = 0, level = 1 };
enum class polarity : std::uint8_t { active_high = 0, active_low = 1 };

// Redirection entry (IOAPIC datasheet 3.2.4): fixed delivery, physical destination.
struct redirection_entry : reg_value<redirection_entry, std::uint64_t> {
    constexpr std::uint8_t vector() const { return static_cast<std::uint8_t>(get_field<7, 0>()); }
    constexpr redirection_entry& set_vector(std::uint8_t v) { return set_field<7, 0>(v); }
    constexpr std::uint8_t delivery_mode() const { return static_cast<std::uint8_t>(get_field<10, 8>()); }
    constexpr bool logical_destination() const { return get_bit<11>(); }
    constexpr bool delivery_pending() const { return get_bit<12>(); } // read-only
    constexpr bool active_low() const { return get_bit<13>(); }
    constexpr redirection_entry& set_active_low(bool on) { return set_bit<13>(on); }
    constexpr bool remote_irr() const { return get_bit<14>(); } // read-only
    constexpr bool level_triggered() const { return get_bit<15>(); }
    constexpr redirection_entry& set_level_triggered(bool on) { return set_bit<15>(on); }
    constexpr bool masked() const { return get_bit<16>(); }
    constexpr redirection_entry& set_masked(bool on) { return set_bit<16>(on); }
    constexpr std::uint8_t destination() const { return static_cast<std::uint8_t>(get_field<63, 56>()); }
    constexpr redirection_entry& set_destination(std::uint8_t apic_id) { return set_field<63, 56>(apic_id); }
};
static_assert(sizeof(redirection_entry) == 8);

template <mmio32_bus Mmio>
class ioapic {
public:
    constexpr explicit ioapic(Mmio mmio, std::uint32_t gsi_base = 0) : mmio_{mmio}, gsi_base_{gsi_base} {}

    std::uint8_t id() { return static_cast<std::uint8_t>(read(0x00) >> 24 & 0x0f); }
    // Pins 0..max_pin().
    std::uint8_t max_pin() { return static_cast<std::uint8_t>(read(0x01) >> 16 & 0xff); }
    std::uint32_t gsi_base() const { return gsi_base_; }

    redirection_entry entry(std::uint8_t pin) {
        const std::uint64_t lo = read(0x10 + 2u * pin), hi = read(0x11 + 2u * pin);
        return redirection_entry::from_value(hi << 32 | lo);
    }

    // Routes `pin` to `vector` on the CPU with APIC id `apic_id` (xAPIC ids: 8 bits), then unmasks it.
    expected<void> route(std::uint8_t pin, std::uint8_t vector, std::uint32_t apic_id, trigger_mode t,
                         polarity p) {
        if (pin > max_pin()) return unexpected{"IOAPIC: no such pin", pin};
        if (vector < 0x20) return unexpected{"IOAPIC: vectors below 0x20 are CPU exceptions", vector};
        if (apic_id > 0xff) return unexpected{"IOAPIC: destination APIC id does not fit 8 bits", apic_id};
        auto e = redirection_entry{}
                     .set_vector(vector)
                     .set_active_low(p == polarity::active_low)
                     .set_level_triggered(t == trigger_mode::level)
                     .set_destination(static_cast<std::uint8_t>(apic_id));
        // Masked while half-written: low (with the mask) first, then high, then unmask.
        write(0x10 + 2u * pin, static_cast<std::uint32_t>(e.value()) | 1u << 16);
        write(0x11 + 2u * pin, static_cast<std::uint32_t>(e.value() >> 32));
        write(0x10 + 2u * pin, static_cast<std::uint32_t>(e.value()));
        return {};
    }

    void set_masked(std::uint8_t pin, bool masked) {
        const std::uint32_t lo = read(0x10 + 2u * pin);
        write(0x10 + 2u * pin, masked ? lo | 1u << 16 : lo & ~(1u << 16));
    }
    // Every pin masked: what the kernel does before routing anything (firmware may leave pins live).
    void mask_all() {
        const std::uint8_t n = max_pin();
        for (std::uint32_t pin = 0; pin <= n; ++pin) write(0x10 + 2u * pin, 1u << 16);
    }

private:
    std::uint32_t read(std::uint32_t reg) {
        mmio_.write32(ioregsel, reg);
        return mmio_.read32(iowin);
    }
    void write(std::uint32_t reg, std::uint32_t v) {
        mmio_.write32(ioregsel, reg);
        mmio_.write32(iowin, v);
    }

    Mmio mmio_;
    std::uint32_t gsi_base_;
};

// Where an ISA IRQ (0-15) arrives: its GSI and signalling. MPS INTI flags in an override: polarity bits 1:0
// (01 high, 11 low, 00 bus default), trigger bits 3:2 (01 edge, 11 level, 00 bus default); ISA's default is
// edge, active high.
struct gsi_route {
    std::uint32_t gsi = 0;
    trigger_mode trigger = trigger_mode::edge;
    polarity pol = polarity::active_high;
    friend constexpr bool operator==(const gsi_route&, const gsi_route&) = default;
};

constexpr gsi_route isa_route(std::uint8_t irq, std::span<const irq_override> overrides) {
    for (const irq_override& o : overrides)
        if (o.bus_irq == irq)
            return {o.gsi, (o.flags >> 2 & 3) == 3 ? trigger_mode::level : trigger_mode::edge,
                    (o.flags & 3) == 3 ? polarity::active_low : polarity::active_high};
    return {irq, trigger_mode::edge, polarity::active_high};
}

// The IOAPIC (index into platform_info's list) serving `gsi`, and its pin: the one with the highest base at
// or below gsi whose pin count covers it (pin counts come from each IOAPIC's version register: `pins`).
struct ioapic_pin {
    std::size_t ioapic = 0;
    std::uint8_t pin = 0;
};
inline expected<ioapic_pin> find_ioapic_pin(std::span<const ioapic_entry> ioapics,
                                            std::span<const std::uint16_t> pins, std::uint32_t gsi) {
    for (std::size_t i = 0; i < ioapics.size() && i < pins.size(); ++i)
        if (gsi >= ioapics[i].gsi_base && gsi - ioapics[i].gsi_base < pins[i])
            return ioapic_pin{i, static_cast<std::uint8_t>(gsi - ioapics[i].gsi_base)};
    return unexpected{"no IOAPIC serves GSI", gsi};
}

} // namespace toro::arch
