//! `kmemlabctl report LOG --svg --html`: the charts are rendered with resvg and the
//! image checked for content in each kind's colour, so a blank chart fails.

use std::path::Path;
use std::process::Command;

use kmemlabctl::logreport::{kind_color, CHART_HEIGHT, CHART_WIDTH, IRQ_COLOR};
use resvg::tiny_skia::{Pixmap, Transform};
use resvg::usvg::{Options, Tree};
use serde_json::{json, Value};

/// A log of `presses` presses cycling kmalloc, vmalloc and dma_coherent alloc/free
/// steps over several sizes, with a few lines the report must skip or ignore.
fn synthetic_log(presses: u64) -> String {
    let kinds = ["kmalloc", "vmalloc", "dma_coherent"];
    let mut lines = vec![json!({"event": "start", "ts_ns": 1_000_000_000u64, "pid": 1})];
    for seq in 1..=presses {
        let kind = kinds[(seq / 2 % 3) as usize];
        let size = 8u64 << (2 * (seq % 9));
        let ts = 1_000_000_000 + seq * 50_000_000;
        let irq = 20_000 + (seq * 7_919) % 30_000;
        if seq % 2 == 1 {
            lines.push(json!({
                "event": "alloc", "ts_ns": ts, "seq": seq, "irq_count": seq, "missed": 0,
                "irq_to_wake_ns": irq, "handle": seq, "kind": kind, "size": size,
                "alloc_ns": 200 + size / 16 + (seq * 31) % 300,
            }));
        } else {
            lines.push(json!({
                "event": "free", "ts_ns": ts, "seq": seq, "irq_count": seq, "missed": 0,
                "irq_to_wake_ns": irq, "handle": seq - 1, "kind": kind, "size": size,
                "free_ns": 100 + (seq * 17) % 200,
            }));
        }
    }
    lines.push(json!({"event": "stats", "ts_ns": 9_000_000_000u64}));
    lines.push(json!({"event": "stop", "ts_ns": 9_000_000_001u64, "reason": "SIGTERM"}));
    let mut text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    text.push_str("{truncated\n");
    text
}

fn report(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kmemlabctl"))
        .arg("report")
        .args(args)
        .output()
        .unwrap()
}

fn render(svg: &str) -> Pixmap {
    let tree = Tree::from_str(svg, &Options::default()).unwrap();
    let size = tree.size().to_int_size();
    assert_eq!((size.width(), size.height()), (CHART_WIDTH, CHART_HEIGHT));
    let mut pixmap = Pixmap::new(size.width(), size.height()).unwrap();
    resvg::render(&tree, Transform::default(), &mut pixmap.as_mut());
    pixmap
}

/// Pixels within a small distance of colour `(r, g, b)`, in the top and bottom halves.
fn count_color(pixmap: &Pixmap, (r, g, b): (u8, u8, u8)) -> (usize, usize) {
    let w = pixmap.width() as usize;
    let half = pixmap.height() as usize / 2;
    let mut counts = (0, 0);
    for (i, p) in pixmap.pixels().iter().enumerate() {
        let p = p.demultiply();
        let near = |a: u8, b: u8| a.abs_diff(b) <= 12;
        if p.alpha() > 200 && near(p.red(), r) && near(p.green(), g) && near(p.blue(), b) {
            if i / w < half {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
    }
    counts
}

fn ink(pixmap: &Pixmap) -> f64 {
    let inked = pixmap
        .pixels()
        .iter()
        .filter(|p| {
            let p = p.demultiply();
            p.alpha() > 0 && (p.red() < 230 || p.green() < 230 || p.blue() < 230)
        })
        .count();
    inked as f64 / pixmap.pixels().len() as f64
}

#[test]
fn report_svg_renders_both_panels_in_the_kind_colours() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("press.jsonl");
    std::fs::write(&log, synthetic_log(60)).unwrap();
    let svg_path = dir.path().join("chart.svg");
    let html_path = dir.path().join("report.html");
    let out = report(&[
        log.to_str().unwrap(),
        "--svg",
        svg_path.to_str().unwrap(),
        "--html",
        html_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("KIND"), "{text}");
    assert!(text.contains("1 malformed (skipped)"), "{text}");
    assert!(text.contains("stats x1"), "{text}");

    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let pixmap = render(&svg);
    let ink = ink(&pixmap);
    assert!(ink > 0.01 && ink < 0.6, "fraction of inked pixels {ink}");
    for kind in ["kmalloc", "vmalloc", "dma_coherent"] {
        let c = kind_color(kind);
        let (top, bottom) = count_color(&pixmap, (c.0, c.1, c.2));
        assert!(top > 100, "{kind}: {top} pixels in the size chart");
        assert!(bottom > 100, "{kind}: {bottom} pixels in the timeline");
    }
    let (_, irq) = count_color(&pixmap, IRQ_COLOR);
    assert!(irq > 200, "{irq} pixels of the interrupt latency line");
    // pages never appears in the log, so nothing is drawn in its colour.
    let c = kind_color("pages");
    assert_eq!(count_color(&pixmap, (c.0, c.1, c.2)), (0, 0));

    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    let start = html.find("<svg").unwrap();
    let end = html.rfind("</svg>").unwrap() + "</svg>".len();
    let inline = render(&html[start..end]);
    assert_eq!(
        inline.data(),
        pixmap.data(),
        "the page embeds the same chart"
    );
}

#[test]
fn report_json_summary_and_a_missing_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("press.jsonl");
    std::fs::write(&log, synthetic_log(12)).unwrap();
    let out = report(&[log.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["malformed"], 1);
    let all = v["kinds"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(all["kind"], "all");
    assert_eq!(all["allocs"], 6);
    assert_eq!(all["frees"], 6);

    let out = report(&["/nonexistent/log.jsonl", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"], "ENOENT");
}

#[test]
fn report_of_the_fixture_log() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vm_presses.jsonl");
    let dir = tempfile::tempdir().unwrap();
    let svg_path = dir.path().join("chart.svg");
    let out = report(&[
        fixture.to_str().unwrap(),
        "--svg",
        svg_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let pixmap = render(&std::fs::read_to_string(&svg_path).unwrap());
    assert!(ink(&pixmap) > 0.01);
}
