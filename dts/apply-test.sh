#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build kmemlab's overlays and apply them to the boards they are for:
#
#   - Raspberry Pi 4 B and Pi 5 B: the base DTBs are built from the kernel
#     source with symbols (-@), as the kernel's Makefile builds them; each
#     overlay is compiled with "dtc -@" and applied with fdtoverlay;
#   - QEMU virt: the DTB is dumped by QEMU and given the one symbol the
#     overlay needs, as the harness does.
#
#   - with --dtbs DIR: the DTBs a distribution ships (Debian's linux-base-RELEASE
#     package has them in usr/lib/modules/RELEASE/dtb/), as they are: every
#     DIR/broadcom/bcm2711-*.dtb gets the Pi 4 overlay and every
#     DIR/broadcom/bcm2712-*.dtb the Pi 5 overlay; bcm2711-rpi-4-b.dtb and
#     bcm2712-rpi-5-b.dtb must be among them.
#
# Each result is then checked with fdtget (the kmemlab node, its GPIO or
# interrupt, and that its phandles point at the intended controller and pin
# configuration) and, when dtschema is available, validated with dt-validate
# against kmemlab's binding and the kernel's bindings of the two Raspberry Pi
# pin controllers.
#
# Usage: apply-test.sh [--dtbs DIR] KERNEL_SRC WORK_DIR [DTSCHEMA_BIN]
#
#   DIR           a folder of shipped arm64 DTBs (with broadcom/ in it), checked
#                 in addition to the ones built from KERNEL_SRC
#   KERNEL_SRC    kernel source tree (arch/arm64/boot/dts, include, scripts/dtc)
#   WORK_DIR      scratch directory for the DTBs
#   DTSCHEMA_BIN  directory holding dt-validate and dt-mk-schema; default:
#                 PATH; without them the schema check is skipped (and says so)

set -euo pipefail

usage() {
	echo "usage: $0 [--dtbs DIR] KERNEL_SRC WORK_DIR [DTSCHEMA_BIN]" >&2
	exit 2
}

shipped=
if [ "${1:-}" = --dtbs ]; then
	[ $# -ge 2 ] || usage
	shipped=$(cd "$2" && pwd)
	shift 2
fi

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
	usage
fi
ksrc=$(cd "$1" && pwd)
mkdir -p "$2"
work=$(cd "$2" && pwd)
if [ $# -eq 3 ]; then
	PATH="$(cd "$3" && pwd):$PATH"
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() {
	echo "apply-test.sh: $*" >&2
	exit 1
}

for tool in cpp dtc fdtoverlay fdtget fdtput; do
	command -v "$tool" >/dev/null || die "$tool not found (apt install cpp device-tree-compiler)"
done
command -v qemu-system-aarch64 >/dev/null ||
	die "qemu-system-aarch64 not found (apt install qemu-system-arm)"
dts_dir=$ksrc/arch/arm64/boot/dts
[ -d "$dts_dir/broadcom" ] || die "$ksrc has no arch/arm64/boot/dts/broadcom"
echo "$(dtc --version), $(qemu-system-aarch64 --version | head -n 1), kernel source $ksrc"

# A board DTB as scripts/Makefile.dtbs builds it, with -@ as for a base DTB
# that overlays are applied to. -q: the kernel's DTS files are not ours to
# fix, and this dtc (1.6.x) warns where the kernel's in-tree one does not.
build_base() { # board-name (arch/arm64/boot/dts/broadcom/NAME.dts)
	local src=$dts_dir/broadcom/$1.dts tmp=$work/$1.dts.tmp
	cpp -nostdinc -I "$ksrc/include" -I "$dts_dir" \
		-I "$ksrc/scripts/dtc/include-prefixes" -undef -D__DTS__ \
		-x assembler-with-cpp -o "$tmp" "$src"
	dtc -@ -q -I dts -O dtb -b 0 -o "$work/$1.dtb" \
		-i "$(dirname "$src")" -i "$ksrc/scripts/dtc/include-prefixes" \
		-Wno-unit_address_vs_reg -Wno-avoid_unnecessary_addr_size \
		-Wno-alias_paths -Wno-simple_bus_reg -Wno-unique_unit_address "$tmp"
	echo "   base: $1.dtb ($(fdtget "$work/$1.dtb" / model))"
}

# An overlay as the harness and a user on the board build it: plain dtc, no
# preprocessor. Its warnings fail the test: these are our files.
build_overlay() { # name.dtso
	local out
	out=$(dtc -@ -I dts -O dtb -o "$work/${1%.dtso}.dtbo" "$here/$1" 2>&1) || {
		printf '%s\n' "$out" >&2
		die "dtc failed on $1"
	}
	if [ -n "$out" ]; then
		printf '%s\n' "$out" >&2
		die "dtc warned on $1"
	fi
	echo "   overlay: $1 -> ${1%.dtso}.dtbo"
}

apply() { # base.dtb overlay.dtbo out.dtb
	fdtoverlay -i "$work/$1" -o "$work/$3" "$work/$2" ||
		die "fdtoverlay could not apply $2 to $1"
	echo "   applied: $2 on $1 -> $3"
}

expect() { # what actual expected
	if [ "$2" != "$3" ]; then
		die "$1: got \"$2\", expected \"$3\""
	fi
	echo "      $1: $2"
}

symbol_path() { # dtb label
	fdtget "$work/$1" /__symbols__ "$2" || die "$1: no symbol $2"
}

phandle_of() { # dtb path
	fdtget -t u "$work/$1" "$2" phandle || die "$1: $2 has no phandle"
}

has_property() { # dtb path property
	fdtget -p "$work/$1" "$2" | grep -qx -- "$3"
}

# A Raspberry Pi result: /kmemlab has button-gpios = <&LABEL 17 1>, LABEL is
# the controller with the given compatible, and pinctrl-0 points at the
# overlay's kmemlab_button_pins node with the given mux function and the
# pull-up.
check_rpi() { # dtb controller-label controller-compatible pins-subnode function
	local dtb=$1 ctrl ph cells pins pins_ph conf
	echo "   check: $dtb"
	expect "/kmemlab compatible" "$(fdtget "$work/$dtb" /kmemlab compatible)" "yang,mydevice"
	ctrl=$(symbol_path "$dtb" "$2")
	ph=$(phandle_of "$dtb" "$ctrl")
	fdtget "$work/$dtb" "$ctrl" compatible | tr ' ' '\n' | grep -qx -- "$3" ||
		die "$dtb: $ctrl is not $3"
	echo "      GPIO controller &$2: $ctrl ($3), phandle $ph"
	cells=$(fdtget -t u "$work/$dtb" /kmemlab button-gpios)
	expect "/kmemlab button-gpios <phandle line flags>" "$cells" "$ph 17 1"
	pins=$(symbol_path "$dtb" kmemlab_button_pins)
	case $pins in
	"$ctrl"/*) ;;
	*) die "$dtb: kmemlab_button_pins ($pins) is not under $ctrl" ;;
	esac
	pins_ph=$(phandle_of "$dtb" "$pins")
	expect "/kmemlab pinctrl-0 -> $pins" "$(fdtget -t u "$work/$dtb" /kmemlab pinctrl-0)" "$pins_ph"
	expect "/kmemlab pinctrl-names" "$(fdtget "$work/$dtb" /kmemlab pinctrl-names)" "default"
	conf=$pins${4:+/$4}
	expect "$conf pins" "$(fdtget "$work/$dtb" "$conf" pins)" "gpio17"
	expect "$conf function" "$(fdtget "$work/$dtb" "$conf" function)" "$5"
	has_property "$dtb" "$conf" bias-pull-up || die "$dtb: $conf has no bias-pull-up"
	echo "      $conf bias-pull-up: present"
}

echo "== Raspberry Pi 4 B (bcm2711) and Pi 5 B (bcm2712 C1 and D0 steppings)"
build_base bcm2711-rpi-4-b
build_base bcm2712-rpi-5-b
build_base bcm2712-d-rpi-5-b
build_overlay rpi4-button.dtso
build_overlay rpi5-button.dtso
apply bcm2711-rpi-4-b.dtb rpi4-button.dtbo rpi4-kmemlab.dtb
apply bcm2712-rpi-5-b.dtb rpi5-button.dtbo rpi5-kmemlab.dtb
apply bcm2712-d-rpi-5-b.dtb rpi5-button.dtbo rpi5-d-kmemlab.dtb
check_rpi rpi4-kmemlab.dtb gpio brcm,bcm2711-gpio pin-button gpio_in
check_rpi rpi5-kmemlab.dtb rp1_gpio raspberrypi,rp1-gpio "" gpio
check_rpi rpi5-d-kmemlab.dtb rp1_gpio raspberrypi,rp1-gpio "" gpio

# The DTBs as a distribution ships them: copied, not rebuilt, so what is
# checked is exactly what a board boots with.
shipped_dtbs=()
check_shipped() { # family (bcm2711|bcm2712) overlay.dtbo label compatible pins-subnode function
	local family=$1 found=0 src name
	for src in "$shipped"/broadcom/"$family"-*.dtb; do
		[ -e "$src" ] || continue
		name=shipped-$(basename "$src" .dtb)
		cp "$src" "$work/$name.dtb"
		echo "   base: $name.dtb ($(fdtget "$work/$name.dtb" / model), shipped)"
		if fdtget "$work/$name.dtb" /kmemlab compatible >/dev/null 2>&1; then
			die "$src already has a /kmemlab node"
		fi
		apply "$name.dtb" "$2" "$name-kmemlab.dtb"
		check_rpi "$name-kmemlab.dtb" "$3" "$4" "$5" "$6"
		shipped_dtbs+=("$name-kmemlab.dtb")
		found=$((found + 1))
	done
	echo "   $family: $found shipped DTB(s) checked"
}

if [ -n "$shipped" ]; then
	echo "== shipped DTBs: $shipped"
	for want in bcm2711-rpi-4-b bcm2712-rpi-5-b; do
		[ -f "$shipped/broadcom/$want.dtb" ] || die "$shipped has no broadcom/$want.dtb"
	done
	check_shipped bcm2711 rpi4-button.dtbo gpio brcm,bcm2711-gpio pin-button gpio_in
	check_shipped bcm2712 rpi5-button.dtbo rp1_gpio raspberrypi,rp1-gpio "" gpio
fi

echo "== QEMU virt"
rm -f "$work/virt.dtb"
qemu-system-aarch64 -M virt -cpu cortex-a53 -m 256M -nic none \
	-machine dumpdtb="$work/virt.dtb" -display none 2>/dev/null ||
	die "qemu-system-aarch64 could not dump the virt DTB"
echo "   base: virt.dtb (dumped by QEMU)"
fdtput -p -t s "$work/virt.dtb" /__symbols__ gpio0 /pl061@9030000
build_overlay qemu-virt.dtso
apply virt.dtb qemu-virt.dtbo virt-kmemlab.dtb
echo "   check: virt-kmemlab.dtb"
expect "/kmemlab compatible" "$(fdtget "$work/virt-kmemlab.dtb" /kmemlab compatible)" "yang,mydevice"
pl061_ph=$(phandle_of virt-kmemlab.dtb /pl061@9030000)
expect "/kmemlab interrupts-extended <phandle line type>" \
	"$(fdtget -t u "$work/virt-kmemlab.dtb" /kmemlab interrupts-extended)" "$pl061_ph 3 2"
has_property virt-kmemlab.dtb /pl061@9030000 interrupt-controller ||
	die "virt-kmemlab.dtb: /pl061@9030000 is not an interrupt controller"
expect "/pl061@9030000 #interrupt-cells" \
	"$(fdtget -t u "$work/virt-kmemlab.dtb" /pl061@9030000 '#interrupt-cells')" "2"
expect "/gpio-keys status" "$(fdtget "$work/virt-kmemlab.dtb" /gpio-keys status)" "disabled"

echo "== schema check of the results"
if command -v dt-validate >/dev/null && command -v dt-mk-schema >/dev/null; then
	bindings=$ksrc/Documentation/devicetree/bindings
	dt-mk-schema -j "$here/bindings" \
		"$bindings/pinctrl/brcm,bcm2835-gpio.yaml" \
		"$bindings/pinctrl/raspberrypi,rp1-gpio.yaml" \
		"$bindings/pinctrl/pinctrl.yaml" \
		"$bindings/pinctrl/pincfg-node.yaml" \
		"$bindings/pinctrl/pinmux-node.yaml" >"$work/apply-schema.json"
	limit=yang,mydevice:brcm,bcm2835-gpio:raspberrypi,rp1-gpio
	for dtb in rpi4-kmemlab.dtb rpi5-kmemlab.dtb rpi5-d-kmemlab.dtb virt-kmemlab.dtb \
		${shipped_dtbs[@]+"${shipped_dtbs[@]}"}; do
		# dt-validate exits 0 on findings: any output is a failure.
		out=$(dt-validate -l "$limit" -s "$work/apply-schema.json" "$work/$dtb" 2>&1)
		if [ -n "$out" ]; then
			printf '%s\n' "$out" >&2
			die "$dtb does not match the bindings"
		fi
		echo "   valid: $dtb (schemas: ${limit//:/, })"
	done
else
	echo "   skipped: dt-validate/dt-mk-schema not found (pip install dtschema)"
fi

echo "apply-test.sh: all checks passed"
