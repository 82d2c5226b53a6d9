"""Configuring and building appliances with Meson + ninja."""
import json
import os
import subprocess

from .common import CROSS_FILE, NATIVE_FILE, ROOT, CloudItError, say


class Appliance:
    """An appliance to build: an in-tree example (examples/NAME) or an out-of-tree directory."""

    def __init__(self, spec):
        self.spec = spec
        in_tree = os.path.join(ROOT, "examples", spec)
        test_app = os.path.realpath(spec)
        if "/" not in spec and os.path.isfile(os.path.join(in_tree, "meson.build")):
            self.name, self.source_dir, self.in_tree = spec, ROOT, True
            self.rel = os.path.join("examples", spec, spec)
        elif os.path.dirname(test_app) == os.path.join(ROOT, "test", "qemu") and os.path.isdir(test_app):
            # A test appliance (test/qemu/NAME/), built by test/qemu/meson.build.
            self.name, self.source_dir, self.in_tree = os.path.basename(test_app), ROOT, True
            self.rel = os.path.join("test", "qemu", self.name)
        elif os.path.isfile(os.path.join(spec, "meson.build")):
            self.source_dir = os.path.realpath(spec)
            self.name, self.in_tree = os.path.basename(self.source_dir), False
        else:
            raise CloudItError(f"unknown example '{spec}': it is neither a folder under examples/ "
                               f"(have: {', '.join(list_examples())}) nor a directory with a meson.build")

    def build_dir(self, profile_boot, static_tables=False):
        parts = (["static-page-tables"] if static_tables else []) + (["profile-boot"] if profile_boot else [])
        variant = "-".join(parts) or "default"
        base = os.path.join(ROOT, "build") if self.in_tree else os.path.join(self.source_dir, "build")
        return os.path.join(base, variant)


def list_examples():
    d = os.path.join(ROOT, "examples")
    return sorted(e for e in os.listdir(d) if os.path.isfile(os.path.join(d, e, "meson.build")))


def configure(source_dir, build_dir, profile_boot=False, subproject=False, options=()):
    """meson setup, once per build directory; `options` are more toro options, e.g. static_page_tables=true."""
    if os.path.isfile(os.path.join(build_dir, "build.ninja")):
        return  # ninja re-runs meson itself when a meson.build changes
    prefix = "toro:" if subproject else ""
    toro_options = ["profile_boot=" + ("true" if profile_boot else "false")] + list(options)
    cmd = ["meson", "setup", build_dir, source_dir, "--cross-file", CROSS_FILE, "--native-file", NATIVE_FILE]
    cmd += ["-D" + prefix + o for o in toro_options]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        print(r.stdout)
        raise CloudItError(f"meson could not configure {source_dir} (its output is above)")


def ninja(build_dir, targets=(), quiet=False):
    cmd = ["ninja", "-C", build_dir] + list(targets)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0 or not quiet:
        lines = [l for l in r.stdout.splitlines() if not l.startswith("ninja: Entering directory")]
        if r.returncode != 0 or any("warning" in l for l in lines):
            print("\n".join(lines))
    return r.returncode == 0


def kernel_paths(app, build_dir):
    """The ELF64 and ELF32 wrapper an appliance's build produces."""
    if app.in_tree:
        base = os.path.join(build_dir, app.rel)
        return base + ".elf", base + "32.elf"
    r = subprocess.run(["meson", "introspect", "--targets", build_dir], stdout=subprocess.PIPE, text=True)
    targets = json.loads(r.stdout or "[]")
    kernels = [t for t in targets if t["type"] == "executable" and t["name"].endswith(".elf")
               and not t.get("subproject") and t.get("machine", "host") == "host"]
    if not kernels:
        raise CloudItError(f"{app.source_dir}/meson.build defines no kernel executable named <name>.elf")
    pick = next((t for t in kernels if t["name"] == app.name + ".elf"), kernels[0])
    elf64 = pick["filename"][0]
    return elf64, elf64[:-4] + "32.elf"


def build(app, profile_boot=False, static_tables=False):
    """Configures (once) and builds only this appliance's kernels; returns (elf64, elf32) paths."""
    bdir = app.build_dir(profile_boot, static_tables)
    configure(app.source_dir, bdir, profile_boot, subproject=not app.in_tree,
              options=["static_page_tables=true"] if static_tables else [])
    elf64, elf32 = kernel_paths(app, bdir)
    targets = [os.path.relpath(p, bdir) for p in (elf64, elf32)]
    if not ninja(bdir, targets):
        raise CloudItError(f"building {app.spec} failed (the compiler's messages are above)")
    return elf64, elf32


def build_all(profile_boot=False):
    bdir = os.path.join(ROOT, "build", "profile-boot" if profile_boot else "default")
    configure(ROOT, bdir, profile_boot)
    if not ninja(bdir):
        say("the build failed (the compiler's messages are above)")
        return None
    return bdir


def build_launcher(app):
    """Builds toro-vmm, a host tool of toro's, in this appliance's default build (toro's own, or the out-of-tree
    appliance's, where toro is a subproject); returns that build directory."""
    bdir = app.build_dir(False)
    configure(app.source_dir, bdir, subproject=not app.in_tree)
    target = "tools/toro-vmm" if app.in_tree else "subprojects/toro/tools/toro-vmm"
    if not ninja(bdir, [target]):
        raise CloudItError("building the KVM launcher toro-vmm failed (the compiler's messages are above)")
    return bdir
