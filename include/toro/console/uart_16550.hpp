// uart_16550<Io>: polled driver for the PC 16550A serial port, the kernel's console.
//
// Every register access is a VM exit under a hypervisor, so the driver counts transmit FIFO room instead of
// polling LSR per byte: once LSR says the FIFO is empty it writes up to 16 bytes blind. Waits are bounded:
// a console that never drains must not hang the kernel, so after the bound the driver writes anyway.
#pragma once

#include <cstdint>
#include <utility>

#include <toro/base/bitfield.hpp>
#include <toro/base/expected.hpp>
#include <toro/base/string_view.hpp>
#include <toro/console/io_provider.hpp>

namespace toro {

// The registers, offsets from the UART's base. With LCR.DLAB set, offsets 0 and 1 are the divisor latch.
namespace uart_16550_regs {

// Receiver buffer (read, DLAB=0).
struct rbr : reg_value<rbr, std::uint8_t> {
    static constexpr std::uint16_t offset = 0;
    constexpr std::uint8_t data() const { return value(); }
};

// Transmit holding register (write, DLAB=0).
struct thr : reg_value<thr, std::uint8_t> {
    static constexpr std::uint16_t offset = 0;
    constexpr thr& set_data(std::uint8_t v) { return set_value(v); }
};

// Divisor latch low / high byte (DLAB=1): baud = 115200 / divisor.
struct dll : reg_value<dll, std::uint8_t> {
    static constexpr std::uint16_t offset = 0;
};
struct dlm : reg_value<dlm, std::uint8_t> {
    static constexpr std::uint16_t offset = 1;
};

// Interrupt enable (DLAB=0).
struct ier : reg_value<ier, std::uint8_t> {
    static constexpr std::uint16_t offset = 1;
    constexpr bool rx_available() const { return get_bit<0>(); }
    constexpr ier& set_rx_available(bool on) { return set_bit<0>(on); }
    constexpr bool thr_empty() const { return get_bit<1>(); }
    constexpr ier& set_thr_empty(bool on) { return set_bit<1>(on); }
    constexpr bool line_status() const { return get_bit<2>(); }
    constexpr ier& set_line_status(bool on) { return set_bit<2>(on); }
    constexpr bool modem_status() const { return get_bit<3>(); }
    constexpr ier& set_modem_status(bool on) { return set_bit<3>(on); }
};

// Interrupt identification (read).
struct iir : reg_value<iir, std::uint8_t> {
    static constexpr std::uint16_t offset = 2;
    // Bit 0 is active-low: 0 means an interrupt is pending.
    constexpr bool interrupt_pending() const { return !get_bit<0>(); }
    constexpr std::uint8_t interrupt_id() const { return get_field<3, 1>(); }
    // 0b11 once FIFOs are enabled and working; a 16450/8250 (no FIFO) reads 0b00.
    constexpr std::uint8_t fifo_state() const { return get_field<7, 6>(); }
    constexpr bool fifos_enabled() const { return fifo_state() == 0b11; }
};

// FIFO control (write).
struct fcr : reg_value<fcr, std::uint8_t> {
    static constexpr std::uint16_t offset = 2;
    constexpr fcr& set_fifo_enable(bool on) { return set_bit<0>(on); }
    constexpr fcr& set_clear_rx(bool on) { return set_bit<1>(on); }
    constexpr fcr& set_clear_tx(bool on) { return set_bit<2>(on); }
    constexpr fcr& set_dma_mode(bool on) { return set_bit<3>(on); }
    // Receive FIFO interrupt threshold: 0..3 = 1, 4, 8, 14 bytes.
    constexpr fcr& set_rx_trigger(std::uint8_t level) { return set_field<7, 6>(level); }
};

enum class word_length : std::uint8_t { bits5 = 0, bits6 = 1, bits7 = 2, bits8 = 3 };

// Line control.
struct lcr : reg_value<lcr, std::uint8_t> {
    static constexpr std::uint16_t offset = 3;
    constexpr toro::uart_16550_regs::word_length word_length() const {
        return static_cast<toro::uart_16550_regs::word_length>(get_field<1, 0>());
    }
    constexpr lcr& set_word_length(toro::uart_16550_regs::word_length w) {
        return set_field<1, 0>(static_cast<std::uint8_t>(w));
    }
    constexpr bool two_stop_bits() const { return get_bit<2>(); }
    constexpr lcr& set_two_stop_bits(bool on) { return set_bit<2>(on); }
    constexpr bool parity_enable() const { return get_bit<3>(); }
    constexpr lcr& set_parity_enable(bool on) { return set_bit<3>(on); }
    constexpr bool even_parity() const { return get_bit<4>(); }
    constexpr lcr& set_even_parity(bool on) { return set_bit<4>(on); }
    constexpr bool stick_parity() const { return get_bit<5>(); }
    constexpr lcr& set_stick_parity(bool on) { return set_bit<5>(on); }
    constexpr bool break_enable() const { return get_bit<6>(); }
    constexpr lcr& set_break_enable(bool on) { return set_bit<6>(on); }
    // Divisor latch access: offsets 0/1 become DLL/DLM while set.
    constexpr bool dlab() const { return get_bit<7>(); }
    constexpr lcr& set_dlab(bool on) { return set_bit<7>(on); }
};

// Modem control.
struct mcr : reg_value<mcr, std::uint8_t> {
    static constexpr std::uint16_t offset = 4;
    constexpr bool dtr() const { return get_bit<0>(); }
    constexpr mcr& set_dtr(bool on) { return set_bit<0>(on); }
    constexpr bool rts() const { return get_bit<1>(); }
    constexpr mcr& set_rts(bool on) { return set_bit<1>(on); }
    constexpr bool out1() const { return get_bit<2>(); }
    constexpr mcr& set_out1(bool on) { return set_bit<2>(on); }
    // On PCs OUT2 gates the UART's interrupt line; set it so interrupts work once enabled.
    constexpr bool out2() const { return get_bit<3>(); }
    constexpr mcr& set_out2(bool on) { return set_bit<3>(on); }
    constexpr bool loopback() const { return get_bit<4>(); }
    constexpr mcr& set_loopback(bool on) { return set_bit<4>(on); }
};

// Line status (read).
struct lsr : reg_value<lsr, std::uint8_t> {
    static constexpr std::uint16_t offset = 5;
    constexpr bool data_ready() const { return get_bit<0>(); }
    constexpr bool overrun_error() const { return get_bit<1>(); }
    constexpr bool parity_error() const { return get_bit<2>(); }
    constexpr bool framing_error() const { return get_bit<3>(); }
    constexpr bool break_interrupt() const { return get_bit<4>(); }
    // THRE: the transmit holding register (in FIFO mode: the whole transmit FIFO) is empty.
    constexpr bool thr_empty() const { return get_bit<5>(); }
    // TEMT: the FIFO and the shift register are both empty; the line is idle.
    constexpr bool transmitter_empty() const { return get_bit<6>(); }
    constexpr bool fifo_error() const { return get_bit<7>(); }
};

// Modem status (read).
struct msr : reg_value<msr, std::uint8_t> {
    static constexpr std::uint16_t offset = 6;
    constexpr bool delta_cts() const { return get_bit<0>(); }
    constexpr bool delta_dsr() const { return get_bit<1>(); }
    constexpr bool trailing_edge_ri() const { return get_bit<2>(); }
    constexpr bool delta_dcd() const { return get_bit<3>(); }
    constexpr bool cts() const { return get_bit<4>(); }
    constexpr bool dsr() const { return get_bit<5>(); }
    constexpr bool ri() const { return get_bit<6>(); }
    constexpr bool dcd() const { return get_bit<7>(); }
};

// Scratch: a byte of plain storage, used only to probe whether a UART is there.
struct scr : reg_value<scr, std::uint8_t> {
    static constexpr std::uint16_t offset = 7;
};

} // namespace uart_16550_regs

// A byte from try_read(), or nothing.
struct rx_byte {
    std::uint8_t value = 0;
    bool has_value = false;
    constexpr explicit operator bool() const { return has_value; }
};

template <io_provider Io>
class uart_16550 {
public:
    // The divisor latch divides this (1.8432 MHz / 16).
    static constexpr std::uint32_t base_baud = 115200;
    // Transmit FIFO depth of a 16550A.
    static constexpr std::uint8_t fifo_depth = 16;
    // LSR polls before giving up on THRE. A poll costs at least ~1 us (an LPC bus read or a VM exit), so
    // this is over 65 ms: well past the 16.7 ms a full FIFO takes to drain at 9600 baud, and still short
    // enough that a dead UART slows the kernel down instead of stopping it.
    static constexpr std::uint32_t tx_spin_limit = 1u << 16;

    constexpr explicit uart_16550(Io io) : io_{std::move(io)} {}

    Io& io() { return io_; }
    const Io& io() const { return io_; }

    // Is a UART there? The scratch register holds what is written; an empty ISA bus reads 0xff.
    // Two patterns so that a bus that echoes the last written value does not fool the probe.
    bool present() {
        constexpr std::uint8_t patterns[] = {0x5a, 0xa5};
        for (std::uint8_t p : patterns) {
            write_reg(uart_16550_regs::scr::from_value(p));
            if (read_reg<uart_16550_regs::scr>().value() != p) return false;
        }
        return true;
    }

    // Polled 8N1 at `baud`, FIFOs on and cleared, interrupts off (OUT2 set so they can be enabled later).
    expected<void> init(std::uint32_t baud = base_baud) {
        if (baud == 0 || base_baud % baud != 0)
            return unexpected{"uart: baud rate does not divide 115200", baud};
        const std::uint32_t divisor = base_baud / baud;
        if (divisor > 0xffff) return unexpected{"uart: baud rate too low for the 16-bit divisor", baud};

        namespace reg = uart_16550_regs;
        // IER only after DLAB is known clear: with DLAB left set by firmware, offset 1 is DLM, not IER.
        write_reg(reg::lcr{}.set_dlab(true));
        write_reg(reg::dll::from_value(static_cast<std::uint8_t>(divisor & 0xff)));
        write_reg(reg::dlm::from_value(static_cast<std::uint8_t>(divisor >> 8)));
        write_reg(reg::lcr{}.set_word_length(reg::word_length::bits8)); // 8N1; also clears DLAB
        write_reg(reg::ier{});
        write_reg(reg::fcr{}.set_fifo_enable(true).set_clear_rx(true).set_clear_tx(true));
        write_reg(reg::mcr{}.set_dtr(true).set_rts(true).set_out2(true));

        // A 16450 or 8250 ignores FCR; trusting a FIFO it does not have would drop 15 of every 16 bytes.
        // The FIFO was just cleared, so when it exists it has room for a full batch right away.
        tx_depth_ = read_reg<reg::iir>().fifos_enabled() ? fifo_depth : 1;
        tx_room_ = tx_depth_ == 1 ? 0 : tx_depth_;
        tx_stalled_ = false;
        return {};
    }

    // Sends text, "\n" as "\r\n". Never blocks for longer than tx_spin_limit LSR polls per batch.
    void write(string_view text) {
        for (char c : text) {
            if (c == '\n') put('\r');
            put(c);
        }
    }

    // A received byte if one is waiting. Line errors are not reported: a console has no use for them.
    rx_byte try_read() {
        if (!read_reg<uart_16550_regs::lsr>().data_ready()) return {};
        return {read_reg<uart_16550_regs::rbr>().data(), true};
    }

private:
    template <class Reg>
    Reg read_reg() {
        return Reg::from_value(io_.read8(Reg::offset));
    }
    template <class Reg>
    void write_reg(const Reg& r) {
        io_.write8(Reg::offset, r.value());
    }

    void put(char c) {
        if (tx_room_ == 0) wait_for_room();
        write_reg(uart_16550_regs::thr{}.set_data(static_cast<std::uint8_t>(c)));
        --tx_room_;
    }

    // Room only ever grows while we are not writing (the UART drains the FIFO), so a count of known-free
    // slots stays valid across write() calls and LSR is read once per batch, not once per byte.
    void wait_for_room() {
        // Once a wait has timed out, the UART is treated as stuck (no cable with flow control, broken
        // emulation): one look per batch, so a dead console costs a poll per 16 bytes, not a full spin.
        std::uint32_t spins = tx_stalled_ ? 1 : tx_spin_limit;
        tx_room_ = tx_depth_; // also on timeout: write a batch anyway, losing output beats hanging
        for (; spins != 0; --spins) {
            if (read_reg<uart_16550_regs::lsr>().thr_empty()) {
                tx_stalled_ = false;
                return;
            }
        }
        tx_stalled_ = true;
    }

    Io io_;
    std::uint8_t tx_depth_ = 1; // until init() has seen the FIFOs, assume a one-byte holding register
    std::uint8_t tx_room_ = 0;  // transmit slots known to be free
    bool tx_stalled_ = false;
};

} // namespace toro
