// Host tests for the virtio PCI transports (dev/virtio/pci.hpp): finding a virtio function on a fake
// configuration space (fake_pci_bus: realistic BAR sizing, virtio vendor capabilities), assigning the BARs
// firmware left at 0 (natural alignment, no overlap, decoding and mastering on, no BAR written while the
// function decodes), parsing the capabilities, and the legacy (I/O BAR) and modern (capabilities) start-ups
// through virtio::negotiate, setup_queue and driver_ok against register models that log every reg_access with
// its width.
#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <toro/dev/pci/fake_pci.hpp>
#include <toro/dev/virtio/pci.hpp>

using toro::bar_kind;
using toro::pci_address;
using toro::testing::fake_bar;
using toro::testing::fake_function_spec;
using toro::testing::fake_pci_bus;
using toro::testing::fake_pci_function;
namespace v = toro::virtio;
namespace pe = toro::virtio::pci_error;

// Every member compiles against the kernel's register providers.
template class toro::virtio::legacy_pci_transport<toro::virtio::pci_port_regs>;
template class toro::virtio::modern_pci_transport<toro::virtio::pci_mmio_regs>;

namespace {

// ---- Fake functions as QEMU builds them ----

constexpr pci_address host_bridge{0, 0, 0}, net_addr{0, 2, 0}, blk_addr{0, 3, 0};

void add_host_bridge(fake_pci_bus& bus) {
    bus.add(host_bridge, {.vendor = 0x8086, .device = 0x1237, .class_code = 0x06, .subclass = 0x00});
}

// A transitional virtio function (device 0x1000 + n, subsystem id = virtio id): I/O BAR0, MSI-X BAR1.
fake_pci_function& add_transitional(fake_pci_bus& bus, pci_address at, std::uint16_t device, std::uint16_t id,
                                    std::uint64_t io = 0, std::uint64_t mem = 0, std::uint16_t command = 0) {
    auto& f = bus.add(at, {.vendor = 0x1af4, .device = device, .class_code = 0x01, .command = command});
    f.set16(v::pci_subsystem_id, id);
    f.bar(0, fake_bar::io(64, io)).bar(1, fake_bar::mem32(4096, mem));
    f.add_msix(2, 1, 0, 1, 0x800);
    return f;
}

// The notify capability with its multiplier (virtio_pci_notify_cap: 20 bytes).
std::uint8_t add_notify_cap(fake_pci_function& f, std::uint8_t bar, std::uint32_t offset,
                            std::uint32_t length, std::uint32_t multiplier) {
    std::vector<std::uint8_t> body{20, v::pci_cap::notify, bar, 0, 0, 0};
    for (std::uint32_t w : {offset, length, multiplier})
        for (int i = 0; i < 4; ++i) body.push_back(static_cast<std::uint8_t>(w >> (8 * i)));
    return f.add_capability(toro::pci::cap_vendor, body);
}

// A modern-only virtio block function laid out as QEMU does: MSI-X BAR1, a 16 KiB 64-bit BAR4 with common
// at 0, ISR at 0x1000, device at 0x2000, notify at 0x3000 (multiplier 4).
fake_pci_function& add_modern_blk(fake_pci_bus& bus, pci_address at, std::uint64_t mem1 = 0,
                                  std::uint64_t mem4 = 0, std::uint16_t command = 0) {
    auto& f = bus.add(at, {.vendor = 0x1af4, .device = 0x1042, .class_code = 0x01, .command = command});
    f.set16(v::pci_subsystem_id, 2);
    f.bar(1, fake_bar::mem32(4096, mem1)).bar(4, fake_bar::mem64(16384, mem4, true));
    f.add_msix(2, 1, 0, 1, 0x800);
    f.add_virtio_cap(v::pci_cap::common, 4, 0x0000, 0x1000);
    f.add_virtio_cap(v::pci_cap::isr, 4, 0x1000, 0x1000);
    f.add_virtio_cap(v::pci_cap::device, 4, 0x2000, 0x1000);
    add_notify_cap(f, 4, 0x3000, 0x1000, 4);
    f.add_virtio_cap(v::pci_cap::pci_access, 0, 0, 0);
    return f;
}

// ---- Register models ----

struct reg_access {
    char op; // 'r' or 'w'
    int width;
    std::uint32_t offset;
    std::uint32_t value;
    bool operator==(const reg_access&) const = default;
};

std::string show(const std::vector<reg_access>& log) {
    std::string s;
    for (const auto& a : log)
        s += std::string(1, a.op) + std::to_string(a.width) + "@" + std::to_string(a.offset) + "=" +
             std::to_string(a.value) + " ";
    return s;
}

// The legacy register block (4.1.4.8), with its device config at 0x14. With msix set, 0x14 and 0x16 are the
// configuration and selected queue's vector registers; like QEMU, they take an entry below msix_entries or
// 0xffff, and store 0xffff for any other.
struct legacy_model {
    std::vector<reg_access> log;
    std::uint8_t status = 0, isr = 0;
    std::uint32_t host_features = 0x1000'0246, guest_features = 0;
    std::uint16_t select = 0, notified = 0xffff;
    std::array<std::uint16_t, 2> size{256, 0};
    std::array<std::uint32_t, 2> pfn{};
    std::array<std::uint8_t, 44> config{};
    bool msix = false;
    std::uint16_t msix_entries = 2, config_vector = 0xffff;
    std::array<std::uint16_t, 2> queue_vector{0xffff, 0xffff};
    int bad_width = 0;

    bool vector_reg(std::uint32_t off) const { return msix && (off == 0x14 || off == 0x16); }

    std::uint32_t read(int w, std::uint32_t off) {
        std::uint32_t v = 0;
        auto want = [&](int width) { bad_width += w != width; };
        switch (off) {
        case 0x00:
            want(32), v = host_features;
            break;
        case 0x04:
            want(32), v = guest_features;
            break;
        case 0x08:
            want(32), v = select < 2 ? pfn[select] : 0;
            break;
        case 0x0c:
            want(16), v = select < 2 ? size[select] : 0;
            break;
        case 0x0e:
            want(16), v = select;
            break;
        case 0x12:
            want(8), v = status;
            break;
        case 0x13:
            want(8), v = isr, isr = 0;
            break;
        default:
            if (vector_reg(off)) {
                want(16), v = off == 0x14 ? config_vector : select < 2 ? queue_vector[select] : 0xffff;
                break;
            }
            for (int i = 0; i < w / 8; ++i)
                if (off + i >= 0x14 && off + i - 0x14 < config.size())
                    v |= std::uint32_t{config[off + i - 0x14]} << (8 * i);
        }
        log.push_back({'r', w, off, v});
        return v;
    }
    void write(int w, std::uint32_t off, std::uint32_t v) {
        log.push_back({'w', w, off, v});
        auto want = [&](int width) { bad_width += w != width; };
        switch (off) {
        case 0x04:
            want(32), guest_features = v;
            break;
        case 0x08:
            want(32);
            if (select < 2) pfn[select] = v;
            break;
        case 0x0e:
            want(16), select = static_cast<std::uint16_t>(v);
            break;
        case 0x10:
            want(16), notified = static_cast<std::uint16_t>(v);
            break;
        case 0x12:
            want(8), status = static_cast<std::uint8_t>(v);
            break;
        default:
            if (vector_reg(off)) {
                want(16);
                const auto e = static_cast<std::uint16_t>(v < msix_entries ? v : 0xffff);
                if (off == 0x14)
                    config_vector = e;
                else if (select < 2)
                    queue_vector[select] = e;
                break;
            }
            ++bad_width; // read-only or config
        }
    }
};

struct legacy_bus {
    legacy_model* m;
    std::uint8_t read8(std::uint32_t o) { return static_cast<std::uint8_t>(m->read(8, o)); }
    std::uint16_t read16(std::uint32_t o) { return static_cast<std::uint16_t>(m->read(16, o)); }
    std::uint32_t read32(std::uint32_t o) { return m->read(32, o); }
    void write8(std::uint32_t o, std::uint8_t x) { m->write(8, o, x); }
    void write16(std::uint32_t o, std::uint16_t x) { m->write(16, o, x); }
    void write32(std::uint32_t o, std::uint32_t x) { m->write(32, o, x); }
};
static_assert(v::virtio_reg_bus<legacy_bus>);

// The four modern structures: common config semantics (selectors, per-queue registers), the notify area,
// the ISR, and a device config whose generation can be made to change under the reader. The MSI-X vector
// registers take an entry below msix_entries or 0xffff and store 0xffff for any other (as QEMU does).
struct modern_model {
    enum window { common, notify, isr, device };
    std::vector<reg_access> log; // common config accesses only
    std::vector<reg_access> notifies;
    std::uint64_t offered = (std::uint64_t{1} << v::feature_version_1) | 0x246;
    std::uint64_t driver = 0;
    std::uint32_t dev_sel = 0, drv_sel = 0;
    std::uint8_t status = 0, generation = 0, isr_value = 0;
    bool refuse_features = false;
    std::uint16_t select = 0, num_queues = 1;
    std::uint16_t msix_entries = 2, msix_config = 0xffff;
    struct queue {
        std::uint16_t size = 256, notify_off = 0, enable = 0;
        std::uint64_t desc = 0, driver = 0, device = 0;
        std::uint16_t vector = 0xffff;
    };
    std::array<queue, 2> q{queue{}, queue{256, 1}};
    std::array<std::uint8_t, 64> config{};
    int generation_bumps = 0; // bump the generation on this many device-config reads
    int bad_width = 0;

    queue* sel() { return select < q.size() ? &q[select] : nullptr; }

    std::uint32_t read(window win, int w, std::uint32_t off) {
        if (win == isr) {
            const std::uint32_t v = isr_value;
            isr_value = 0;
            return v;
        }
        if (win == device) {
            if (generation_bumps > 0) --generation_bumps, ++generation;
            std::uint32_t v = 0;
            for (int i = 0; i < w / 8; ++i) v |= std::uint32_t{config.at(off + i)} << (8 * i);
            return v;
        }
        if (win != common) return 0;
        auto want = [&](int width) { bad_width += w != width; };
        std::uint32_t v = 0;
        queue* s = sel();
        switch (off) {
        case 0x04:
            want(32), v = dev_sel < 2 ? static_cast<std::uint32_t>(offered >> (32 * dev_sel)) : 0;
            break;
        case 0x10:
            want(16), v = msix_config;
            break;
        case 0x12:
            want(16), v = num_queues;
            break;
        case 0x14:
            want(8), v = status;
            break;
        case 0x15:
            want(8), v = generation;
            break;
        case 0x18:
            want(16), v = s ? s->size : 0;
            break;
        case 0x1a:
            want(16), v = s ? s->vector : 0xffff;
            break;
        case 0x1e:
            want(16), v = s ? s->notify_off : 0;
            break;
        default:
            ++bad_width;
        }
        log.push_back({'r', w, off, v});
        return v;
    }
    void write(window win, int w, std::uint32_t off, std::uint32_t v) {
        if (win == notify) {
            notifies.push_back({'w', w, off, v});
            return;
        }
        if (win != common) {
            ++bad_width;
            return;
        }
        log.push_back({'w', w, off, v});
        auto want = [&](int width) { bad_width += w != width; };
        queue* s = sel();
        auto half = [&](std::uint64_t& field, std::uint32_t at) {
            want(32);
            if (at == 0)
                field = (field & ~0xffffffffull) | v;
            else
                field = (field & 0xffffffffull) | std::uint64_t{v} << 32;
        };
        switch (off) {
        case 0x00:
            want(32), dev_sel = v;
            break;
        case 0x08:
            want(32), drv_sel = v;
            break;
        case 0x0c:
            want(32);
            if (drv_sel < 2)
                driver = (driver & ~(0xffffffffull << (32 * drv_sel))) | std::uint64_t{v} << (32 * drv_sel);
            break;
        case 0x10:
            want(16), msix_config = static_cast<std::uint16_t>(v < msix_entries ? v : 0xffff);
            break;
        case 0x14:
            want(8);
            status = static_cast<std::uint8_t>(v);
            if (refuse_features) status &= ~v::status_features_ok;
            if (v == 0) driver = 0, q = {queue{}, queue{256, 1}}, msix_config = 0xffff;
            break;
        case 0x16:
            want(16), select = static_cast<std::uint16_t>(v);
            break;
        case 0x18:
            want(16);
            if (s) s->size = static_cast<std::uint16_t>(v);
            break;
        case 0x1a:
            want(16);
            if (s) s->vector = static_cast<std::uint16_t>(v < msix_entries ? v : 0xffff);
            break;
        case 0x1c:
            want(16);
            if (s) s->enable = static_cast<std::uint16_t>(v);
            break;
        case 0x20:
        case 0x24:
            if (s) half(s->desc, off - 0x20);
            break;
        case 0x28:
        case 0x2c:
            if (s) half(s->driver, off - 0x28);
            break;
        case 0x30:
        case 0x34:
            if (s) half(s->device, off - 0x30);
            break;
        default:
            ++bad_width;
        }
    }
};

struct modern_bus {
    modern_model* m;
    modern_model::window win;
    std::uint8_t read8(std::uint32_t o) { return static_cast<std::uint8_t>(m->read(win, 8, o)); }
    std::uint16_t read16(std::uint32_t o) { return static_cast<std::uint16_t>(m->read(win, 16, o)); }
    std::uint32_t read32(std::uint32_t o) { return m->read(win, 32, o); }
    void write8(std::uint32_t o, std::uint8_t x) { m->write(win, 8, o, x); }
    void write16(std::uint32_t o, std::uint16_t x) { m->write(win, 16, o, x); }
    void write32(std::uint32_t o, std::uint32_t x) { m->write(win, 32, o, x); }
};
static_assert(v::virtio_reg_bus<modern_bus>);

v::modern_pci_transport<modern_bus> modern(modern_model& m) {
    v::modern_pci_regions<modern_bus> r{{&m, modern_model::common},
                                        {&m, modern_model::notify},
                                        {&m, modern_model::isr},
                                        {&m, modern_model::device},
                                        0x1000,
                                        64,
                                        4};
    return {r, v::device_block};
}

// Where virtqueue_memory::legacy puts a queue of `size` at guest-physical `base`.
v::queue_addresses legacy_addresses(std::uint64_t base, std::size_t size) {
    const v::ring_layout l = v::legacy_layout(size);
    return {base + l.desc_offset, base + l.avail_offset, base + l.used_offset};
}

bool overlap(const toro::pci_bar& a, const toro::pci_bar& b) {
    return a.address < b.address + b.size && b.address < a.address + a.size;
}

} // namespace

// ---- Finding, BAR assignment, capabilities ----

TEST_CASE("find_virtio_pci: a transitional block device behind unassigned BARs (qboot)", "[virtio-pci]") {
    fake_pci_bus bus;
    add_host_bridge(bus);
    add_transitional(bus, net_addr, 0x1000, v::device_net);
    add_transitional(bus, blk_addr, 0x1001, v::device_block);
    v::pci_bar_window window;
    auto d = v::find_virtio_pci(bus, v::device_block, window);
    REQUIRE(d);
    CHECK(d->function.address == blk_addr);
    CHECK(d->virtio_id == v::device_block);
    CHECK(d->transitional);
    CHECK_FALSE(d->modern);
    CHECK_FALSE(d->msix_enabled);
    CHECK(d->assigned == 0x3);
    CHECK(d->bars[0].kind == bar_kind::io);
    CHECK(d->bars[0].address == 0xc000);
    CHECK(d->bars[1].address == 0xe0000000);
    auto& f = bus.at(blk_addr);
    CHECK((f.get32(toro::pci::bar0) & ~0x3u) == 0xc000);
    CHECK((f.get32(toro::pci::bar0 + 4) & ~0xfu) == 0xe0000000);
    CHECK((f.get16(toro::pci::command) & 0x7) == 0x7); // I/O, memory, bus master
    CHECK(f.bar_writes_while_decoding == 0);
    // The net function the scan passed over is untouched.
    CHECK(bus.at(net_addr).get32(toro::pci::bar0) == 1);
    CHECK(bus.at(net_addr).get16(toro::pci::command) == 0);

    // The next one comes after it in the same window.
    auto n = v::find_virtio_pci(bus, v::device_net, window);
    REQUIRE(n);
    CHECK(n->bars[0].address == 0xc040);
    CHECK(n->bars[1].address == 0xe0001000);
}

TEST_CASE("find_virtio_pci: a modern device's BARs are naturally aligned, disjoint and below 4 GiB",
          "[virtio-pci]") {
    fake_pci_bus bus;
    add_host_bridge(bus);
    add_modern_blk(bus, blk_addr);
    add_modern_blk(bus, {0, 4, 0});
    v::pci_bar_window window;
    window.mem_next = 0xe0000800; // not aligned for either BAR
    auto a = v::find_virtio_pci(bus, v::device_block, window, 0);
    auto b = v::find_virtio_pci(bus, v::device_block, window, 1);
    REQUIRE(a);
    REQUIRE(b);
    std::vector<toro::pci_bar> all;
    for (const auto* d : {&*a, &*b}) {
        CHECK(d->modern);
        CHECK_FALSE(d->transitional);
        CHECK(d->assigned == 0x12);
        CHECK(d->bars[4].kind == bar_kind::mem64);
        for (int i : {1, 4}) {
            const auto& bar = d->bars[i];
            CHECK(bar.address % bar.size == 0);
            CHECK(bar.address >= 0xe0000800);
            CHECK(bar.address + bar.size <= 0xfec00000);
            all.push_back(bar);
        }
        auto& f = bus.at(d->function.address);
        CHECK(f.get32(toro::pci::bar0 + 4 * 5) == 0); // the upper half
        CHECK((f.get32(toro::pci::bar0 + 4 * 4) & ~0xfu) == d->bars[4].address);
        CHECK((f.get16(toro::pci::command) & 0x7) == 0x6); // memory + master, no I/O BAR
        CHECK(f.bar_writes_while_decoding == 0);
    }
    for (std::size_t i = 0; i < all.size(); ++i)
        for (std::size_t j = i + 1; j < all.size(); ++j) CHECK_FALSE(overlap(all[i], all[j]));
    // The capabilities.
    CHECK(a->common.bar == 4);
    CHECK(a->common.offset == 0);
    CHECK(a->isr.offset == 0x1000);
    CHECK(a->device.offset == 0x2000);
    CHECK(a->notify.offset == 0x3000);
    CHECK(a->notify.length == 0x1000);
    CHECK(a->notify_off_multiplier == 4);

    // A second capability of a type already seen is an alternative; the first one stands.
    fake_pci_bus other;
    add_modern_blk(other, blk_addr).add_virtio_cap(v::pci_cap::isr, 4, 0x1800, 0x100);
    v::pci_bar_window w2;
    auto c = v::find_virtio_pci(other, v::device_block, w2);
    REQUIRE(c);
    CHECK(c->isr.offset == 0x1000);
}

TEST_CASE("find_virtio_pci: BARs firmware assigned (SeaBIOS) are kept", "[virtio-pci]") {
    fake_pci_bus bus;
    add_host_bridge(bus);
    add_modern_blk(bus, blk_addr, 0xfebf0000, 0xfebf8000, 0x0003);
    v::pci_bar_window window;
    auto d = v::find_virtio_pci(bus, v::device_block, window);
    REQUIRE(d);
    CHECK(d->assigned == 0);
    CHECK(d->bars[1].address == 0xfebf0000);
    CHECK(d->bars[4].address == 0xfebf8000);
    CHECK(window.mem_next == 0xe0000000);                             // nothing taken
    CHECK((bus.at(blk_addr).get16(toro::pci::command) & 0x7) == 0x7); // bus master added, I/O bit kept
}

TEST_CASE("find_virtio_pci: not found, a full window, a capability outside its BAR", "[virtio-pci]") {
    fake_pci_bus bus;
    add_host_bridge(bus);
    add_transitional(bus, net_addr, 0x1000, v::device_net);
    v::pci_bar_window window;
    auto none = v::find_virtio_pci(bus, v::device_block, window);
    REQUIRE_FALSE(none);
    CHECK(none.error().what == pe::not_found);

    v::pci_bar_window tiny;
    tiny.mem_end = tiny.mem_next + 2048; // the 4 KiB MSI-X BAR does not fit
    auto full = v::find_virtio_pci(bus, v::device_net, tiny);
    REQUIRE_FALSE(full);
    CHECK(full.error().what == pe::window_full);

    fake_pci_bus bad;
    auto& f = bad.add(blk_addr, {.vendor = 0x1af4, .device = 0x1042, .class_code = 0x01, .command = 0});
    f.bar(4, fake_bar::mem64(16384, 0));
    f.add_virtio_cap(v::pci_cap::common, 4, 0x3800, 0x1000); // runs past the 16 KiB BAR
    add_notify_cap(f, 4, 0x3000, 0x1000, 4);
    f.add_virtio_cap(v::pci_cap::isr, 4, 0x1000, 0x1000);
    v::pci_bar_window w2;
    auto e = v::find_virtio_pci(bad, v::device_block, w2);
    REQUIRE_FALSE(e);
    CHECK(e.error().what == pe::bad_cap);
}

TEST_CASE("setup_virtio_pci sets up the function it is given and keeps a usable MSI-X capability",
          "[virtio-pci]") {
    fake_pci_bus bus;
    add_host_bridge(bus);
    add_transitional(bus, net_addr, 0x1000, v::device_net);
    add_modern_blk(bus, blk_addr);
    v::pci_bar_window window;

    auto blk_fn = toro::read_function(bus, blk_addr);
    REQUIRE(blk_fn);
    auto blk = v::setup_virtio_pci(bus, *blk_fn, window);
    REQUIRE(blk);
    CHECK(blk->function.address == blk_addr);
    CHECK(blk->virtio_id == v::device_block);
    CHECK(blk->modern);
    CHECK_FALSE(blk->transitional);
    CHECK(blk->assigned == 0x12);
    CHECK(blk->common.bar == 4);
    CHECK(blk->notify_off_multiplier == 4);
    CHECK((bus.at(blk_addr).get16(toro::pci::command) & 0x7) == 0x6);
    CHECK_FALSE(blk->msix_enabled);
    REQUIRE(blk->msix);
    CHECK(blk->msix->cap_offset == 0x40);
    CHECK(blk->msix->table_size == 2);
    CHECK(blk->msix->table_bir == 1);
    CHECK(blk->msix->table_offset == 0);
    CHECK(blk->msix->pba_bir == 1);
    CHECK(blk->msix->pba_offset == 0x800);
    CHECK_FALSE(blk->msix->enabled);
    // The net function at 00:02.0, which a scan would have met first, is left alone.
    CHECK(bus.at(net_addr).get16(toro::pci::command) == 0);
    CHECK(bus.at(net_addr).get32(toro::pci::bar0) == 1);

    // A transitional function: the virtio id is its subsystem id; MSI-X already on is seen as such.
    const auto at = toro::find_capability(bus, net_addr, toro::pci::cap_msix);
    REQUIRE(at);
    bus.at(net_addr).set16(static_cast<std::uint16_t>(*at + 2), 0x8000 | 1);
    auto net_fn = toro::read_function(bus, net_addr);
    REQUIRE(net_fn);
    auto net = v::setup_virtio_pci(bus, *net_fn, window);
    REQUIRE(net);
    CHECK(net->virtio_id == v::device_net);
    CHECK(net->transitional);
    CHECK_FALSE(net->modern);
    CHECK(net->bars[0].address == 0xc000);
    CHECK(net->msix_enabled);
    REQUIRE(net->msix);
    CHECK(net->msix->enabled);
    CHECK(net->msix->table_size == 2);

    // find_virtio_pci gives the same device.
    fake_pci_bus twin;
    add_host_bridge(twin);
    add_modern_blk(twin, blk_addr);
    v::pci_bar_window w2;
    auto found = v::find_virtio_pci(twin, v::device_block, w2);
    REQUIRE(found);
    REQUIRE(found->msix);
    CHECK(found->msix->table_size == 2);
    CHECK(found->bars[1].address == blk->bars[1].address); // both the first from a fresh window
    CHECK(found->bars[4].address == blk->bars[4].address);
    CHECK(found->assigned == blk->assigned);
}

TEST_CASE("setup_virtio_pci: not a virtio function; an MSI-X table outside the BARs is no MSI-X",
          "[virtio-pci]") {
    fake_pci_bus bus;
    add_host_bridge(bus);
    v::pci_bar_window window;
    auto host = toro::read_function(bus, host_bridge);
    REQUIRE(host);
    auto h = v::setup_virtio_pci(bus, *host, window);
    REQUIRE_FALSE(h);
    CHECK(h.error().what == pe::not_found);
    CHECK(h.error().value == 0);
    CHECK(bus.at(host_bridge).writes == 0);

    // Red Hat's vendor ID on a device outside both virtio ranges (ivshmem).
    bus.add({0, 4, 0}, {.vendor = 0x1af4, .device = 0x1110, .class_code = 0x05});
    auto ivshmem = toro::read_function(bus, {0, 4, 0});
    REQUIRE(ivshmem);
    auto i = v::setup_virtio_pci(bus, *ivshmem, window);
    REQUIRE_FALSE(i);
    CHECK(i.error().what == pe::not_found);
    // A virtio device ID on a bridge header.
    bus.add({0, 5, 0}, {.vendor = 0x1af4, .device = 0x1042, .header_layout = toro::pci::header_bridge});
    auto bridge = toro::read_function(bus, {0, 5, 0});
    REQUIRE(bridge);
    auto b = v::setup_virtio_pci(bus, *bridge, window);
    REQUIRE_FALSE(b);
    CHECK(b.error().what == pe::not_found);
    CHECK(b.error().value == v::device_block);
    CHECK(window.mem_next == 0xe0000000); // nothing taken
    CHECK(window.io_next == 0xc000);

    // A transitional block device whose MSI-X capability cannot be used; it still works over INTx.
    auto& f = bus.add(blk_addr, {.vendor = 0x1af4, .device = 0x1001, .class_code = 0x01, .command = 0});
    f.set16(v::pci_subsystem_id, v::device_block);
    f.bar(0, fake_bar::io(64, 0)).bar(1, fake_bar::mem32(4096, 0));
    SECTION("no MSI-X capability") {}
    SECTION("the table runs past the end of its BAR") {
        f.add_msix(2, 1, 0xff8, 1, 0x800);
    }
    SECTION("the table is in a BAR the function does not have") {
        f.add_msix(2, 3, 0, 1, 0x800);
    }
    SECTION("the table is in the I/O BAR") {
        f.add_msix(2, 0, 0, 1, 0x800);
    }
    SECTION("the PBA is past the end of its BAR") {
        f.add_msix(2, 1, 0, 1, 0x1000);
    }
    SECTION("the table BIR names no BAR at all") {
        f.add_msix(2, 6, 0, 1, 0x800);
    }
    auto fn = toro::read_function(bus, blk_addr);
    REQUIRE(fn);
    auto d = v::setup_virtio_pci(bus, *fn, window);
    REQUIRE(d);
    CHECK(d->virtio_id == v::device_block);
    CHECK(d->transitional);
    CHECK(d->bars[0].address == 0xc000);
    CHECK_FALSE(d->msix);
    CHECK(v::legacy_transport(*d));
}

// ---- Legacy transport ----

TEST_CASE("legacy start-up: reset, features, one page frame, DRIVER_OK, in the legacy widths",
          "[virtio-pci]") {
    legacy_model m;
    m.config[0] = 0x00; // capacity 2048 sectors, little-endian u64 at 0
    m.config[1] = 0x08;
    v::legacy_pci_transport<legacy_bus> t{{&m}, v::device_block, 64};
    CHECK(t.legacy());
    auto f = v::negotiate(t, v::device_block, 0x0000'0246 | (std::uint64_t{1} << v::feature_version_1));
    REQUIRE(f);
    CHECK(*f == 0x246); // 32 bits, no VERSION_1
    const v::queue_addresses a = legacy_addresses(0x0012'3000, 256);
    m.log.clear();
    REQUIRE(t.setup_queue(0, 256, a));
    v::driver_ok(t);
    t.notify(0);
    const std::vector<reg_access> want{
        {'w', 16, 0x0e, 0}, {'r', 16, 0x0c, 256}, {'w', 32, 0x08, static_cast<std::uint32_t>(a.desc / 4096)},
        {'r', 8, 0x12, 3},  {'w', 8, 0x12, 7},    {'w', 16, 0x10, 0},
    };
    CHECK(show(m.log) == show(want));
    CHECK(m.guest_features == 0x246);
    CHECK(m.status == 7);
    CHECK(m.bad_width == 0);
    std::uint64_t capacity = 0;
    t.read_config(0, &capacity, 8);
    CHECK(capacity == 2048);
    m.isr = 1;
    CHECK(t.interrupt_status() == 1);
    CHECK(t.interrupt_status() == 0);
    CHECK(m.bad_width == 0);
}

TEST_CASE("legacy setup_queue refuses a non-legacy layout and a size not the device's, writing nothing",
          "[virtio-pci]") {
    legacy_model m;
    v::legacy_pci_transport<legacy_bus> t{{&m}, v::device_block, 64};
    const std::uint64_t base = 0x0012'3000;
    const v::queue_addresses a = legacy_addresses(base, 256);
    auto moved = a;
    moved.used += 4096;
    auto r1 = t.setup_queue(0, 256, moved);
    REQUIRE_FALSE(r1);
    CHECK(r1.error().what == pe::not_legacy_layout);
    auto shifted = v::queue_addresses{base + 16, a.avail + 16, a.used + 16};
    auto r2 = t.setup_queue(0, 256, shifted);
    REQUIRE_FALSE(r2);
    CHECK(r2.error().what == pe::not_legacy_layout);
    CHECK(m.log.empty());
    // Size 128 in the 128 layout: the layout is fine, the device's size is 256.
    const v::ring_layout l = v::legacy_layout(128);
    auto r3 = t.setup_queue(0, 128, {base, base + l.avail_offset, base + l.used_offset});
    REQUIRE_FALSE(r3);
    CHECK(r3.error().what == pe::legacy_size);
    CHECK(m.pfn[0] == 0);
    auto r5 = t.setup_queue(0, 256, legacy_addresses(std::uint64_t{1} << 44, 256)); // PFN needs 33 bits
    REQUIRE_FALSE(r5);
    CHECK(r5.error().what == pe::pfn_too_high);
    auto r4 = t.setup_queue(1, 256, a); // queue 1 does not exist
    REQUIRE_FALSE(r4);
    CHECK(r4.error().what == pe::no_queue);
}

TEST_CASE("legacy device config moves to 0x18 with MSI-X enabled and ends with BAR0", "[virtio-pci]") {
    legacy_model m;
    m.config[4] = 0xab; // offset 0x18
    v::legacy_pci_transport<legacy_bus> on{{&m}, v::device_block, 64, true};
    std::uint8_t b = 0;
    on.read_config(0, &b, 1);
    CHECK(b == 0xab);
    v::legacy_pci_transport<legacy_bus> off{{&m}, v::device_block, 64};
    off.read_config(4, &b, 1);
    CHECK(b == 0xab);
    std::uint32_t w = 0xffffffff;
    m.log.clear();
    off.read_config(64 - 0x14 - 2, &w, 4); // runs past the 64-byte BAR
    CHECK(w == 0);
    CHECK(m.log.empty());
}

TEST_CASE("legacy MSI-X vectors: 0x14 for configuration, 0x16 for the selected queue, each read back",
          "[virtio-pci]") {
    legacy_model m;
    m.msix = true;
    v::legacy_pci_transport<legacy_bus> t{{&m}, v::device_block, 64, true};
    REQUIRE(t.set_config_vector(1));
    REQUIRE(t.set_queue_vector(0, 0));
    const std::vector<reg_access> want{
        {'w', 16, 0x14, 1},   {'r', 16, 0x14, 1}, {'w', 16, 0x0e, 0},
        {'r', 16, 0x0c, 256}, {'w', 16, 0x16, 0}, {'r', 16, 0x16, 0},
    };
    CHECK(show(m.log) == show(want));
    CHECK(m.config_vector == 1);
    CHECK(m.queue_vector[0] == 0);
    CHECK(m.queue_vector[1] == 0xffff);

    // An entry the device cannot use reads back as "no vector"; a queue that does not exist (size 0) gets
    // nothing written.
    m.log.clear();
    auto q = t.set_queue_vector(0, 2);
    REQUIRE_FALSE(q);
    CHECK(q.error().what == pe::vector_refused);
    CHECK(q.error().value == 2);
    auto c = t.set_config_vector(7);
    REQUIRE_FALSE(c);
    CHECK(c.error().what == pe::vector_refused);
    CHECK(c.error().value == 7);
    auto none = t.set_queue_vector(1, 0);
    REQUIRE_FALSE(none);
    CHECK(none.error().what == pe::no_queue);
    const std::vector<reg_access> refused{
        {'w', 16, 0x0e, 0}, {'r', 16, 0x0c, 256},    {'w', 16, 0x16, 2}, {'r', 16, 0x16, 0xffff},
        {'w', 16, 0x14, 7}, {'r', 16, 0x14, 0xffff}, {'w', 16, 0x0e, 1}, {'r', 16, 0x0c, 0},
    };
    CHECK(show(m.log) == show(refused));
    // "No vector" itself is accepted: it reads back as written.
    CHECK(t.set_config_vector(v::no_msix_vector));
    CHECK(t.set_queue_vector(0, v::no_msix_vector));
    CHECK(m.queue_vector[0] == 0xffff);
    CHECK(m.bad_width == 0);

    // Without MSI-X, 0x14 is device configuration: nothing is written.
    legacy_model plain;
    v::legacy_pci_transport<legacy_bus> off{{&plain}, v::device_block, 64};
    auto c2 = off.set_config_vector(0);
    REQUIRE_FALSE(c2);
    CHECK(c2.error().what == pe::no_msix);
    auto q2 = off.set_queue_vector(0, 0);
    REQUIRE_FALSE(q2);
    CHECK(q2.error().what == pe::no_msix);
    CHECK(plain.log.empty());
}

// ---- Modern transport ----

TEST_CASE("modern start-up: 64 feature bits, FEATURES_OK, three addresses, enable, notify offset",
          "[virtio-pci]") {
    modern_model m;
    auto t = modern(m);
    CHECK_FALSE(t.legacy());
    auto f = v::negotiate(t, v::device_block, 0x246);
    REQUIRE(f);
    CHECK(*f == (0x246 | std::uint64_t{1} << v::feature_version_1));
    CHECK(m.driver == *f);
    CHECK((m.status & v::status_features_ok) != 0);
    REQUIRE_FALSE(t.setup_queue(1, 64, {0x10000, 0x10400, 0x11000})); // num_queues is 1
    m.num_queues = 2;
    REQUIRE(t.setup_queue(0, 64, {0x10000, 0x10400, 0x11000}));
    REQUIRE(t.setup_queue(1, 128, {0x2'0000'0000, 0x2'0000'1000, 0x2'0000'2000}));
    v::driver_ok(t);
    CHECK(m.status ==
          (v::status_acknowledge | v::status_driver | v::status_features_ok | v::status_driver_ok));
    CHECK(m.q[0].size == 64);
    CHECK(m.q[0].desc == 0x10000);
    CHECK(m.q[0].driver == 0x10400);
    CHECK(m.q[0].device == 0x11000);
    CHECK(m.q[0].enable == 1);
    CHECK(m.q[1].desc == 0x2'0000'0000);
    CHECK(m.q[1].enable == 1);
    t.notify(0);
    t.notify(1);
    const std::vector<reg_access> want{{'w', 16, 0, 0}, {'w', 16, 4, 1}}; // notify_off 1 * multiplier 4
    CHECK(show(m.notifies) == show(want));
    CHECK(m.bad_width == 0);
}

TEST_CASE("modern setup_queue checks before it writes; a device refusing FEATURES_OK is left FAILED",
          "[virtio-pci]") {
    modern_model m;
    auto t = modern(m);
    m.log.clear();
    auto r = t.setup_queue(0, 64, {0x10008, 0x10400, 0x11000});
    REQUIRE_FALSE(r);
    CHECK(r.error().what == pe::misaligned);
    auto r2 = t.setup_queue(0, 48, {0x10000, 0x10400, 0x11000});
    REQUIRE_FALSE(r2);
    CHECK(r2.error().what == pe::bad_queue_size);
    CHECK(m.log.empty());
    auto r3 = t.setup_queue(0, 512, {0x10000, 0x10400, 0x11000}); // above the device's 256
    REQUIRE_FALSE(r3);
    CHECK(m.q[0].enable == 0);

    modern_model refusing;
    refusing.refuse_features = true;
    auto t2 = modern(refusing);
    REQUIRE_FALSE(v::negotiate(t2, v::device_block, 0x246));
    CHECK(refusing.status == v::status_failed);

    modern_model old;
    old.offered = 0x246; // no VERSION_1
    auto t3 = modern(old);
    REQUIRE_FALSE(v::negotiate(t3, v::device_block, 0x246));
}

TEST_CASE("modern MSI-X vectors: msix_config, and queue_select then queue_msix_vector, each read back",
          "[virtio-pci]") {
    modern_model m;
    m.num_queues = 2;
    auto t = modern(m);
    REQUIRE(t.set_config_vector(0));
    REQUIRE(t.set_queue_vector(1, 1));
    const std::vector<reg_access> want{
        {'w', 16, 0x10, 0}, {'r', 16, 0x10, 0}, {'r', 16, 0x12, 2},
        {'w', 16, 0x16, 1}, {'w', 16, 0x1a, 1}, {'r', 16, 0x1a, 1},
    };
    CHECK(show(m.log) == show(want));
    CHECK(m.msix_config == 0);
    CHECK(m.q[0].vector == 0xffff);
    CHECK(m.q[1].vector == 1);

    m.log.clear();
    auto c = t.set_config_vector(5);
    REQUIRE_FALSE(c);
    CHECK(c.error().what == pe::vector_refused);
    CHECK(c.error().value == 5);
    auto q = t.set_queue_vector(0, 2);
    REQUIRE_FALSE(q);
    CHECK(q.error().what == pe::vector_refused);
    CHECK(q.error().value == 2);
    const std::vector<reg_access> refused{
        {'w', 16, 0x10, 5}, {'r', 16, 0x10, 0xffff}, {'r', 16, 0x12, 2},
        {'w', 16, 0x16, 0}, {'w', 16, 0x1a, 2},      {'r', 16, 0x1a, 0xffff},
    };
    CHECK(show(m.log) == show(refused));
    CHECK(t.set_config_vector(v::no_msix_vector));

    // A queue at or above num_queues: nothing selected, nothing written.
    m.log.clear();
    auto none = t.set_queue_vector(2, 0);
    REQUIRE_FALSE(none);
    CHECK(none.error().what == pe::no_queue);
    CHECK(none.error().value == 2);
    const std::vector<reg_access> only_count{{'r', 16, 0x12, 2}};
    CHECK(show(m.log) == show(only_count));
    CHECK(m.select == 0);
    CHECK(m.bad_width == 0);
}

TEST_CASE("modern config reads use natural widths and retry while the generation changes", "[virtio-pci]") {
    modern_model m;
    auto t = modern(m);
    for (std::size_t i = 0; i < m.config.size(); ++i) m.config[i] = static_cast<std::uint8_t>(i);
    m.generation_bumps = 3;
    std::array<std::uint8_t, 7> out{};
    t.read_config(1, out.data(), 7); // byte 1, half 2, word 4
    for (std::size_t i = 0; i < out.size(); ++i) CHECK(out[i] == i + 1);
    CHECK(m.generation_bumps == 0);
    int generation_reads = 0;
    for (const auto& a : m.log) generation_reads += a.offset == v::common_cfg::config_generation;
    CHECK(generation_reads > 2); // retried
    std::uint32_t w = 0xffffffff;
    t.read_config(62, &w, 4); // past the 64-byte device structure
    CHECK(w == 0);
    m.isr_value = 3;
    CHECK(t.interrupt_status() == 3);
    CHECK(t.interrupt_status() == 0);
}

TEST_CASE("use_queue_vector: setup_queue gives the queue its MSI-X entry before the queue goes live",
          "[virtio-pci]") {
    // Modern: queue_msix_vector is written (and read back) before queue_enable.
    modern_model m;
    m.num_queues = 2;
    auto t = modern(m);
    t.use_queue_vector(1);
    REQUIRE(t.setup_queue(1, 64, {0x10000, 0x11000, 0x12000}));
    CHECK(m.q[1].vector == 1);
    std::size_t vector_at = m.log.size(), enable_at = m.log.size();
    for (std::size_t i = 0; i < m.log.size(); ++i) {
        if (m.log[i].op == 'w' && m.log[i].offset == 0x1a) vector_at = i;
        if (m.log[i].op == 'w' && m.log[i].offset == 0x1c) enable_at = i;
    }
    CHECK(vector_at < enable_at);
    CHECK(enable_at < m.log.size());
    // An entry the device refuses: an error, and the queue is not enabled.
    modern_model refusing;
    refusing.num_queues = 2;
    auto r = modern(refusing);
    r.use_queue_vector(9);
    auto bad = r.setup_queue(0, 64, {0x10000, 0x11000, 0x12000});
    REQUIRE_FALSE(bad);
    CHECK(bad.error().what == pe::vector_refused);
    for (const auto& a : refusing.log) CHECK_FALSE((a.op == 'w' && a.offset == 0x1c));

    // Legacy (MSI-X on): the vector is written before the page frame number that makes the queue live.
    legacy_model l;
    l.msix = true;
    v::legacy_pci_transport<legacy_bus> lt{{&l}, v::device_block, 64, true};
    lt.use_queue_vector(0);
    REQUIRE(lt.setup_queue(0, 256, legacy_addresses(0x0012'3000, 256)));
    CHECK(l.queue_vector[0] == 0);
    std::size_t lv = l.log.size(), pfn = l.log.size();
    for (std::size_t i = 0; i < l.log.size(); ++i) {
        if (l.log[i].op == 'w' && l.log[i].offset == 0x16) lv = i;
        if (l.log[i].op == 'w' && l.log[i].offset == 0x08) pfn = i;
    }
    CHECK(lv < pfn);
    CHECK(pfn < l.log.size());
}
