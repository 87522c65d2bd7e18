//! The QEMU `microvm` command line and process.
