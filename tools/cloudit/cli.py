"""CloudIt's command line: run, build, test."""
import argparse
import sys

from . import build as builder
from . import deps, vm
from .common import CloudItError, say


def cmd_build(args):
    deps.ensure(deps.BUILD)
    app = builder.Appliance(args.example)
    elf64, elf32 = builder.build(app, args.profile_boot, args.static_page_tables)
    print(f"ELF32 wrapper (Multiboot): {elf32}")
    print(elf64)
    return 0


def cmd_run(args):
    deps.ensure(deps.IMAGE if args.vmm == "grub" else deps.RUN)
    app = builder.Appliance(args.example)
    kernels = builder.build(app, args.profile_boot, args.static_page_tables)
    if args.vmm == "kvm":
        accel, cpu = "kvm", None
        if not vm.probe_kvm()[0]:
            raise CloudItError("--vmm kvm needs a usable /dev/kvm: " + vm.probe_kvm()[1])
    else:
        accel, cpu = vm.choose_accel(args.accel)
    launcher_dir = builder.build_launcher(app) if args.vmm == "kvm" else None
    cmd = vm.vm_command(kernels, args.vmm, accel, cpu, args.smp, args.mem, args.cmdline, args.extra,
                        build_dir=launcher_dir)
    if args.verbose:
        say(" ".join(cmd))
    result = vm.boot(cmd, args.timeout)
    if result.qemu_stderr.strip():
        sys.stderr.write(result.qemu_stderr)
    return vm.explain(result, kernels[0], args.timeout)


def cmd_image(args):
    deps.ensure(deps.IMAGE)
    app = builder.Appliance(args.example)
    elf64, elf32 = builder.build(app)
    iso = vm.make_iso(elf32, args.cmdline, args.output or elf64[:-4] + ".iso")
    print(iso)
    return 0


def cmd_bench(args):
    from . import bench
    return {"boot": bench.bench_boot, "size": bench.bench_size, "build": bench.bench_build,
            "mem": bench.bench_mem, "sched": bench.bench_sched, "dev": bench.bench_dev}[args.what](args)


def cmd_test(args):
    from . import testing
    return testing.run_all(args)


def parser():
    p = argparse.ArgumentParser(prog="cloudit", description="Build, boot and test toro appliances.",
                                epilog="run: arguments after -- are passed to QEMU")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build an appliance; prints the ELF64 path last")
    b.add_argument("example", help="a folder under examples/ or an appliance directory")
    b.add_argument("--profile-boot", action="store_true",
                   help="kernel_main exits with status 0 as its first statement (boot-time measurement)")
    b.add_argument("--static-page-tables", action="store_true", help="assemble the dense page tables into the image (+8 KiB, no boot-time fill)")
    b.set_defaults(func=cmd_build)

    r = sub.add_parser("run", help="build and boot an appliance; exits with its status")
    r.add_argument("example", help="a folder under examples/ or an appliance directory")
    r.add_argument("--vmm", default="microvm", choices=vm.VMMS)
    r.add_argument("--accel", choices=["kvm", "tcg"], help="default: KVM when it works, else TCG")
    r.add_argument("--smp", type=int, default=1)
    r.add_argument("--mem", default="128M")
    r.add_argument("--cmdline", default="")
    r.add_argument("--timeout", type=float, default=60.0, help="seconds before the guest counts as hung")
    r.add_argument("--profile-boot", action="store_true")
    r.add_argument("--static-page-tables", action="store_true", help="assemble the dense page tables into the image (+8 KiB, no boot-time fill)")
    r.add_argument("-v", "--verbose", action="store_true", help="print the QEMU command line")
    r.set_defaults(func=cmd_run)

    i = sub.add_parser("image", help="write a BIOS-bootable ISO (GRUB loads the Multiboot wrapper); prints its path")
    i.add_argument("example")
    i.add_argument("--cmdline", default="", help="kernel command line baked into grub.cfg")
    i.add_argument("-o", "--output", help="where to write the ISO (default: beside the ELF)")
    i.set_defaults(func=cmd_image)

    be = sub.add_parser("bench", help="boot (per path, against its floor), size, build, mem, sched, dev")
    be.add_argument("what", choices=["boot", "size", "build", "mem", "sched", "dev"])
    be.add_argument("--runs", type=int, default=5)
    be.add_argument("--accel", choices=["kvm", "tcg"])
    be.add_argument("--paths", help="boot: comma-separated subset of seabios,qboot,microvm,grub,kvm")
    be.add_argument("--json", help="boot, sched, dev: also write the results as JSON here")
    be.add_argument("--svg", help="boot: where to draw the bar chart (default docs/boot-times.svg)")
    be.add_argument("--example", default="hello", help="build: which example")
    be.add_argument("--static-page-tables", action="store_true", help="boot: measure that variant of hello")
    be.set_defaults(func=cmd_bench)

    t = sub.add_parser("test", help="host unit tests, QEMU integration tests, fuzz smoke runs, format check")
    t.add_argument("-k", "--filter", default="", help="only tests whose name contains this")
    t.add_argument("-j", "--jobs", type=int, default=2)
    t.set_defaults(func=cmd_test)
    return p


def main(argv):
    # Everything after "--" goes to QEMU untouched.
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    args = parser().parse_args(argv)
    args.extra = extra
    try:
        return args.func(args)
    except CloudItError as e:
        say(str(e))
        return e.exit_code
    except KeyboardInterrupt:
        return 130
