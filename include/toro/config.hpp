// Build-time configuration of a kernel image, set by the build (meson options -> -D flags).
#pragma once

#ifndef TORO_PROFILE_BOOT
#define TORO_PROFILE_BOOT 0
#endif

namespace toro::config {

// `cloudit build --profile-boot`: kernel_main's first statement exits through isa-debug-exit with status 0,
// so the VMM's wall time measures launch -> kernel_main (Toro's ProfileBootTime).
inline constexpr bool profile_boot = TORO_PROFILE_BOOT != 0;

} // namespace toro::config
