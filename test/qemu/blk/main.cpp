// blk: a test appliance for virtio-blk over virtio-mmio (v1 or v2, as QEMU offers it). It finds the device
// on the command line (virtio_mmio.device=..., microvm with acpi=off), starts the driver, checks the pattern
// the harness wrote into the disk image (byte at offset o: (o * 131 + o / 512) & 0xff) over the first 64 KiB
// in multi-sector reads, then writes its own pattern ((o ^ 0x5a) & 0xff) to sectors 1024-1031 and flushes;
// the harness checks the image file afterwards.
#include <toro/dev/blk/virtio_blk.hpp>
#include <toro/dev/virtio/mmio.hpp>
#include <toro/kernel.hpp>
#include <toro/mem/memory_unit.hpp>

using blk_os = toro::appliance<toro::memory>;
using transport = toro::virtio::mmio_transport<toro::arch::mmio_window>;

namespace {

toro::blk::virtio_blk<transport, 64> disk;
alignas(4096) std::byte buffer[16 * 512];

int run(blk_os& os) {
    auto list = toro::virtio::parse_virtio_mmio_cmdline(os.boot.cmdline());
    if (!list) return toro::print("blk: command line: {}\n", list.error()), 1;
    for (std::size_t i = 0; i < list->count; ++i) {
        const auto& d = list->devices[i];
        auto regs = toro::kernel_map.map_device(d.base, d.size);
        if (!regs) return toro::print("blk: {}\n", regs.error()), 1;
        auto t = transport::probe(toro::arch::mmio_window{static_cast<volatile std::uint32_t*>(*regs)});
        if (!t || t->device_id() != toro::virtio::device_block) continue;
        const unsigned version = t->version();
        if (auto r = disk.start(*t); !r) return toro::print("blk: start: {}\n", r.error()), 1;
        toro::print("blk: virtio-mmio v{} at {:#x} irq {}: {} blocks of {} bytes\n", version, d.base, d.irq,
                    disk.block_count(), disk.block_size());
        std::size_t bad = 0;
        for (std::uint64_t lba = 0; lba < 128; lba += 16) {
            if (auto r = disk.read(lba, buffer); !r)
                return toro::print("blk: read {}: {}\n", lba, r.error()), 1;
            for (std::size_t k = 0; k < sizeof buffer; ++k) {
                const std::uint64_t o = lba * 512 + k;
                bad += buffer[k] != static_cast<std::byte>((o * 131 + o / 512) & 0xff);
            }
        }
        toro::print("blk: read 128 sectors in 16-sector requests: {} bad bytes\n", bad);
        for (std::size_t k = 0; k < 8 * 512; ++k)
            buffer[k] = static_cast<std::byte>(((1024 * 512 + k) ^ 0x5a) & 0xff);
        if (auto r = disk.write(1024, std::span{buffer, 8 * 512}); !r)
            return toro::print("blk: write: {}\n", r.error()), 1;
        if (auto r = disk.flush(); !r) return toro::print("blk: flush: {}\n", r.error()), 1;
        toro::print("blk: wrote 8 sectors at 1024 and flushed\n");
        return bad == 0 ? 0 : 1;
    }
    toro::print("blk: no virtio block device on the command line ({} virtio-mmio entries)\n", list->count);
    return 3;
}

} // namespace

int app_main(blk_os& os) {
    return run(os);
}

TORO_APPLIANCE(blk_os, app_main)
