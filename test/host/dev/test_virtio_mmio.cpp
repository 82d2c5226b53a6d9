// Host tests for the virtio-mmio transport (dev/virtio/mmio.hpp): probing, the version 1 (legacy) and
// version 2 start-ups through virtio::negotiate, setup_queue and driver_ok checked register by register
// against a scripted MMIO bus, legacy layout rejection, config reads under a changing ConfigGeneration, and
// the virtio_mmio.device= command-line parser.
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>

#include <toro/arch/x86_64/mock_lapic.hpp>
#include <toro/dev/virtio/mmio.hpp>

using toro::testing::mock_lapic_bus;
using toro::virtio::mmio_transport;
namespace reg = toro::virtio::mmio_reg;
namespace mmio_error = toro::virtio::mmio_error;

// Every member compiles against the kernel's MMIO window.
template class toro::virtio::mmio_transport<toro::arch::mmio_window>;

namespace {

using transport = mmio_transport<mock_lapic_bus::ref>;

std::string mmio_register_name(std::uint32_t offset) {
    switch (offset) {
    case reg::magic_value:
        return "MagicValue";
    case reg::version:
        return "Version";
    case reg::device_id:
        return "DeviceID";
    case reg::vendor_id:
        return "VendorID";
    case reg::device_features:
        return "DeviceFeatures";
    case reg::device_features_sel:
        return "DeviceFeaturesSel";
    case reg::driver_features:
        return "DriverFeatures";
    case reg::driver_features_sel:
        return "DriverFeaturesSel";
    case reg::guest_page_size:
        return "GuestPageSize";
    case reg::queue_sel:
        return "QueueSel";
    case reg::queue_num_max:
        return "QueueNumMax";
    case reg::queue_num:
        return "QueueNum";
    case reg::queue_align:
        return "QueueAlign";
    case reg::queue_pfn:
        return "QueuePFN";
    case reg::queue_ready:
        return "QueueReady";
    case reg::queue_notify:
        return "QueueNotify";
    case reg::interrupt_status:
        return "InterruptStatus";
    case reg::interrupt_ack:
        return "InterruptACK";
    case reg::status:
        return "Status";
    case reg::queue_desc_low:
        return "QueueDescLow";
    case reg::queue_desc_high:
        return "QueueDescHigh";
    case reg::queue_driver_low:
        return "QueueDriverLow";
    case reg::queue_driver_high:
        return "QueueDriverHigh";
    case reg::queue_device_low:
        return "QueueDeviceLow";
    case reg::queue_device_high:
        return "QueueDeviceHigh";
    case reg::config_generation:
        return "ConfigGeneration";
    }
    if (offset >= reg::config) return "config +" + std::to_string(offset - reg::config);
    return "";
}

constexpr std::uint32_t qemu_vendor = 0x554d4551; // "QEMU"

// Scripts the four identification reads and probes.
toro::expected<transport> probed(mock_lapic_bus& bus, std::uint32_t version, std::uint32_t device = 2) {
    bus.expect_mmio_read(reg::magic_value, toro::virtio::mmio_magic)
        .expect_mmio_read(reg::version, version)
        .expect_mmio_read(reg::device_id, device)
        .expect_mmio_read(reg::vendor_id, qemu_vendor);
    return transport::probe(bus.handle());
}

constexpr std::uint64_t bit(unsigned n) {
    return std::uint64_t{1} << n;
}

} // namespace

TEST_CASE("probe identifies a version 1 and a version 2 device", "[virtio-mmio]") {
    for (std::uint32_t version : {1u, 2u}) {
        mock_lapic_bus bus{mmio_register_name};
        auto t = probed(bus, version, 1);
        REQUIRE(t.has_value());
        CHECK(t->version() == version);
        CHECK(t->legacy() == (version == 1));
        CHECK(t->device_id() == 1);
        CHECK(t->vendor_id() == qemu_vendor);
        INFO(bus.report());
        CHECK(bus.done());
    }
}

TEST_CASE("probe refuses a bad magic value, an unknown version and an empty slot", "[virtio-mmio]") {
    SECTION("bad magic: nothing else is read") {
        mock_lapic_bus bus{mmio_register_name};
        bus.expect_mmio_read(reg::magic_value, 0x12345678);
        auto t = transport::probe(bus.handle());
        REQUIRE_FALSE(t.has_value());
        CHECK(t.error().what == mmio_error::bad_magic);
        CHECK(t.error().value == 0x12345678);
        INFO(bus.report());
        CHECK(bus.done());
    }
    SECTION("versions 0 and 3") {
        for (std::uint32_t version : {0u, 3u}) {
            mock_lapic_bus bus{mmio_register_name};
            bus.expect_mmio_read(reg::magic_value, toro::virtio::mmio_magic)
                .expect_mmio_read(reg::version, version);
            auto t = transport::probe(bus.handle());
            REQUIRE_FALSE(t.has_value());
            CHECK(t.error().what == mmio_error::bad_version);
            CHECK(t.error().value == version);
            INFO(bus.report());
            CHECK(bus.done());
        }
    }
    SECTION("device id 0: a distinct error") {
        mock_lapic_bus bus{mmio_register_name};
        bus.expect_mmio_read(reg::magic_value, toro::virtio::mmio_magic)
            .expect_mmio_read(reg::version, 2)
            .expect_mmio_read(reg::device_id, 0);
        auto t = transport::probe(bus.handle());
        REQUIRE_FALSE(t.has_value());
        CHECK(t.error().what == mmio_error::no_device);
        INFO(bus.report());
        CHECK(bus.done());
    }
}

TEST_CASE("version 1 start-up: page size, 32 feature bits, one page frame per queue", "[virtio-mmio]") {
    mock_lapic_bus bus{mmio_register_name};
    auto t = probed(bus, 1);
    REQUIRE(t.has_value());
    constexpr std::uint64_t base = 0x20000;
    constexpr std::uint16_t n = 8;
    const auto layout = toro::virtio::legacy_layout(n);
    bus.expect_mmio_write(reg::status, 0) // reset
        .expect_mmio_write(reg::guest_page_size, 4096)
        .expect_mmio_write(reg::status, 1)
        .expect_mmio_write(reg::status, 3)
        .expect_mmio_write(reg::device_features_sel, 0)
        .expect_mmio_read(reg::device_features, 0x30000244) // only word 0: legacy
        .expect_mmio_write(reg::driver_features_sel, 0)
        .expect_mmio_write(reg::driver_features, 0x00000204)
        .expect_mmio_write(reg::queue_sel, 0)
        .expect_mmio_read(reg::queue_num_max, 256)
        .expect_mmio_write(reg::queue_num, n)
        .expect_mmio_write(reg::queue_align, 4096)
        .expect_mmio_write(reg::queue_pfn, base / 4096)
        .expect_mmio_read(reg::status, 3) // driver_ok
        .expect_mmio_write(reg::status, 7)
        .expect_mmio_write(reg::queue_notify, 0)
        .expect_mmio_read(reg::interrupt_status, 1)
        .expect_mmio_write(reg::interrupt_ack, 1)
        .expect_mmio_read(reg::interrupt_status, 0); // nothing pending: no ack

    auto f = toro::virtio::negotiate(*t, toro::virtio::device_block, bit(2) | bit(9) | bit(32) | bit(33));
    REQUIRE(f.has_value());
    CHECK(*f == (bit(2) | bit(9)));
    auto q = t->setup_queue(0, n, {base, base + layout.avail_offset, base + layout.used_offset});
    REQUIRE(q.has_value());
    toro::virtio::driver_ok(*t);
    t->notify(0);
    CHECK(t->interrupt_status() == 1);
    CHECK(t->interrupt_status() == 0);
    INFO(bus.report());
    CHECK(bus.done());
}

TEST_CASE("version 2 start-up: 64 feature bits, FEATURES_OK, three 64-bit queue addresses", "[virtio-mmio]") {
    mock_lapic_bus bus{mmio_register_name};
    auto t = probed(bus, 2);
    REQUIRE(t.has_value());
    constexpr std::uint64_t desc = 0x1'2345'6000, avail = 0x2'0000'1002, used = 0x3'0000'2004;
    bus.expect_mmio_write(reg::status, 0)
        .expect_mmio_read(reg::status, 0) // the reset is done
        .expect_mmio_write(reg::status, 1)
        .expect_mmio_write(reg::status, 3)
        .expect_mmio_write(reg::device_features_sel, 0)
        .expect_mmio_read(reg::device_features, 0x30000244)
        .expect_mmio_write(reg::device_features_sel, 1)
        .expect_mmio_read(reg::device_features, 0x3) // VERSION_1 and ACCESS_PLATFORM
        .expect_mmio_write(reg::driver_features_sel, 0)
        .expect_mmio_write(reg::driver_features, 0x00000204)
        .expect_mmio_write(reg::driver_features_sel, 1)
        .expect_mmio_write(reg::driver_features, 0x1) // ACCESS_PLATFORM not taken
        .expect_mmio_write(reg::status, 11)
        .expect_mmio_read(reg::status, 11)
        .expect_mmio_write(reg::queue_sel, 1)
        .expect_mmio_read(reg::queue_num_max, 1024)
        .expect_mmio_write(reg::queue_num, 256)
        .expect_mmio_write(reg::queue_desc_low, 0x23456000)
        .expect_mmio_write(reg::queue_desc_high, 0x1)
        .expect_mmio_write(reg::queue_driver_low, 0x00001002)
        .expect_mmio_write(reg::queue_driver_high, 0x2)
        .expect_mmio_write(reg::queue_device_low, 0x00002004)
        .expect_mmio_write(reg::queue_device_high, 0x3)
        .expect_mmio_write(reg::queue_ready, 1)
        .expect_mmio_read(reg::status, 11)
        .expect_mmio_write(reg::status, 15)
        .expect_mmio_write(reg::queue_notify, 1);

    auto f = toro::virtio::negotiate(*t, toro::virtio::device_block, bit(2) | bit(9) | bit(33));
    REQUIRE(f.has_value());
    CHECK(*f == (bit(2) | bit(9) | bit(32)));
    auto q = t->setup_queue(1, 256, {desc, avail, used});
    REQUIRE(q.has_value());
    toro::virtio::driver_ok(*t);
    t->notify(1);
    INFO(bus.report());
    CHECK(bus.done());
}

TEST_CASE("version 2: a device that refuses FEATURES_OK is left FAILED", "[virtio-mmio]") {
    mock_lapic_bus bus{mmio_register_name};
    auto t = probed(bus, 2);
    REQUIRE(t.has_value());
    bus.expect_mmio_write(reg::status, 0)
        .expect_mmio_read(reg::status, 1, 3) // slow reset: Status is polled until it reads 0
        .expect_mmio_read(reg::status, 0)
        .expect_mmio_write(reg::status, 1)
        .expect_mmio_write(reg::status, 3)
        .expect_mmio_write(reg::device_features_sel, 0)
        .expect_mmio_read(reg::device_features, 0)
        .expect_mmio_write(reg::device_features_sel, 1)
        .expect_mmio_read(reg::device_features, 1)
        .expect_mmio_write(reg::driver_features_sel, 0)
        .expect_mmio_write(reg::driver_features, 0)
        .expect_mmio_write(reg::driver_features_sel, 1)
        .expect_mmio_write(reg::driver_features, 1)
        .expect_mmio_write(reg::status, 11)
        .expect_mmio_read(reg::status, 3)
        .expect_mmio_write(reg::status, 128);
    auto f = toro::virtio::negotiate(*t, toro::virtio::device_block, ~std::uint64_t{0});
    REQUIRE_FALSE(f.has_value());
    INFO(bus.report());
    CHECK(bus.done());
}

TEST_CASE("64-bit feature selection: each half through its selector", "[virtio-mmio]") {
    mock_lapic_bus bus{mmio_register_name};
    auto t = probed(bus, 2);
    REQUIRE(t.has_value());
    bus.expect_mmio_write(reg::device_features_sel, 0)
        .expect_mmio_read(reg::device_features, 0x89abcdef)
        .expect_mmio_write(reg::device_features_sel, 1)
        .expect_mmio_read(reg::device_features, 0x01234567)
        .expect_mmio_write(reg::driver_features_sel, 0)
        .expect_mmio_write(reg::driver_features, 0xdeadbeef)
        .expect_mmio_write(reg::driver_features_sel, 1)
        .expect_mmio_write(reg::driver_features, 0xfeedface);
    CHECK(t->device_features() == 0x0123456789abcdef);
    t->set_driver_features(0xfeedface'deadbeef);
    INFO(bus.report());
    CHECK(bus.done());
}

TEST_CASE("version 1 only takes the contiguous legacy layout", "[virtio-mmio]") {
    mock_lapic_bus bus{mmio_register_name};
    auto t = probed(bus, 1);
    REQUIRE(t.has_value());
    constexpr std::uint64_t base = 0x40000;
    const auto l = toro::virtio::legacy_layout(16);
    using qa = toro::virtio::queue_addresses;
    // Refused before any register is touched: the script stays empty.
    for (const qa& a :
         {qa{base + 0x800, base + 0x800 + l.avail_offset, base + 0x800 + l.used_offset},
          qa{base, base + l.avail_offset + 2, base + l.used_offset},
          qa{base, base + l.avail_offset, base + l.used_offset + 4096}, qa{base, 0x90000, 0xa0000}}) {
        auto q = t->setup_queue(0, 16, a);
        REQUIRE_FALSE(q.has_value());
        CHECK(q.error().what == mmio_error::not_legacy_layout);
    }
    auto high = t->setup_queue(0, 16, {bit(44), bit(44) + l.avail_offset, bit(44) + l.used_offset});
    REQUIRE_FALSE(high.has_value());
    CHECK(high.error().what == mmio_error::pfn_too_high);
    auto odd = t->setup_queue(0, 12, {base, base + 12 * 16, base + 4096});
    REQUIRE_FALSE(odd.has_value());
    CHECK(odd.error().what == mmio_error::bad_queue_size);
    INFO(bus.report());
    CHECK(bus.done());

    // The layout for the size asked: a size above QueueNumMax and a missing queue are refused too.
    bus.expect_mmio_write(reg::queue_sel, 0)
        .expect_mmio_read(reg::queue_num_max, 8)
        .expect_mmio_write(reg::queue_sel, 3)
        .expect_mmio_read(reg::queue_num_max, 0);
    auto big = t->setup_queue(0, 16, {base, base + l.avail_offset, base + l.used_offset});
    REQUIRE_FALSE(big.has_value());
    CHECK(big.error().what == mmio_error::bad_queue_size);
    auto none = t->setup_queue(3, 16, {base, base + l.avail_offset, base + l.used_offset});
    REQUIRE_FALSE(none.has_value());
    CHECK(none.error().what == mmio_error::no_queue);
    INFO(bus.report());
    CHECK(bus.done());
}

TEST_CASE("version 2 refuses misaligned queue addresses", "[virtio-mmio]") {
    mock_lapic_bus bus{mmio_register_name};
    auto t = probed(bus, 2);
    REQUIRE(t.has_value());
    auto q = t->setup_queue(0, 16, {0x1008, 0x2000, 0x3000});
    REQUIRE_FALSE(q.has_value());
    CHECK(q.error().what == mmio_error::misaligned);
    auto u = t->setup_queue(0, 16, {0x1000, 0x2000, 0x3002});
    REQUIRE_FALSE(u.has_value());
    CHECK(u.error().what == mmio_error::misaligned);
    INFO(bus.report());
    CHECK(bus.done());
}

TEST_CASE("config reads: 32-bit words, ConfigGeneration checked around them", "[virtio-mmio]") {
    SECTION("version 2: a generation change mid-read means reading again") {
        mock_lapic_bus bus{mmio_register_name};
        auto t = probed(bus, 2);
        REQUIRE(t.has_value());
        bus.expect_mmio_read(reg::config_generation, 5)
            .expect_mmio_read(reg::config + 0, 0x11111111)
            .expect_mmio_read(reg::config + 4, 0x22222222)
            .expect_mmio_read(reg::config_generation, 6) // torn: again
            .expect_mmio_read(reg::config_generation, 6)
            .expect_mmio_read(reg::config + 0, 0x00002000)
            .expect_mmio_read(reg::config + 4, 0x00000001)
            .expect_mmio_read(reg::config_generation, 6);
        std::uint64_t capacity = 0;
        t->read_config(0, &capacity, 8);
        CHECK(capacity == 0x1'0000'2000);
        INFO(bus.report());
        CHECK(bus.done());
    }
    SECTION("version 2: a generation that never settles stops after config_retries passes") {
        mock_lapic_bus bus{mmio_register_name};
        auto t = probed(bus, 2);
        REQUIRE(t.has_value());
        for (std::uint32_t pass = 0; pass < transport::config_retries; ++pass)
            bus.expect_mmio_read(reg::config_generation, 2 * pass)
                .expect_mmio_read(reg::config + 8, pass)
                .expect_mmio_read(reg::config_generation, 2 * pass + 1);
        std::uint32_t v = 0xffffffff;
        t->read_config(8, &v, 4);
        CHECK(v == transport::config_retries - 1); // the last pass stands
        INFO(bus.report());
        CHECK(bus.done());
    }
    SECTION("version 1: no generation; unaligned bytes come out of the covering words") {
        mock_lapic_bus bus{mmio_register_name};
        auto t = probed(bus, 1);
        REQUIRE(t.has_value());
        bus.expect_mmio_read(reg::config + 0, 0x44332211).expect_mmio_read(reg::config + 4, 0x88776655);
        std::uint8_t b[3] = {};
        t->read_config(2, b, 3);
        CHECK(b[0] == 0x33);
        CHECK(b[1] == 0x44);
        CHECK(b[2] == 0x55);
        INFO(bus.report());
        CHECK(bus.done());
    }
    SECTION("outside the config space: zeros, no access") {
        mock_lapic_bus bus{mmio_register_name};
        auto t = probed(bus, 2);
        REQUIRE(t.has_value());
        std::uint32_t v = 0xffffffff;
        t->read_config(toro::virtio::mmio_config_limit - 2, &v, 4);
        CHECK(v == 0);
        v = 0xffffffff;
        t->read_config(0xfffffffe, &v, 4);
        CHECK(v == 0);
        INFO(bus.report());
        CHECK(bus.done());
    }
}

TEST_CASE("virtio_mmio.device= entries from the command line", "[virtio-mmio]") {
    using toro::virtio::parse_virtio_mmio_cmdline;
    SECTION("several devices among unrelated words, suffixes, hex and decimal") {
        auto l = parse_virtio_mmio_cmdline(
            "console=ttyS0 virtio_mmio.device=512@0xfeb00e00:12 quiet "
            "virtio_mmio.device=4K@0xd0000000:5  "
            "virtio_mmio.device=1m@3221225472:40:7 toro.x=virtio_mmio.device=1@1:1 "
            "virtio_mmio.device=0x200@0XFEB00C00:11:0\tvirtio_mmio.device=2G@0x1000:9");
        REQUIRE(l.has_value());
        REQUIRE(l->count == 5);
        const auto& d = l->devices;
        CHECK(d[0].size == 512);
        CHECK(d[0].base == 0xfeb00e00);
        CHECK(d[0].irq == 12);
        CHECK(d[0].id == -1);
        CHECK(d[1].size == 4096);
        CHECK(d[1].base == 0xd0000000);
        CHECK(d[1].irq == 5);
        CHECK(d[2].size == 0x100000);
        CHECK(d[2].base == 0xc0000000);
        CHECK(d[2].irq == 40);
        CHECK(d[2].id == 7);
        CHECK(d[3].size == 0x200);
        CHECK(d[3].base == 0xfeb00c00);
        CHECK(d[3].irq == 11);
        CHECK(d[3].id == 0);
        CHECK(d[4].size == 0x80000000);
        CHECK(d[4].base == 0x1000);
    }
    SECTION("none, or an empty command line") {
        auto a = parse_virtio_mmio_cmdline("");
        REQUIRE(a.has_value());
        CHECK(a->count == 0);
        auto b = parse_virtio_mmio_cmdline("  root=/dev/vda virtio_mmio.devices=x ");
        REQUIRE(b.has_value());
        CHECK(b->count == 0);
    }
    SECTION("malformed entries are errors naming where they start") {
        for (const char* bad :
             {"virtio_mmio.device=", "virtio_mmio.device=512", "virtio_mmio.device=512@",
              "virtio_mmio.device=512@0xfeb00e00", "virtio_mmio.device=512@0xfeb00e00:",
              "virtio_mmio.device=512@0xfeb00e00:0", "virtio_mmio.device=512@0xfeb00e00:12x",
              "virtio_mmio.device=512@0xfeb00e00:12:", "virtio_mmio.device=512@0xfeb00e00:12:3:4",
              "virtio_mmio.device=0@0x1000:5", "virtio_mmio.device=4Q@0x1000:5",
              "virtio_mmio.device=512@0xg:5", "virtio_mmio.device=512@0x1000:0x5",
              "virtio_mmio.device=512@0xffffffffffffff00:5",
              "virtio_mmio.device=99999999999999999999@0x1000:5",
              "virtio_mmio.device=512@0x1000:4294967296"}) {
            INFO(bad);
            auto l = parse_virtio_mmio_cmdline(bad);
            REQUIRE_FALSE(l.has_value());
            CHECK(l.error().what == mmio_error::bad_cmdline);
            CHECK(l.error().value == 0);
        }
        auto later =
            parse_virtio_mmio_cmdline("quiet virtio_mmio.device=4K@0x1000:5 virtio_mmio.device=4K@x:5");
        REQUIRE_FALSE(later.has_value());
        CHECK(later.error().value == 37);
    }
    SECTION("more than eight devices") {
        std::string line;
        for (int i = 0; i < 8; ++i)
            line += "virtio_mmio.device=512@" + std::to_string(0x1000 * (i + 1)) + ":5 ";
        auto eight = parse_virtio_mmio_cmdline({line.data(), line.size()});
        REQUIRE(eight.has_value());
        CHECK(eight->count == 8);
        CHECK(eight->devices[7].base == 0x8000);
        line += "virtio_mmio.device=512@0x9000:5";
        auto nine = parse_virtio_mmio_cmdline({line.data(), line.size()});
        REQUIRE_FALSE(nine.has_value());
        CHECK(nine.error().what == mmio_error::too_many);
    }
}
