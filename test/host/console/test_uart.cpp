// Host tests for uart_16550: scripted register transcripts against mock_io, plus mock_io's own reporting.
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include <toro/console/format.hpp>
#include <toro/console/mock_io.hpp>
#include <toro/console/uart_16550.hpp>

using toro::testing::mock_io;
using uart = toro::uart_16550<mock_io>;

// The driver compiles against the bare concept, so it asks its IO for nothing beyond read8/write8.
template class toro::uart_16550<toro::io_provider_archetype>;
// A UART is a char_sink: format_to can write straight to the console.
static_assert(toro::char_sink<uart>);

namespace {

enum : std::uint16_t {
    THR = 0,
    RBR = 0,
    DLL = 0,
    IER = 1,
    DLM = 1,
    FCR = 2,
    IIR = 2,
    LCR = 3,
    MCR = 4,
    LSR = 5,
    SCR = 7
};
constexpr std::uint8_t lsr_thre = 0x20; // THR (FIFO) empty
constexpr std::uint8_t lsr_idle = 0x60; // THRE + TEMT
constexpr std::uint8_t lsr_data_ready = 0x01;
constexpr std::uint8_t iir_fifos_on = 0xc1; // FIFOs enabled, no interrupt pending

uart make_uart() {
    return uart{mock_io{toro::testing::uart_16550_register_name}};
}

void expect_init(mock_io& io, std::uint16_t divisor, std::uint8_t iir = iir_fifos_on) {
    io.expect_write(LCR, 0x80)
        .expect_write(DLL, static_cast<std::uint8_t>(divisor))
        .expect_write(DLM, static_cast<std::uint8_t>(divisor >> 8))
        .expect_write(LCR, 0x03)
        .expect_write(IER, 0x00)
        .expect_write(FCR, 0x07)
        .expect_write(MCR, 0x0b)
        .expect_read(IIR, iir);
}

toro::string_view sv(const std::string& s) {
    return {s.data(), s.size()};
}

void expect_bytes(mock_io& io, const std::string& bytes) {
    for (char c : bytes) io.expect_write(THR, static_cast<std::uint8_t>(c));
}

// Prints the mock's findings when the transcript differs.
#define CHECK_TRANSCRIPT(io)                                                                                 \
    do {                                                                                                     \
        INFO((io).report());                                                                                 \
        CHECK((io).done());                                                                                  \
    } while (0)

} // namespace

TEST_CASE("init at 115200: full register sequence", "[uart]") {
    uart u = make_uart();
    mock_io& io = u.io();
    io.expect_write(3, 0x80)   // LCR: DLAB on
        .expect_write(0, 0x01) // DLL: divisor 1
        .expect_write(1, 0x00) // DLM
        .expect_write(3, 0x03) // LCR: 8N1, DLAB off
        .expect_write(1, 0x00) // IER: all interrupts off
        .expect_write(2, 0x07) // FCR: FIFO enable, clear RX, clear TX
        .expect_write(4, 0x0b) // MCR: DTR | RTS | OUT2
        .expect_read(2, 0xc1); // IIR: FIFOs are on
    auto r = u.init(115200);
    CHECK(r.has_value());
    CHECK_TRANSCRIPT(io);
    CHECK(io.accesses() == 8);
}

TEST_CASE("init defaults to 115200", "[uart]") {
    uart u = make_uart();
    expect_init(u.io(), 1);
    CHECK(u.init().has_value());
    CHECK_TRANSCRIPT(u.io());
}

TEST_CASE("init at 9600: divisor 12", "[uart]") {
    uart u = make_uart();
    mock_io& io = u.io();
    io.expect_write(3, 0x80)
        .expect_write(0, 0x0c)
        .expect_write(1, 0x00)
        .expect_write(3, 0x03)
        .expect_write(1, 0x00)
        .expect_write(2, 0x07)
        .expect_write(4, 0x0b)
        .expect_read(2, 0xc1);
    CHECK(u.init(9600).has_value());
    CHECK_TRANSCRIPT(io);
}

TEST_CASE("init at 2 baud uses the high divisor byte", "[uart]") {
    uart u = make_uart();
    expect_init(u.io(), 57600); // 0xe100
    CHECK(u.init(2).has_value());
    CHECK_TRANSCRIPT(u.io());
}

TEST_CASE("init rejects bad baud rates without touching the device", "[uart]") {
    struct bad {
        std::uint32_t baud;
        const char* what;
    };
    const bad cases[] = {
        {0, "uart: baud rate does not divide 115200"},
        {7, "uart: baud rate does not divide 115200"},
        {1000, "uart: baud rate does not divide 115200"},
        {230400, "uart: baud rate does not divide 115200"},
        {1, "uart: baud rate too low for the 16-bit divisor"},
    };
    for (const bad& b : cases) {
        CAPTURE(b.baud);
        uart u = make_uart();
        auto r = u.init(b.baud);
        REQUIRE_FALSE(r.has_value());
        CHECK(r.error().what == toro::string_view{b.what});
        CHECK(r.error().has_value);
        CHECK(r.error().value == b.baud);
        CHECK(u.io().accesses() == 0);
        CHECK_TRANSCRIPT(u.io());
    }
}

TEST_CASE("write after init: the cleared FIFO takes \"hi\\n\" without an LSR read", "[uart]") {
    uart u = make_uart();
    expect_init(u.io(), 1);
    expect_bytes(u.io(), "hi\r\n");
    REQUIRE(u.init().has_value());
    u.write("hi\n");
    CHECK_TRANSCRIPT(u.io());
}

TEST_CASE("write batches 16 bytes per LSR read", "[uart]") {
    uart u = make_uart();
    mock_io& io = u.io();
    expect_init(io, 1);
    const std::string text(40, 'x');
    expect_bytes(io, text.substr(0, 16)); // room known from the FIFO clear
    io.expect_read(LSR, lsr_idle);
    expect_bytes(io, text.substr(16, 16));
    io.expect_read(LSR, 0x00, 3).expect_read(LSR, lsr_thre); // still draining: poll until THRE
    expect_bytes(io, text.substr(32, 8));
    REQUIRE(u.init().has_value());
    u.write(sv(text));
    CHECK_TRANSCRIPT(io);
    CHECK(io.accesses() == 8 + 40 + 1 + 4);
}

TEST_CASE("room carries across write calls", "[uart]") {
    uart u = make_uart();
    mock_io& io = u.io();
    expect_init(io, 1);
    expect_bytes(io, "abcdefgh\r\nijklmn"); // 16 bytes over three calls, no LSR read
    io.expect_read(LSR, lsr_thre);
    expect_bytes(io, "o");
    REQUIRE(u.init().has_value());
    u.write("abcdefgh\n");
    u.write("ijk");
    u.write("lmn");
    u.write("o");
    CHECK_TRANSCRIPT(io);
}

TEST_CASE("\\n in a batch costs two FIFO slots", "[uart]") {
    uart u = make_uart();
    mock_io& io = u.io();
    expect_init(io, 1);
    expect_bytes(io, "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n"); // 8 newlines fill the 16 slots exactly
    io.expect_read(LSR, lsr_thre);
    expect_bytes(io, "\r\n");
    REQUIRE(u.init().has_value());
    u.write("\n\n\n\n\n\n\n\n\n");
    CHECK_TRANSCRIPT(io);
}

TEST_CASE("without init, or without a FIFO, every byte waits for THRE", "[uart]") {
    SECTION("fresh driver assumes a one-byte holding register") {
        uart u = make_uart();
        u.io()
            .expect_read(LSR, lsr_thre)
            .expect_write(THR, 'a')
            .expect_read(LSR, lsr_thre)
            .expect_write(THR, 'b');
        u.write("ab");
        CHECK_TRANSCRIPT(u.io());
    }
    SECTION("a 16450 ignores FCR; IIR says no FIFO") {
        uart u = make_uart();
        expect_init(u.io(), 1, 0x01);
        u.io().expect_read(LSR, 0x00).expect_read(LSR, lsr_thre).expect_write(THR, 'a');
        u.io().expect_read(LSR, lsr_thre).expect_write(THR, 'b');
        REQUIRE(u.init().has_value());
        u.write("ab");
        CHECK_TRANSCRIPT(u.io());
    }
}

TEST_CASE("THRE that never comes: bounded spin, then write anyway", "[uart]") {
    uart u = make_uart();
    mock_io& io = u.io();
    expect_init(io, 1);
    expect_bytes(io, std::string(16, 'a'));
    // The full spin: exactly tx_spin_limit polls, then the byte goes out regardless.
    io.expect_read(LSR, 0x00, uart::tx_spin_limit);
    expect_bytes(io, "b");
    expect_bytes(io, std::string(15, 'c')); // a whole batch is written blind after the timeout
    // Stalled: one look per batch instead of another full spin.
    io.expect_read(LSR, 0x00);
    expect_bytes(io, std::string(16, 'd'));
    // The UART recovers: THRE seen on the single look clears the stall...
    io.expect_read(LSR, lsr_thre);
    expect_bytes(io, std::string(16, 'e'));
    // ...so the next wait is patient again.
    io.expect_read(LSR, 0x00, 5).expect_read(LSR, lsr_thre);
    expect_bytes(io, "f");

    REQUIRE(u.init().has_value());
    u.write(sv(std::string(16, 'a')));
    u.write("b");
    u.write(sv(std::string(15, 'c')));
    u.write(sv(std::string(16, 'd')));
    u.write(sv(std::string(16, 'e')));
    u.write("f");
    CHECK_TRANSCRIPT(io);
}

TEST_CASE("present() probes the scratch register", "[uart]") {
    SECTION("a UART holds both patterns") {
        uart u = make_uart();
        u.io().expect_write(SCR, 0x5a).expect_read(SCR, 0x5a).expect_write(SCR, 0xa5).expect_read(SCR, 0xa5);
        CHECK(u.present());
        CHECK_TRANSCRIPT(u.io());
    }
    SECTION("an empty bus reads 0xff: absent after the first pattern") {
        uart u = make_uart();
        u.io().expect_write(SCR, 0x5a).expect_read(SCR, 0xff);
        CHECK_FALSE(u.present());
        CHECK_TRANSCRIPT(u.io());
    }
    SECTION("a bus that echoes one value is caught by the second pattern") {
        uart u = make_uart();
        u.io().expect_write(SCR, 0x5a).expect_read(SCR, 0x5a).expect_write(SCR, 0xa5).expect_read(SCR, 0x5a);
        CHECK_FALSE(u.present());
        CHECK_TRANSCRIPT(u.io());
    }
}

TEST_CASE("try_read() reads RBR only when LSR has data", "[uart]") {
    uart u = make_uart();
    u.io().expect_read(LSR, lsr_idle);
    u.io().expect_read(LSR, lsr_idle | lsr_data_ready).expect_read(RBR, 'k');
    const toro::rx_byte none = u.try_read();
    CHECK_FALSE(none);
    CHECK_FALSE(none.has_value);
    const toro::rx_byte got = u.try_read();
    REQUIRE(got);
    CHECK(got.value == 'k');
    CHECK_TRANSCRIPT(u.io());
}

TEST_CASE("format_to writes through the UART with newline translation", "[uart]") {
    uart u = make_uart();
    expect_init(u.io(), 1);
    expect_bytes(u.io(), "n=42 0x2a\r\n");
    REQUIRE(u.init().has_value());
    toro::format_to(u, "n={} {:#x}\n", 42, 42u);
    CHECK_TRANSCRIPT(u.io());
}

TEST_CASE("register values build the bytes init writes", "[uart]") {
    namespace r = toro::uart_16550_regs;
    CHECK(r::lcr{}.set_dlab(true).value() == 0x80);
    CHECK(r::lcr{}.set_word_length(r::word_length::bits8).value() == 0x03);
    CHECK(r::lcr::from_value(0x1b).word_length() == r::word_length::bits8);
    CHECK(r::lcr::from_value(0x1b).parity_enable());
    CHECK(r::lcr::from_value(0x1b).even_parity());
    CHECK(r::fcr{}.set_fifo_enable(true).set_clear_rx(true).set_clear_tx(true).value() == 0x07);
    CHECK(r::fcr{}.set_rx_trigger(3).value() == 0xc0);
    CHECK(r::mcr{}.set_dtr(true).set_rts(true).set_out2(true).value() == 0x0b);
    CHECK(r::lsr::from_value(0x60).thr_empty());
    CHECK(r::lsr::from_value(0x60).transmitter_empty());
    CHECK_FALSE(r::lsr::from_value(0x40).thr_empty());
    CHECK(r::iir::from_value(0xc1).fifos_enabled());
    CHECK_FALSE(r::iir::from_value(0xc1).interrupt_pending());
    CHECK(r::iir::from_value(0xc4).interrupt_pending());
    CHECK(r::iir::from_value(0xc4).interrupt_id() == 2);
    CHECK_FALSE(r::iir::from_value(0x01).fifos_enabled());
}

TEST_CASE("mock_io reports mismatches, extras and missing accesses", "[mock_io]") {
    using toro::testing::uart_16550_register_name;
    SECTION("wrong kind of access") {
        mock_io io{uart_16550_register_name};
        io.expect_write(3, 0x03);
        CHECK(io.read8(5) == 0xff);
        CHECK(io.failures() ==
              std::vector<std::string>{"access 1: expected write 0x03 to +3 (LCR), got read of +5 (LSR)"});
        CHECK_FALSE(io.done());
    }
    SECTION("wrong value, then an access past the end") {
        mock_io io{uart_16550_register_name};
        io.expect_write(3, 0x03);
        io.write8(3, 0x83);
        io.write8(0, 0x41);
        CHECK(io.failures() == std::vector<std::string>{
                                   "access 1: expected write 0x03 to +3 (LCR), got write 0x83 to +3 (LCR)",
                                   "access 2: unexpected write 0x41 to +0 (THR/DLL) after the script ended",
                               });
    }
    SECTION("missing accesses, including the rest of a repeated read") {
        mock_io io{uart_16550_register_name};
        io.expect_read(5, 0x20, 3).expect_write(4, 0x0b);
        CHECK(io.read8(5) == 0x20);
        CHECK(io.failures() ==
              std::vector<std::string>{"access 2: expected 2 reads of +5 (LSR), never happened "
                                       "(3 expected accesses missing)"});
        CHECK(io.read8(5) == 0x20);
        CHECK(io.read8(5) == 0x20);
        CHECK(io.failures() == std::vector<std::string>{"access 4: expected write 0x0b to +4 (MCR), never "
                                                        "happened (1 expected accesses missing)"});
        io.write8(4, 0x0b);
        CHECK(io.done());
        CHECK(io.report().empty());
    }
    SECTION("a read mismatched against a read returns the scripted value") {
        mock_io io; // no names: bare offsets
        io.expect_read(5, 0x20);
        CHECK(io.read8(6) == 0x20);
        CHECK(io.failures() == std::vector<std::string>{"access 1: expected read of +5, got read of +6"});
    }
    SECTION("runaway loops are capped") {
        mock_io io;
        for (int i = 0; i < 1000; ++i) io.read8(5);
        const auto f = io.failures();
        REQUIRE(f.size() == mock_io::max_failures + 1);
        CHECK(f.back() == "... and 980 more failures");
    }
}
