// parse_boot_info: from what the assembly entry hands over (protocol id, loader info address, TSC)
// to one normalised boot_info, whichever boot protocol brought the kernel up.
#pragma once

#include <cstdint>

#include <toro/base/expected.hpp>
#include <toro/boot/boot_info.hpp>
#include <toro/boot/multiboot.hpp>
#include <toro/boot/phys_reader.hpp>
#include <toro/boot/pvh.hpp>
#include <toro/boot/zero_page.hpp>

namespace toro {

// Fully (re)initialises out, whatever it held. On success every field is set; on error out holds the
// protocol and TSC (so a panic message can name them) and is otherwise empty.
template <phys_reader Reader>
expected<void> parse_boot_info(boot_protocol protocol, std::uint64_t info_addr, std::uint64_t tsc,
                               Reader& mem, boot_info& out) {
    out.reset(); // the unknown case runs no parser
    expected<void> result = unexpected{
        "unknown boot protocol: the kernel was entered neither through Multiboot (eax=0x2BADB002) nor PVH "
        "(start_info magic 0x336ec578) nor the Linux 64-bit entry",
        static_cast<std::uint64_t>(protocol)};
    switch (protocol) {
    case boot_protocol::multiboot:
        result = parse_multiboot(mem, info_addr, out);
        break;
    case boot_protocol::pvh:
        result = parse_pvh(mem, info_addr, out);
        break;
    case boot_protocol::linux64:
        result = parse_zero_page(mem, info_addr, out);
        break;
    case boot_protocol::unknown:
        break;
    }
    if (!result) { // drop a failed parser's half-filled fields, keep the protocol it recorded
        const boot_protocol p = out.protocol;
        out.reset();
        out.protocol = p;
    }
    out.tsc_at_entry = tsc;
    return result;
}

} // namespace toro
