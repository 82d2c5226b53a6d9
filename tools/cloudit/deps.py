"""First-use installation of the Debian packages CloudIt needs."""
import glob
import os
import shutil
import subprocess

from .common import CloudItError, say

# What each command needs: (package, a file or program that proves it is installed).
# catch2 is a build need too: configuring toro's tree defines its host tests.
BUILD = [("meson", "meson"), ("ninja-build", "ninja"), ("clang", "clang++"), ("lld", "ld.lld"),
         ("llvm", "llvm-ar"), ("pkg-config", "pkg-config"), ("catch2", "/usr/include/catch2/catch.hpp")]
RUN = BUILD + [("qemu-system-x86", "qemu-system-x86_64"), ("qemu-system-data", "/usr/share/qemu/qboot.rom")]
IMAGE = RUN + [("grub-pc-bin", "/usr/lib/grub/i386-pc/multiboot.mod"), ("grub-common", "grub-mkrescue"),
               ("xorriso", "xorriso"), ("mtools", "mformat")]
TEST = IMAGE + [("clang-format", "clang-format"),
              ("libclang-rt-14-dev", "/usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a")]


def _present(probe):
    return bool(glob.glob(probe)) if probe.startswith("/") else shutil.which(probe) is not None


def ensure(needs):
    missing = sorted({pkg for pkg, probe in needs if not _present(probe)})
    if not missing:
        return
    cmd = ["apt-get", "install", "-y", "--no-install-recommends"] + missing
    if os.geteuid() != 0:
        raise CloudItError("missing packages: " + " ".join(missing) +
                           "\n  install them with: sudo apt-get update && sudo " + " ".join(cmd))
    say("installing " + " ".join(missing) + " (first use)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
    r = subprocess.run(cmd + ["-qq"], env=env)
    if r.returncode != 0:
        raise CloudItError("apt-get could not install " + " ".join(missing) + "; see its output above")
    still = sorted({pkg for pkg, probe in needs if not _present(probe)})
    if still:
        raise CloudItError("installed packages but still missing: " + " ".join(still))
