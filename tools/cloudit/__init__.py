"""CloudIt, toro's build/boot/test tool. See ./cloudit --help."""
