// blk: a test appliance for virtio-blk over virtio-mmio (v1 or v2, as QEMU offers it) or virtio-pci (legacy
// I/O BAR or modern capabilities). It finds the device on the command line (virtio_mmio.device=..., microvm
// with acpi=off), else in the ACPI DSDT (LNRO0005 devices: microvm with acpi=on, which leaves the command
// line alone), else on PCI through ports 0xCF8/0xCFC (assigning the BARs qboot leaves at 0), starts the
// driver, checks the pattern the harness wrote into the disk image (byte at offset o: (o * 131 + o / 512) &
// 0xff) over the first 64 KiB in multi-sector reads, then writes its own pattern ((o ^ 0x5a) & 0xff) to
// sectors 1024-1031 and flushes; the harness checks the image file afterwards.
#include <toro/dev/blk/virtio_blk.hpp>
#include <toro/dev/pci/config.hpp>
#include <toro/dev/virtio/acpi_mmio.hpp>
#include <toro/dev/virtio/mmio.hpp>
#include <toro/dev/virtio/pci.hpp>
#include <toro/kernel.hpp>
#include <toro/mem/memory_unit.hpp>

using blk_os = toro::appliance<toro::memory>;
using mmio_transport = toro::virtio::mmio_transport<toro::arch::mmio_window>;
using legacy_transport = toro::virtio::legacy_pci_transport<toro::virtio::pci_port_regs>;
using modern_transport = toro::virtio::modern_pci_transport<toro::virtio::pci_mmio_regs>;

namespace {

toro::blk::virtio_blk<mmio_transport, 64> mmio_disk;
toro::blk::virtio_blk<modern_transport, 64> modern_disk;
// A legacy PCI queue has the device's size: QEMU's virtio-blk has 256 (128 before QEMU 5.0).
toro::blk::virtio_blk<legacy_transport, 256> legacy_disk_256;
toro::blk::virtio_blk<legacy_transport, 128> legacy_disk_128;
alignas(4096) std::byte buffer[16 * 512];

// Reads the harness's pattern, writes ours, flushes. The disk is started.
template <class Disk>
int exercise(Disk& disk) {
    std::size_t bad = 0;
    for (std::uint64_t lba = 0; lba < 128; lba += 16) {
        if (auto r = disk.read(lba, buffer); !r) return toro::print("blk: read {}: {}\n", lba, r.error()), 1;
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

int run_pci() {
    toro::port_config_access<> config;
    toro::virtio::pci_bar_window window;
    auto d = toro::virtio::find_virtio_pci(config, toro::virtio::device_block, window);
    if (!d)
        return toro::print("blk: no virtio block device on the command line or on PCI: {}\n", d.error()), 3;
    const unsigned bdf = d->function.address.bdf();
    if (d->modern) {
        auto t = toro::virtio::modern_transport(*d, [](std::uint64_t phys, std::uint64_t size) {
            return toro::kernel_map.map_device(phys, size);
        });
        if (!t) return toro::print("blk: {}\n", t.error()), 1;
        if (auto r = modern_disk.start(*t); !r) return toro::print("blk: start: {}\n", r.error()), 1;
        const auto& bar = d->bars[d->common.bar];
        toro::print(
            "blk: virtio-pci modern at BDF {:#x} (BAR{} at {:#x}, BARs assigned here: {:#x}): {} blocks of "
            "{} bytes\n",
            bdf, d->common.bar, bar.address, d->assigned, modern_disk.block_count(),
            modern_disk.block_size());
        return exercise(modern_disk);
    }
    auto t = toro::virtio::legacy_transport(*d);
    if (!t) return toro::print("blk: {}\n", t.error()), 1;
    const std::uint16_t size = t->max_queue_size(0);
    auto report = [&](auto& disk) {
        toro::print(
            "blk: virtio-pci legacy at BDF {:#x} (I/O BAR0 at {:#x}, BARs assigned here: {:#x}, queue {}): "
            "{} blocks of {} bytes\n",
            bdf, d->bars[0].address, d->assigned, size, disk.block_count(), disk.block_size());
        return exercise(disk);
    };
    if (size == 256) {
        if (auto r = legacy_disk_256.start(*t); !r) return toro::print("blk: start: {}\n", r.error()), 1;
        return report(legacy_disk_256);
    }
    if (size == 128) {
        if (auto r = legacy_disk_128.start(*t); !r) return toro::print("blk: start: {}\n", r.error()), 1;
        return report(legacy_disk_128);
    }
    return toro::print(
               "blk: legacy virtio-pci queue 0 has size {}: this appliance has drivers for 128 and 256\n",
               size),
           1;
}

// The first virtio-blk among the listed transports; 3 when none is one. `from` says where the list came from.
int run_mmio(const toro::virtio::mmio_device_list& list, const char* from) {
    for (std::size_t i = 0; i < list.count; ++i) {
        const auto& d = list.devices[i];
        auto regs = toro::kernel_map.map_device(d.base, d.size);
        if (!regs) return toro::print("blk: {}\n", regs.error()), 1;
        auto t = mmio_transport::probe(toro::arch::mmio_window{static_cast<volatile std::uint32_t*>(*regs)});
        if (!t || t->device_id() != toro::virtio::device_block) continue;
        const unsigned version = t->version();
        if (auto r = mmio_disk.start(*t); !r) return toro::print("blk: start: {}\n", r.error()), 1;
        toro::print("blk: virtio-mmio v{} at {:#x} irq {}{}: {} blocks of {} bytes\n", version, d.base, d.irq,
                    from, mmio_disk.block_count(), mmio_disk.block_size());
        return exercise(mmio_disk);
    }
    toro::print("blk: no virtio block device among {} virtio-mmio transports{}\n", list.count, from);
    return 3;
}

int run(blk_os& os) {
    auto list = toro::virtio::parse_virtio_mmio_cmdline(os.boot.cmdline());
    if (!list) return toro::print("blk: command line: {}\n", list.error()), 1;
    if (list->count != 0) return run_mmio(*list, "");

    // No RSDP (microvm with acpi=off) or no LNRO0005 device (pc): on to PCI. Broken tables are reported.
    toro::firmware_reader firmware;
    toro::virtio::aml_scan_notes notes;
    auto acpi = toro::virtio::find_virtio_mmio_acpi(firmware, os.boot.rsdp, &notes);
    if (acpi && acpi->count != 0) return run_mmio(*acpi, " (from ACPI)");
    if (acpi)
        toro::print(
            "blk: ACPI lists no virtio-mmio transport ({} tables, {} devices, {} unusable, {} skipped "
            "scopes)\n",
            notes.tables, notes.devices, notes.unusable, notes.abandoned);
    else if (os.boot.rsdp != 0 || toro::find_rsdp(firmware, 0))
        toro::print("blk: ACPI: {}\n", acpi.error());
    return run_pci();
}

} // namespace

int app_main(blk_os& os) {
    return run(os);
}

TORO_APPLIANCE(blk_os, app_main)
