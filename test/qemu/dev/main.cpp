// dev: the devices unit as an app uses it. toro::devices<...> probes the virtio-mmio devices the command
// line or ACPI announce and every PCI function, starts a driver per device found and registers it; the app
// finds them by name. Modes (first word of the command line that names one):
//   blk    virtio-blk0 as blk does (test/qemu/blk): checks the harness's pattern over the first 64 KiB,
//   writes
//          its own at sectors 1024-1031, flushes; then reports how many interrupts woke the waiter.
//   net    (also with blk: both, in that order; with lastcpu: on the last CPU) eth0 exchanges frames with the
//   harness's peer (tools/cloudit/netpeer.py) over QEMU's dgram netdev:
//          sends `frames` frames of every length class (60..1514 bytes, ethertype 0x88b5, pattern
//          (seq * 7 + k) & 0xff), then answers each frame the peer sends (ethertype 0x88b6, pattern checked)
//          with an echo (ethertype 0x88b7, every payload byte inverted), sleeping on the NIC's interrupt
//          between frames. Reports the MAC, the link, counts and device interrupts.
//   blkbench  virtio-blk0: sequential read of the whole disk, then sequential write and flush, in 128 KiB
//          requests; then 4096 random 4 KiB reads, one at a time. Prints bytes and nanoseconds
//          (./cloudit bench dev turns them into MB/s and IOPS).
//   netbench  eth0: sends 20000 60-byte frames as fast as the NIC takes them, then echoes what the peer
//          sends until it sends a frame of type 0x88b8. Prints counts and nanoseconds.
//   netidle  eth0: waits 3 s for a frame that never comes (the harness measures the VMM's CPU time between
//          "dev: idle begin" and "dev: idle end": the waiting thread sleeps, its CPU halts).
//   none   lists what was found (the harness runs it with no devices: the report must say so).
#include <toro/dev/devices_unit.hpp>
#include <toro/kernel.hpp>
#include <toro/mem/memory_unit.hpp>
#include <toro/proc/process_unit.hpp>

// Built twice: with every driver and transport (dev.elf), and as an appliance for microvm would name them,
// virtio over MMIO only (dev_mmio.elf, -DTORO_DEV_MMIO_ONLY): the PCI code must not be in that image.
#ifdef TORO_DEV_MMIO_ONLY
using dev_os = toro::appliance<
    toro::memory, toro::process,
    toro::devices<toro::virtio_blk_driver<128, toro::via_mmio>, toro::virtio_net_driver<64, toro::via_mmio>>>;
#else
using dev_os = toro::appliance<
    toro::memory, toro::process,
    toro::devices<toro::virtio_blk_driver<>, toro::virtio_net_driver<>, toro::e1000_driver<>>>;
#endif

namespace {

alignas(4096) std::byte buffer[16 * 512];

int blk_test() {
    toro::block_device_ref* disk = toro::find_block_device("virtio-blk0");
    if (disk == nullptr) return toro::print("dev: no virtio-blk0 registered\n"), 3;
    std::size_t bad = 0;
    const std::uint64_t t0 = toro::now_ns();
    for (std::uint64_t lba = 0; lba < 128; lba += 16) {
        if (auto r = disk->read(lba, buffer); !r) return toro::print("dev: read {}: {}\n", lba, r.error()), 1;
        for (std::size_t k = 0; k < sizeof buffer; ++k) {
            const std::uint64_t o = lba * 512 + k;
            bad += buffer[k] != static_cast<std::byte>((o * 131 + o / 512) & 0xff);
        }
    }
    toro::print("dev: read 128 sectors in 16-sector requests: {} bad bytes ({} us)\n", bad,
                (toro::now_ns() - t0) / 1000);
    for (std::size_t k = 0; k < 8 * 512; ++k)
        buffer[k] = static_cast<std::byte>(((1024 * 512 + k) ^ 0x5a) & 0xff);
    if (auto r = disk->write(1024, std::span{buffer, 8 * 512}); !r)
        return toro::print("dev: write: {}\n", r.error()), 1;
    if (auto r = disk->flush(); !r) return toro::print("dev: flush: {}\n", r.error()), 1;
    toro::print("dev: wrote 8 sectors at 1024 and flushed; {} device interrupts\n",
                toro::device_interrupt_count());
    return bad == 0 ? 0 : 1;
}

constexpr std::size_t net_frames = 32;
constexpr toro::mac_address peer_mac{0x02, 0, 0, 0, 0, 0x01};
constexpr std::uint16_t type_guest = 0x88b5, type_peer = 0x88b6, type_echo = 0x88b7, type_done = 0x88b8;

// Frame lengths that cover the minimum, the maximum and what lies between.
constexpr std::size_t frame_length(std::size_t seq) {
    return seq == 0 ? 60 : seq == 1 ? 1514 : 60 + (seq * 389) % (1514 - 60);
}

void put_header(std::span<std::byte> f, const toro::mac_address& dst, const toro::mac_address& src,
                std::uint16_t type) {
    for (std::size_t i = 0; i < 6; ++i) {
        f[i] = static_cast<std::byte>(dst[i]);
        f[6 + i] = static_cast<std::byte>(src[i]);
    }
    f[12] = static_cast<std::byte>(type >> 8);
    f[13] = static_cast<std::byte>(type);
}

std::uint16_t type_of(std::span<const std::byte> f) {
    return static_cast<std::uint16_t>(std::to_integer<unsigned>(f[12]) << 8 |
                                      std::to_integer<unsigned>(f[13]));
}

int net_test() {
    toro::net_interface_ref* nic = toro::find_network_interface("eth0");
    if (nic == nullptr) return toro::print("dev: no eth0 registered\n"), 3;
    const toro::mac_address mac = nic->mac();
    toro::print("dev: eth0 MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, MTU {}, link {}\n", mac[0], mac[1],
                mac[2], mac[3], mac[4], mac[5], nic->mtu(), nic->link_up() ? "up" : "down");
    // Phase 1: the guest sends; a full transmit ring waits for the device to finish one.
    for (std::size_t seq = 0; seq < net_frames; ++seq) {
        const std::size_t len = frame_length(seq);
        const std::uint64_t until = toro::deadline_after_ns(5'000'000'000);
        for (;;) {
            auto sent = nic->send(len, [&](std::span<std::byte> f) {
                put_header(f, peer_mac, mac, type_guest);
                f[14] = static_cast<std::byte>(seq);
                for (std::size_t k = 15; k < len; ++k) f[k] = static_cast<std::byte>((seq * 7 + k) & 0xff);
            });
            if (sent) break;
            if (toro::arch::rdtsc() >= until) return toro::print("dev: send {}: {}\n", seq, sent.error()), 1;
            toro::sleep_ns(100'000);
        }
    }
    toro::print("dev: sent {} frames\n", net_frames);
    // Phase 2: the peer sends, the guest checks and echoes.
    std::size_t good = 0, bad = 0, other = 0, echoed = 0;
    const std::uint64_t irq0 = toro::device_interrupt_count();
    while (good + bad < net_frames) {
        if (!nic->wait_frame(toro::deadline_after_ns(20'000'000'000)))
            return toro::print("dev: no frame from the peer for 20 s ({} good, {} bad so far)\n", good, bad),
                   1;
        toro::mac_address from{};
        std::size_t len = 0;
        bool ok = false;
        std::array<std::byte, 1514> copy;
        nic->receive([&](std::span<const std::byte> f) {
            if (f.size() < 15 || type_of(f) != type_peer) {
                ++other;
                return;
            }
            len = f.size();
            const auto seq = std::to_integer<std::size_t>(f[14]);
            ok = true;
            for (std::size_t k = 15; k < len; ++k)
                ok &= f[k] == static_cast<std::byte>((seq * 13 + k * 3) & 0xff);
            for (std::size_t i = 0; i < 6; ++i) from[i] = std::to_integer<std::uint8_t>(f[6 + i]);
            for (std::size_t k = 0; k < len; ++k) copy[k] = f[k];
        });
        if (len == 0) continue;
        ok ? ++good : ++bad;
        auto echo = nic->send(len, [&](std::span<std::byte> f) {
            put_header(f, from, mac, type_echo);
            for (std::size_t k = 14; k < len; ++k) f[k] = copy[k] ^ std::byte{0xff};
        });
        if (echo) ++echoed;
    }
    // The peer says when it has every echo: QEMU may still be sending the last one when the guest exits.
    bool done = false;
    while (!done && nic->wait_frame(toro::deadline_after_ns(10'000'000'000)))
        nic->receive([&](std::span<const std::byte> f) { done = f.size() >= 14 && type_of(f) == type_done; });
    const std::uint64_t irqs = toro::device_interrupt_count() - irq0;
    toro::print(
        "dev: received {} frames from the peer: {} good, {} bad, {} other; echoed {}; {} device interrupts\n",
        good + bad, good, bad, other, echoed, irqs);
    if (!done) toro::print("dev: the peer never confirmed the echoes\n");
    return bad == 0 && echoed == net_frames && done && irqs > 0 ? 0 : 1;
}

int net_idle() {
    toro::net_interface_ref* nic = toro::find_network_interface("eth0");
    if (nic == nullptr) return toro::print("dev: no eth0 registered\n"), 3;
    toro::print("dev: idle begin\n");
    const bool got = nic->wait_frame(toro::deadline_after_ns(3'000'000'000));
    toro::print("dev: idle end ({})\n", got ? "a frame came" : "no frame, as expected");
    return got ? 1 : 0;
}

alignas(4096) std::byte big[128 * 1024];

int blk_bench() {
    toro::block_device_ref* disk = toro::find_block_device("virtio-blk0");
    if (disk == nullptr) return toro::print("dev: no virtio-blk0 registered\n"), 3;
    const std::uint64_t bytes = disk->block_count() * disk->block_size() / sizeof big * sizeof big;
    const std::uint64_t per = sizeof big / disk->block_size();
    std::uint64_t t0 = toro::now_ns();
    for (std::uint64_t at = 0; at < bytes; at += sizeof big)
        if (auto r = disk->read(at / disk->block_size(), big); !r)
            return toro::print("dev: {}\n", r.error()), 1;
    const std::uint64_t read_ns = toro::now_ns() - t0;
    for (std::size_t k = 0; k < sizeof big; ++k) big[k] = static_cast<std::byte>(k * 3);
    t0 = toro::now_ns();
    for (std::uint64_t lba = 0; lba < bytes / disk->block_size(); lba += per)
        if (auto r = disk->write(lba, big); !r) return toro::print("dev: {}\n", r.error()), 1;
    if (auto r = disk->flush(); !r) return toro::print("dev: {}\n", r.error()), 1;
    const std::uint64_t write_ns = toro::now_ns() - t0;
    std::uint64_t x = 0x9e3779b97f4a7c15;
    const std::uint64_t slots = bytes / 4096;
    t0 = toro::now_ns();
    for (int i = 0; i < 4096; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (auto r = disk->read((x % slots) * (4096 / disk->block_size()), std::span{big, 4096}); !r)
            return toro::print("dev: {}\n", r.error()), 1;
    }
    const std::uint64_t rand_ns = toro::now_ns() - t0;
    toro::print("bench: blk bytes {} read_ns {} write_ns {} rand_reads 4096 rand_ns {}\n", bytes, read_ns,
                write_ns, rand_ns);
    return 0;
}

int net_bench() {
    toro::net_interface_ref* nic = toro::find_network_interface("eth0");
    if (nic == nullptr) return toro::print("dev: no eth0 registered\n"), 3;
    const toro::mac_address mac = nic->mac();
    constexpr std::size_t count = 20000;
    const std::uint64_t t0 = toro::now_ns();
    std::uint64_t full = 0;
    for (std::size_t seq = 0; seq < count; ++seq) {
        while (!nic->send(60, [&](std::span<std::byte> f) {
            put_header(f, peer_mac, mac, type_guest);
            f[14] = static_cast<std::byte>(seq >> 8);
            f[15] = static_cast<std::byte>(seq);
        }))
            ++full; // the transmit ring is full: the device is behind; try again at once
    }
    const std::uint64_t tx_ns = toro::now_ns() - t0;
    std::uint64_t echoed = 0, first = 0;
    for (bool stop = false; !stop;) {
        if (!nic->wait_frame(toro::deadline_after_ns(30'000'000'000)))
            return toro::print("dev: netbench: the peer went quiet\n"), 1;
        std::array<std::byte, 64> copy;
        std::size_t len = 0;
        nic->receive([&](std::span<const std::byte> f) {
            if (f.size() < 14) return;
            if (type_of(f) == type_done) stop = true;
            if (type_of(f) != type_peer) return;
            len = f.size() < copy.size() ? f.size() : copy.size();
            for (std::size_t k = 0; k < len; ++k) copy[k] = f[k];
        });
        if (len == 0) continue;
        if (first == 0) first = toro::now_ns();
        while (!nic->send(len, [&](std::span<std::byte> f) {
            for (std::size_t k = 0; k < len; ++k) f[k] = copy[k];
            put_header(f, peer_mac, mac, type_echo);
        }))
            ;
        ++echoed;
    }
    toro::print("bench: net tx_frames {} tx_ns {} tx_ring_full {} echoed {} echo_ns {} interrupts {}\n",
                count, tx_ns, full, echoed, toro::now_ns() - first, toro::device_interrupt_count());
    return 0;
}

} // namespace

int app_main(dev_os& os) {
    for (auto& e : toro::block_devices.entries())
        toro::print("dev: block device {} ({}): {} blocks\n", e.name.view(), e.driver,
                    e.device.block_count());
    for (auto& e : toro::net_interfaces.entries())
        toro::print("dev: network interface {} ({})\n", e.name.view(), e.driver);
    toro::print("dev: {} block device(s), {} network interface(s)\n", toro::block_devices.size(),
                toro::net_interfaces.size());
    const toro::string_view mode = os.boot.cmdline();
    if (toro::has_word(mode, "netbench")) return net_bench();
    if (toro::has_word(mode, "netidle")) return net_idle();
    if (toro::has_word(mode, "blkbench")) return blk_bench();
    if (toro::has_word(mode, "none"))
        return toro::block_devices.size() + toro::net_interfaces.size() == 0 ? 0 : 1;
    // "blk" and/or "net" (both: the disk and the NIC share an interrupt line in the harness's setup), on
    // the boot CPU or, with "lastcpu", on the last CPU while the interrupts go to the boot CPU.
    auto run = [](void* m) {
        const toro::string_view words = *static_cast<const toro::string_view*>(m);
        int r = 0;
        if (toro::has_word(words, "blk") || !toro::has_word(words, "net")) r = blk_test();
        if (r == 0 && toro::has_word(words, "net")) r = net_test();
        toro::print("dev: ran on CPU {}\n", toro::current_cpu());
        return r;
    };
    if (!toro::has_word(mode, "lastcpu")) return run(const_cast<toro::string_view*>(&mode));
    auto t = toro::begin_thread(run, const_cast<toro::string_view*>(&mode), {.cpu = os.cpus() - 1});
    if (!t) return toro::print("dev: {}\n", t.error()), 1;
    return *t->join();
}

TORO_APPLIANCE(dev_os, app_main)
