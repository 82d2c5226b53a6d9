"""CloudIt's command line: run, build, test."""
import argparse
import sys

from . import build as builder
from . import deps, vm
from .common import CloudItError, say


def cmd_build(args):
    deps.ensure(deps.BUILD)
    app = builder.Appliance(args.example)
    elf64, elf32 = builder.build(app, args.profile_boot)
    print(f"ELF32 wrapper (Multiboot): {elf32}")
    print(elf64)
    return 0


def cmd_run(args):
    deps.ensure(deps.RUN)
    app = builder.Appliance(args.example)
    kernels = builder.build(app, args.profile_boot)
    accel, cpu = vm.choose_accel(args.accel)
    cmd = vm.qemu_command(kernels, args.vmm, accel, cpu, args.smp, args.mem, args.cmdline, args.extra)
    if args.verbose:
        say(" ".join(cmd))
    result = vm.boot(cmd, args.timeout)
    if result.qemu_stderr.strip():
        sys.stderr.write(result.qemu_stderr)
    return vm.explain(result, kernels[0], args.timeout)


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
    b.set_defaults(func=cmd_build)

    r = sub.add_parser("run", help="build and boot an appliance; exits with its status")
    r.add_argument("example", help="a folder under examples/ or an appliance directory")
    r.add_argument("--vmm", default="microvm", choices=sorted(vm.VMMS))
    r.add_argument("--accel", choices=["kvm", "tcg"], help="default: KVM when it works, else TCG")
    r.add_argument("--smp", type=int, default=1)
    r.add_argument("--mem", default="128M")
    r.add_argument("--cmdline", default="")
    r.add_argument("--timeout", type=float, default=60.0, help="seconds before the guest counts as hung")
    r.add_argument("--profile-boot", action="store_true")
    r.add_argument("-v", "--verbose", action="store_true", help="print the QEMU command line")
    r.set_defaults(func=cmd_run)

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
