#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Builds kmemlab.ko for one of Debian's stock kernels (Linux 7.3 with CONFIG_RUST=y).
#
# Debian's linux-headers-* packages carry the kernel's .config and Module.symvers but
# not the Rust metadata an out-of-tree Rust module is compiled against (rust/*.rmeta,
# libmacros.so). This script rebuilds that metadata from Debian's linux-source-7.3 of
# the same version with Debian's .config and Debian's compiler (the rustc named in
# CONFIG_RUSTC_VERSION_TEXT), then builds the module against it. The crate hashes in the
# Rust symbol names then equal those in Debian's Module.symvers.
#
# On a Debian 13 (trixie) arm64 or amd64 machine running the kernel to build for:
#   apt install linux-headers-$(uname -r) linux-source-7.3 rustc rust-src bindgen \
#       gcc make flex bison bc libelf-dev libssl-dev dwarves python3 kmod xz-utils
#   (arm64 also: gcc-arm-linux-gnueabihf, for the 32-bit vDSO Debian's config has)
#   sh kmod-helper/debian/build-for-debian.sh
# `cargo xtask module --debian RELEASE` runs this same script in a trixie root (chroot).
#
# Options (defaults in brackets):
#   --release R     the kernel release to build for [$(uname -r)]
#   --headers DIR   its headers [/usr/src/linux-headers-R]
#   --source FILE   Debian's kernel source tarball [/usr/src/linux-source-7.3.tar.xz]
#   --work DIR      cache for the source tree and the build [~/.cache/kmemlab-debian]
#   --module DIR    kmemlab's kmod-helper folder [the folder above this script]
#   --jobs N        make -j [nproc]
# The last line printed is the path of the built kmemlab.ko.
set -eu
# modinfo lives in /usr/sbin, which a user's PATH may lack.
PATH=$PATH:/usr/sbin:/sbin

die() { echo "build-for-debian: error: $*" >&2; exit 1; }
say() { echo "==> $*" >&2; }

here=$(cd "$(dirname "$0")" && pwd)
release=$(uname -r)
headers=
source=/usr/src/linux-source-7.3.tar.xz
work=${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/kmemlab-debian
module=$(dirname "$here")
jobs=$(nproc 2>/dev/null || echo 2)
while [ $# -gt 0 ]; do
    case $1 in
        --release) release=$2; shift 2 ;;
        --headers) headers=$2; shift 2 ;;
        --source) source=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        --module) module=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        *) die "unknown option $1 (see the comment at the top of $0)" ;;
    esac
done
headers=${headers:-/usr/src/linux-headers-$release}

# What this needs, each named by the Debian package that has it.
[ -f "$headers/.config" ] || die "$headers/.config not found: install linux-headers-$release"
[ -f "$headers/Module.symvers" ] || die "$headers/Module.symvers not found: install linux-headers-$release"
[ -f "$source" ] || die "$source not found: install linux-source-7.3 (the version of linux-headers-$release)"
[ -f "$module/Kbuild" ] || die "$module/Kbuild not found: --module must be kmemlab's kmod-helper folder"
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: install $2"; }
need make make
need gcc gcc
need flex flex
need bison bison
need bc bc
need rustc rustc
need bindgen bindgen
need xz xz-utils

config=$headers/.config
value() { sed -n "s/^$1=//p" "$config" | sed 's/^"\(.*\)"$/\1/'; }
[ "$(value CONFIG_RUST)" = y ] || die "$release is built without CONFIG_RUST: kmemlab is a Rust module"
case $(uname -m) in aarch64) host=arm64 ;; x86_64) host=x86_64 ;; *) host=$(uname -m) ;; esac
if [ "$(value CONFIG_ARM64)" = y ]; then
    set -- ARCH=arm64
    if [ "$host" != arm64 ]; then
        need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
        set -- "$@" CROSS_COMPILE=aarch64-linux-gnu-
    fi
    if [ "$(value CONFIG_COMPAT_VDSO)" = y ]; then
        need arm-linux-gnueabihf-gcc gcc-arm-linux-gnueabihf
        set -- "$@" CROSS_COMPILE_COMPAT=arm-linux-gnueabihf-
    fi
elif [ "$(value CONFIG_X86_64)" = y ]; then
    [ "$host" = x86_64 ] || die "building for an amd64 kernel on $host is not supported"
    set -- ARCH=x86_64
else
    die "$release is neither an arm64 nor an amd64 kernel"
fi
[ "$(value CONFIG_DEBUG_INFO_BTF)" != y ] || need pahole dwarves

# The compiler must be the kernel's own: the Rust symbol names depend on it.
want_rustc=$(value CONFIG_RUSTC_VERSION_TEXT)
have_rustc=$(rustc --version)
[ "$have_rustc" = "$want_rustc" ] || die "$release was built with \`$want_rustc\`, this rustc is \
\`$have_rustc\`: install Debian's rustc and rust-src of that version (trixie's rustc)"
sysroot=$(rustc --print sysroot)
[ -d "$sysroot/lib/rustlib/src/rust/library/core" ] || die "no Rust library source under $sysroot: install rust-src"

tree=$work/linux-source-7.3
build=$work/build-$release
mkdir -p "$work"
stamp=$(ls -l --time-style=+%s "$source" | awk '{print $5 "-" $6}')
if [ "$(cat "$tree.complete" 2>/dev/null)" != "$stamp" ]; then
    say "unpacking $source into $work"
    rm -rf "$tree" "$tree.complete"
    tar -xJf "$source" -C "$work"
    [ -f "$tree/Makefile" ] || die "$source holds no linux-source-7.3/Makefile"
    echo "$stamp" > "$tree.complete"
    rm -f "$build.complete"
fi

kmake() { make -C "$tree" O="$build" "$@" -j"$jobs"; }

# The Rust metadata, rebuilt with Debian's .config (cached, per release).
marker=$(cat "$tree.complete" "$config" "$headers/Module.symvers" | cksum | cut -d' ' -f1)
if [ "$(cat "$build.complete" 2>/dev/null)" != "$marker" ]; then
    say "rebuilding the Rust metadata of $release (make olddefconfig prepare modules_prepare; a few minutes)"
    rm -rf "$build" "$build.complete"
    mkdir -p "$build"
    cp "$config" "$build/.config"
    kmake "$@" olddefconfig > "$build/prepare.log" 2>&1 || { tail -n 30 "$build/prepare.log" >&2; die "make olddefconfig failed (log: $build/prepare.log)"; }
    # Kconfig drops an option whose tool is missing (pahole, the compat compiler): that
    # changes the generated bindings and with them the Rust symbol names. Set options
    # only ("is not set" equals absent); tool versions and two probes that change no
    # code here (linking userspace with the cross compiler, OpenSSL's ML-DSA) may differ.
    set_options() {
        grep '^CONFIG_' "$1" | grep -v -e '_VERSION=' -e '_VERSION_TEXT=' \
            -e '^CONFIG_CC_CAN_LINK' -e '^CONFIG_OPENSSL_SUPPORTS_' | sort
    }
    set_options "$config" > "$build/.config.debian"
    set_options "$build/.config" > "$build/.config.here"
    lost=$(diff "$build/.config.debian" "$build/.config.here" | grep '^[<>] ' || true)
    [ -z "$lost" ] || die "the configuration differs from Debian's after olddefconfig \
(a tool the kernel was built with is missing here):
$lost"
    kmake "$@" prepare modules_prepare >> "$build/prepare.log" 2>&1 || { tail -n 30 "$build/prepare.log" >&2; die "make prepare failed (log: $build/prepare.log)"; }
    [ -f "$build/rust/libkernel.rmeta" ] || die "make prepare left no rust/libkernel.rmeta"
    # Debian's exports and release string (else the vermagic says 7.3.4, not $release).
    cp "$headers/Module.symvers" "$build/Module.symvers"
    cp "$headers/include/config/kernel.release" "$build/include/config/kernel.release"
    cp "$headers/include/generated/utsrelease.h" "$build/include/generated/utsrelease.h"
    echo "$marker" > "$build.complete"
fi

say "building kmemlab.ko for $release"
out=$work/module-$release
rm -rf "$out"
mkdir -p "$out"
cp -a "$module/." "$out/"
kmake "$@" M="$out" modules > "$out/build.log" 2>&1 || { tail -n 40 "$out/build.log" >&2; die "the module build failed (log: $out/build.log)"; }
ko=$out/kmemlab.ko
[ -f "$ko" ] || die "the module build left no $ko"
vermagic=$(modinfo -F vermagic "$ko")
case $vermagic in
    "$release "*) ;;
    *) die "kmemlab.ko's vermagic \`$vermagic\` is not for $release" ;;
esac
ref=$(ls /lib/modules/"$release"/kernel/drivers/uio/uio.ko* 2>/dev/null | head -n 1 || true)
if [ -n "$ref" ]; then
    [ "$(modinfo -F vermagic "$ref")" = "$vermagic" ] ||
        die "kmemlab.ko's vermagic \`$vermagic\` differs from $ref's \`$(modinfo -F vermagic "$ref")\`"
fi
say "vermagic: $vermagic"
echo "$ko"
