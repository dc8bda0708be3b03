#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Validate kmemlab's devicetree binding with dtschema, the way the kernel's
# "make dt_binding_check" does:
#
#   1. yamllint with the kernel's rules (if yamllint is installed: the kernel
#      treats it as optional too),
#   2. dt-doc-validate: the binding against dtschema's meta-schemas,
#   3. dt-check-style: the kernel's DTS style check (strict rules) on the
#      examples, and on the overlays and test cases next to this script,
#   4. dt-extract-example, cpp with the kernel's dt-bindings headers, dtc:
#      the examples as a DTB,
#   5. dt-mk-schema + dt-validate: the examples against the binding,
#
# then the cases under tests/schema/: every pass/*.dts must validate, every
# fail/*.dts must fail with the message named on its "// expect:" line.
#
# dt-validate exits 0 even when a node does not match its schema; a check
# fails here when dt-validate prints anything.
#
# Usage: validate.sh KERNEL_SRC WORK_DIR [DTSCHEMA_BIN]
#
#   KERNEL_SRC    kernel source tree: include/dt-bindings, scripts/dtc
#   WORK_DIR      scratch directory for the generated files
#   DTSCHEMA_BIN  directory holding dt-doc-validate and friends, e.g. the
#                 bin/ of a venv with "pip install dtschema"; default: PATH

set -euo pipefail

usage() {
	echo "usage: $0 KERNEL_SRC WORK_DIR [DTSCHEMA_BIN]" >&2
	exit 2
}

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
bindings=$here/bindings
tests=$here/tests/schema

die() {
	echo "validate.sh: $*" >&2
	exit 1
}

for tool in dt-doc-validate dt-extract-example dt-mk-schema dt-validate dtc cpp; do
	command -v "$tool" >/dev/null || die "$tool not found (pip install dtschema; apt install device-tree-compiler cpp)"
done
if [ ! -d "$ksrc/include/dt-bindings" ] || [ ! -d "$ksrc/scripts/dtc/include-prefixes" ]; then
	die "$ksrc is not a kernel source tree (no include/dt-bindings or scripts/dtc/include-prefixes)"
fi

# The kernel's minimum (Documentation/devicetree/bindings/Makefile).
min_dtschema=2024.4
dtschema_version=$(dt-doc-validate --version)
printf '%s\n%s\n' "$min_dtschema" "$dtschema_version" | sort -Vc 2>/dev/null ||
	die "dtschema $dtschema_version is older than $min_dtschema"
echo "dtschema $dtschema_version, $(dtc --version), kernel source $ksrc"

# What the kernel's cmd_dtc does with a binding example (scripts/Makefile.dtbs,
# DTC_FLAGS from Documentation/devicetree/bindings/Makefile). dtc's warnings
# fail the check: these are our files.
include_prefixes=$ksrc/scripts/dtc/include-prefixes
dts_to_dtb() { # in.dts out.dtb
	local tmp=$2.dts.tmp out
	cpp -nostdinc -I "$include_prefixes" -undef -D__DTS__ \
		-x assembler-with-cpp -o "$tmp" "$1"
	out=$(dtc -I dts -O dtb -o "$2" -b 0 \
		-i "$(dirname "$1")" -i "$include_prefixes" \
		-Wno-avoid_unnecessary_addr_size -Wno-unique_unit_address \
		-Wunique_unit_address_if_enabled "$tmp" 2>&1) || {
		printf '%s\n' "$out" >&2
		die "dtc failed on $1"
	}
	if [ -n "$out" ]; then
		printf '%s\n' "$out" >&2
		die "dtc warned on $1"
	fi
}

schema=$work/processed-schema.json
validate_dtb() { # dtb -> prints dt-validate's findings, empty when valid
	dt-validate -s "$schema" "$1" 2>&1
}

# Python with ruamel.yaml, for the kernel's dt-check-style: the interpreter
# dtschema's scripts run with.
dtschema_python=$(head -n 1 "$(command -v dt-doc-validate)" | sed -n 's/^#! *//p')
[ -n "$dtschema_python" ] || dtschema_python=python3

mapfile -t yamls < <(find "$bindings" -name '*.yaml' | sort)
[ ${#yamls[@]} -gt 0 ] || die "no binding under $bindings"

echo "== schema: dt-mk-schema $bindings"
dt-mk-schema -j "$bindings" >"$schema"

for yaml in "${yamls[@]}"; do
	rel=${yaml#"$bindings"/}
	echo "== binding: $rel"

	if command -v yamllint >/dev/null; then
		yamllint -f parsable -c "$ksrc/Documentation/devicetree/bindings/.yamllint" "$yaml" ||
			die "yamllint: $rel"
		echo "   yamllint: ok"
	else
		echo "   yamllint: not installed, skipped"
	fi

	dt-doc-validate -u "$bindings" "$yaml" || die "dt-doc-validate: $rel"
	echo "   dt-doc-validate: ok"

	if [ -f "$ksrc/scripts/dtc/dt-check-style" ]; then
		"$dtschema_python" "$ksrc/scripts/dtc/dt-check-style" --mode=strict -j 1 "$yaml" ||
			die "dt-check-style: $rel"
		echo "   dt-check-style --mode=strict: ok"
	fi

	name=$(basename "$yaml" .yaml)
	dt-extract-example "$yaml" >"$work/$name.example.dts"
	dts_to_dtb "$work/$name.example.dts" "$work/$name.example.dtb"
	nexamples=$(grep -c '^    example-[0-9]* {' "$work/$name.example.dts" || true)
	out=$(validate_dtb "$work/$name.example.dtb")
	if [ -n "$out" ]; then
		printf '%s\n' "$out" >&2
		die "examples of $rel do not match the binding"
	fi
	echo "   examples ($nexamples): valid"
done

if [ -f "$ksrc/scripts/dtc/dt-check-style" ]; then
	echo "== style: overlays and cases"
	"$dtschema_python" "$ksrc/scripts/dtc/dt-check-style" --mode=strict -j 1 \
		"$here"/*.dtso "$tests"/*/*.dts || die "dt-check-style: overlays or cases"
	echo "   dt-check-style --mode=strict: ok ($(cd "$here" && echo ./*.dtso | sed 's|\./||g'), tests/schema)"
fi

echo "== cases: $tests"
failures=0
for dts in "$tests"/pass/*.dts "$tests"/fail/*.dts; do
	case_name=${dts#"$tests"/}
	dtb=$work/case-${case_name//\//-}.dtb
	dts_to_dtb "$dts" "$dtb"
	out=$(validate_dtb "$dtb")
	case $case_name in
	pass/*)
		if [ -n "$out" ]; then
			printf '%s\n' "$out" >&2
			echo "   FAIL $case_name: expected valid" >&2
			failures=$((failures + 1))
		else
			echo "   ok   $case_name: valid"
		fi
		;;
	fail/*)
		expect=$(sed -n 's|^// expect: ||p' "$dts")
		[ -n "$expect" ] || die "$case_name has no \"// expect:\" line"
		if [ -z "$out" ]; then
			echo "   FAIL $case_name: validated, expected: $expect" >&2
			failures=$((failures + 1))
		elif ! grep -qF -- "$expect" <<<"$out"; then
			printf '%s\n' "$out" >&2
			echo "   FAIL $case_name: rejected, but not with: $expect" >&2
			failures=$((failures + 1))
		else
			echo "   ok   $case_name: rejected: $expect"
		fi
		;;
	esac
done
[ "$failures" -eq 0 ] || die "$failures case(s) failed"
echo "validate.sh: all checks passed"
