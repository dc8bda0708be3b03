//! Checks `kmemlab.h` against abi.rs: a C program that includes the header prints the size
//! and offset of every struct and field, every command number and every constant, and each
//! must equal the Rust side's. The tables below are checked against abi.rs's own text, so a
//! field or constant added there and not here fails too.

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use kmemlab_uapi::*;

const ABI_RS: &str = include_str!("../src/abi.rs");
const HEADER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/kmemlab.h");

/// One line of the C program's output: the C expression and the value Rust has for it.
struct Check {
    c: String,
    rust: u64,
}

/// The layout of one struct: its C name, the Rust name, and per field (in order) the
/// field's offset.
struct Layout {
    rust: &'static str,
    c: &'static str,
    size: usize,
    fields: Vec<(&'static str, usize)>,
}

macro_rules! layout {
    ($rust:ident, $c:literal, [$($field:ident),* $(,)?]) => {
        Layout {
            rust: stringify!($rust),
            c: $c,
            size: size_of::<$rust>(),
            fields: vec![$((stringify!($field), offset_of!($rust, $field))),*],
        }
    };
}

fn layouts() -> Vec<Layout> {
    vec![
        layout!(
            Info,
            "kmemlab_info",
            [
                abi_version,
                page_size,
                heap_size,
                kinds,
                flags,
                max_size,
                max_outstanding_bytes,
                max_outstanding_count,
                irq,
                max_bench_iters,
                max_trigger_count,
                dma_mask,
                coherent_dma_mask,
                file_max_bytes,
                file_max_count,
                privileges,
                atomic_quota_bytes,
                bench_max_bytes,
                reserved,
            ]
        ),
        layout!(
            Alloc,
            "kmemlab_alloc",
            [
                kind,
                flags,
                size,
                handle,
                vaddr,
                phys,
                dma,
                usable_size,
                alloc_ns,
                pages,
                phys_segments,
                result,
                _pad,
                reserved,
            ]
        ),
        layout!(Free, "kmemlab_free", [handle, free_ns, reserved]),
        layout!(
            List,
            "kmemlab_list",
            [after, entries, capacity, count, total, _pad]
        ),
        layout!(
            KindStats,
            "kmemlab_kind_stats",
            [live_count, live_bytes, allocs, frees, failures]
        ),
        layout!(Stats, "kmemlab_stats", [kinds, events, reserved]),
        layout!(
            Timing,
            "kmemlab_timing",
            [min_ns, mean_ns, max_ns, stddev_ns, p50_ns, p99_ns]
        ),
        layout!(
            Bench,
            "kmemlab_bench",
            [kind, flags, size, iters, _pad, alloc, free, hist_addr, reserved]
        ),
        layout!(Trigger, "kmemlab_trigger", [count, _pad, events]),
        layout!(
            AllocBatch,
            "kmemlab_alloc_batch",
            [entries, count, done, error, _pad, reserved]
        ),
        layout!(
            FreeBatch,
            "kmemlab_free_batch",
            [entries, count, done, error, _pad, reserved]
        ),
        layout!(
            RingHeader,
            "kmemlab_ring_header",
            [magic, version, slots, record_size, head, reserved]
        ),
        layout!(
            IrqRecord,
            "kmemlab_irq_record",
            [seq, ktime_ns, source, _pad, reserved]
        ),
    ]
}

/// Every `pub const` of abi.rs with its C name (`KMEMLAB_` + the Rust name; the commands
/// `IOCTL_X` are `KMEMLAB_IOC_X`; the generic `IOC_NONE/WRITE/READ` are `<linux/ioctl.h>`'s
/// `_IOC_NONE/WRITE/READ`).
macro_rules! constants {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), $name as u64)),*]
    };
}

fn constants() -> Vec<(&'static str, u64)> {
    constants![
        ABI_VERSION,
        IOC_MAGIC,
        IOC_NONE,
        IOC_WRITE,
        IOC_READ,
        KIND_KMALLOC,
        KIND_VMALLOC,
        KIND_DMA_COHERENT,
        KIND_KVMALLOC,
        KIND_PAGES,
        KIND_COUNT,
        MAX_KINDS,
        FLAG_GFP_KERNEL,
        FLAG_GFP_ATOMIC,
        FLAG_GFP_NOWAIT,
        FLAG_ZERO,
        FLAG_NORETRY,
        FLAG_NOWARN,
        FLAG_DMA,
        FLAG_DMA32,
        FLAG_PERSIST,
        FLAG_BASE_MASK,
        FLAG_ALL,
        RESULT_ZEROED,
        RESULT_HIDDEN,
        RESULT_DMA,
        RESULT_PERSIST,
        RESULT_OWN,
        RESULT_PHYS_HIDDEN,
        PRIV_ADMIN,
        PRIV_KADDR,
        PRIV_PHYS,
        NR_INFO,
        NR_ALLOC,
        NR_FREE,
        NR_LIST,
        NR_STATS,
        NR_BENCH,
        NR_TRIGGER,
        NR_ALLOC_BATCH,
        NR_FREE_BATCH,
        NR_NOP,
        IOCTL_INFO,
        IOCTL_ALLOC,
        IOCTL_FREE,
        IOCTL_LIST,
        IOCTL_STATS,
        IOCTL_BENCH,
        IOCTL_TRIGGER,
        IOCTL_ALLOC_BATCH,
        IOCTL_FREE_BATCH,
        IOCTL_NOP,
        LIST_MAX,
        BATCH_MAX,
        RING_MAGIC,
        RING_VERSION,
        RING_SLOTS,
        RING_RECORDS_OFFSET,
        SOURCE_IRQ,
        SOURCE_TRIGGER,
        HEAP_DEFAULT_SIZE,
        HIST_SUB_BITS,
        HIST_BUCKETS,
        BENCH_HIST_BYTES,
    ]
}

fn c_name(rust: &str) -> String {
    if let Some(cmd) = rust.strip_prefix("IOCTL_") {
        format!("KMEMLAB_IOC_{cmd}")
    } else if matches!(rust, "IOC_NONE" | "IOC_WRITE" | "IOC_READ") {
        format!("_{rust}")
    } else {
        format!("KMEMLAB_{rust}")
    }
}

fn checks() -> Vec<Check> {
    let mut checks = Vec::new();
    for l in layouts() {
        checks.push(Check {
            c: format!("sizeof(struct {})", l.c),
            rust: l.size as u64,
        });
        for (field, offset) in &l.fields {
            checks.push(Check {
                c: format!("offsetof(struct {}, {field})", l.c),
                rust: *offset as u64,
            });
        }
    }
    for (name, value) in constants() {
        checks.push(Check {
            c: c_name(name),
            rust: value,
        });
    }
    checks
}

/// The C program: one `printf` per check, in order.
fn program(checks: &[Check]) -> String {
    let mut c = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include \"kmemlab.h\"\n\nint main(void)\n{\n",
    );
    for check in checks {
        c.push_str(&format!(
            "\tprintf(\"%llu\\n\", (unsigned long long)({}));\n",
            check.c
        ));
    }
    c.push_str("\treturn 0;\n}\n");
    c
}

/// A scratch folder of this test binary's own.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("failed to make a scratch folder");
    dir
}

/// Whether `compiler` runs; prints why the check is skipped when it does not.
fn have(compiler: &str) -> bool {
    let ok = Command::new(compiler)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: no `{compiler}` on this machine; install gcc to check kmemlab.h");
    }
    ok
}

/// Compiles `src` with `compiler` and the strict flags, runs it and returns its output.
fn compile_and_run(compiler: &str, lang_flags: &[&str], src: &str, dir: &Path) -> String {
    let source = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&source, src).expect("failed to write the C program");
    let header_dir = Path::new(HEADER).parent().expect("the header has a folder");
    let out = Command::new(compiler)
        .args(lang_flags)
        .args(["-Wall", "-Wextra", "-Werror", "-I"])
        .arg(header_dir)
        .arg(&source)
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("failed to run {compiler}: {e}"));
    assert!(
        out.status.success(),
        "{compiler} {lang_flags:?} failed on a program including kmemlab.h:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe)
        .output()
        .expect("failed to run the program");
    assert!(run.status.success(), "the layout program failed");
    String::from_utf8(run.stdout).expect("the program prints ASCII")
}

fn compare(compiler: &str, output: &str, checks: &[Check]) {
    let got: Vec<&str> = output.lines().collect();
    assert_eq!(got.len(), checks.len(), "{compiler}: one line per check");
    let wrong: Vec<String> = checks
        .iter()
        .zip(&got)
        .filter(|(check, line)| line.parse::<u64>() != Ok(check.rust))
        .map(|(check, line)| format!("  {}: C {line}, abi.rs {}", check.c, check.rust))
        .collect();
    assert!(
        wrong.is_empty(),
        "kmemlab.h and abi.rs disagree ({compiler}):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn header_matches_abi_rs_in_c() {
    if !have("cc") {
        return;
    }
    let checks = checks();
    let out = compile_and_run(
        "cc",
        &["-std=c99"],
        &program(&checks),
        &scratch("c_header_c"),
    );
    compare("cc -std=c99", &out, &checks);
}

#[test]
fn header_matches_abi_rs_in_cpp() {
    if !have("c++") {
        return;
    }
    let checks = checks();
    let out = compile_and_run(
        "c++",
        &["-x", "c++", "-std=c++11"],
        &program(&checks),
        &scratch("c_header_cpp"),
    );
    compare("c++ -std=c++11", &out, &checks);
}

/// The structs of abi.rs with their fields in order, read from its text.
fn structs_of_abi_rs() -> BTreeMap<String, Vec<String>> {
    let mut structs = BTreeMap::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in ABI_RS.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("pub struct ") {
            let name = rest.trim_end_matches(" {").to_owned();
            current = Some((name, Vec::new()));
        } else if line == "}" {
            if let Some((name, fields)) = current.take() {
                structs.insert(name, fields);
            }
        } else if let (Some((_, fields)), Some(rest)) = (&mut current, line.strip_prefix("pub ")) {
            if let Some((field, _)) = rest.split_once(':') {
                fields.push(field.to_owned());
            }
        }
    }
    structs
}

/// The names of abi.rs's `pub const` items, read from its text.
fn constants_of_abi_rs() -> Vec<String> {
    ABI_RS
        .lines()
        .filter_map(|l| l.strip_prefix("pub const "))
        .filter(|rest| !rest.starts_with("fn "))
        .filter_map(|rest| rest.split_once(':').map(|(name, _)| name.to_owned()))
        .collect()
}

#[test]
fn the_tables_cover_every_struct_field_and_constant_of_abi_rs() {
    let from_source = structs_of_abi_rs();
    assert!(
        from_source.len() >= 13,
        "abi.rs not parsed: {from_source:?}"
    );
    let in_table: BTreeMap<String, Vec<String>> = layouts()
        .into_iter()
        .map(|l| {
            let fields = l.fields.iter().map(|(f, _)| (*f).to_owned()).collect();
            (l.rust.to_owned(), fields)
        })
        .collect();
    assert_eq!(
        in_table, from_source,
        "the layout table is not abi.rs's structs"
    );

    let mut from_source = constants_of_abi_rs();
    let mut in_table: Vec<String> = constants().iter().map(|(n, _)| (*n).to_owned()).collect();
    from_source.sort();
    in_table.sort();
    assert_eq!(in_table, from_source, "the constant table is not abi.rs's");
}

/// The header's structs list the same fields in the same order as abi.rs's (names
/// included: offsets alone would not see two same-sized fields swapped by name).
#[test]
fn header_fields_are_named_as_in_abi_rs() {
    let header = std::fs::read_to_string(HEADER).expect("failed to read kmemlab.h");
    for l in layouts() {
        let open = format!("struct {} {{", l.c);
        let body = header
            .split_once(&open)
            .and_then(|(_, rest)| rest.split_once("};"))
            .map(|(body, _)| body)
            .unwrap_or_else(|| panic!("kmemlab.h has no `{open}`"));
        let mut in_comment = false;
        let mut fields = Vec::new();
        for line in body.lines().map(str::trim) {
            if in_comment || line.starts_with("/*") {
                in_comment = !line.contains("*/");
                continue;
            }
            let decl = line.split(';').next().unwrap_or_default();
            if let Some(name) = decl.split_whitespace().last() {
                fields.push(name.split('[').next().unwrap_or_default().to_owned());
            }
        }
        let want: Vec<&str> = l.fields.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, want, "struct {} in kmemlab.h", l.c);
    }
}

#[test]
fn header_has_the_uapi_frame() {
    let header = std::fs::read_to_string(HEADER).expect("failed to read kmemlab.h");
    assert!(header.starts_with("/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */\n"));
    assert!(header.contains("#ifndef _UAPI_LINUX_KMEMLAB_H\n#define _UAPI_LINUX_KMEMLAB_H\n"));
    assert!(header
        .trim_end()
        .ends_with("#endif /* _UAPI_LINUX_KMEMLAB_H */"));
}
