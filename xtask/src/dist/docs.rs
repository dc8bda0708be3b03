//! The generated documentation the packages ship: kmemlabctl's man pages (the command
//! and one per subcommand, `kmemlabctl-alloc(1)`...) and its bash, zsh and fish
//! completions, all from its `clap::Command` (clap_mangen, clap_complete). kmemlabd's
//! page stays hand-written in man/kmemlabd.8 (its parser is lexopt, not clap); a test
//! keeps that page's options the daemon's.

use anyhow::Result;
use clap_complete::Shell;

/// Where the completions go, as in Debian's bash-completion, zsh and fish packages.
pub(super) const COMPLETIONS: &[(Shell, &str)] = &[
    (
        Shell::Bash,
        "usr/share/bash-completion/completions/kmemlabctl",
    ),
    (Shell::Zsh, "usr/share/zsh/vendor-completions/_kmemlabctl"),
    (
        Shell::Fish,
        "usr/share/fish/vendor_completions.d/kmemlabctl.fish",
    ),
];

/// A man page: `(path under the package root, roff text)`.
pub(super) type Page = (String, Vec<u8>);

/// Escapes `text` for roff: backslashes, and a `.` or `'` that starts a line.
fn roff_escape(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e");
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// The page of `cmd` (built): clap_mangen's title, name, synopsis, description, options
/// and commands; then its after-help as written (no-fill, so that the tables stay
/// tables), the version and SEE ALSO.
fn page(cmd: &clap::Command, source: &str, see_also: &[String]) -> Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd.clone())
        .manual("User Commands")
        .source(source);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut out)?;
    }
    if let Some(after) = cmd.get_after_long_help().or(cmd.get_after_help()) {
        let text = after.to_string();
        // The top-level after-help ends with the exit statuses: a section of their own.
        let (notes, exit) = match text.split_once("Exit status:\n") {
            Some((notes, exit)) => (notes, Some(exit)),
            None => (text.as_str(), None),
        };
        out.extend_from_slice(b".SH NOTES\n.nf\n");
        out.extend_from_slice(roff_escape(notes.trim_end()).as_bytes());
        out.extend_from_slice(b".fi\n");
        if let Some(exit) = exit {
            out.extend_from_slice(b".SH \"EXIT STATUS\"\n.nf\n");
            out.extend_from_slice(roff_escape(exit.trim_end()).as_bytes());
            out.extend_from_slice(b".fi\n");
        }
    }
    if cmd.get_version().is_some() {
        man.render_version_section(&mut out)?;
    }
    if !see_also.is_empty() {
        out.extend_from_slice(b".SH \"SEE ALSO\"\n");
        out.extend_from_slice(see_also.join(",\n").as_bytes());
        out.push(b'\n');
    }
    Ok(out)
}

/// kmemlabctl's man pages: `kmemlabctl.1` and a `kmemlabctl-COMMAND.1` per command, for
/// /usr/share/man/man1.
pub(super) fn kmemlabctl_pages() -> Result<Vec<Page>> {
    let mut cmd = kmemlabctl::args::command().disable_help_subcommand(true);
    cmd.build();
    let source = format!("kmemlab {}", cmd.get_version().unwrap_or_default());
    let subs: Vec<&clap::Command> = cmd.get_subcommands().collect();
    let names: Vec<String> = subs
        .iter()
        .map(|s| format!("kmemlabctl-{}", s.get_name()))
        .collect();
    let mut see_also: Vec<String> = names.iter().map(|n| format!(".BR {n} (1)")).collect();
    see_also.push(".BR kmemlabd (8)".to_owned());
    let mut pages = vec![(
        "usr/share/man/man1/kmemlabctl.1.gz".to_owned(),
        page(&cmd, &source, &see_also)?,
    )];
    for (sub, name) in subs.iter().zip(&names) {
        let sub = (*sub).clone().display_name(name);
        pages.push((
            format!("usr/share/man/man1/{name}.1.gz"),
            page(&sub, &source, &[".BR kmemlabctl (1)".to_owned()])?,
        ));
    }
    Ok(pages)
}

/// kmemlabctl's completion script for `shell`.
pub(super) fn completion(shell: Shell) -> Vec<u8> {
    let mut cmd = kmemlabctl::args::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "kmemlabctl", &mut out);
    out
}

/// The long options in `text` written as roff (`\-\-debounce\-ms`) or plain
/// (`--debounce-ms`), without the dashes.
#[cfg(test)]
fn long_options(text: &str) -> std::collections::BTreeSet<String> {
    let mut plain = text.replace("\\-", "-");
    for font in ["\\fB", "\\fI", "\\fR", "\\fP"] {
        plain = plain.replace(font, " ");
    }
    plain
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter_map(|w| w.strip_prefix("--"))
        .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        .map(|w| w.trim_end_matches('-').to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::util::repo_root;

    /// kmemlabd's man page names exactly the options its parser takes and its --help
    /// lists: a new option in config.rs fails here until the page and USAGE have it.
    #[test]
    fn the_kmemlabd_page_has_the_daemons_options() {
        let root = repo_root();
        let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        let page = long_options(&read("man/kmemlabd.8"));
        let main = read("daemon/kmemlabd/src/main.rs");
        let usage = main
            .split_once("const USAGE: &str = \"")
            .and_then(|(_, rest)| rest.split_once("\";"))
            .map(|(usage, _)| long_options(usage))
            .expect("no USAGE in kmemlabd's main.rs");
        let config = read("daemon/kmemlabd/src/config.rs");
        let parsed: BTreeSet<String> = config
            .split("Long(\"")
            .skip(1)
            .filter_map(|s| s.split_once('"').map(|(name, _)| name.to_owned()))
            .collect();
        assert!(parsed.contains("debounce-ms"), "{parsed:?}");
        assert_eq!(page, parsed, "man/kmemlabd.8 against config.rs's parser");
        assert_eq!(usage, parsed, "kmemlabd's USAGE against config.rs's parser");
        assert!(read("man/kmemlabd.8").starts_with(".\\\" SPDX"));
    }

    #[test]
    fn the_kmemlabctl_pages_are_roff_with_every_command_and_option() {
        let pages = kmemlabctl_pages().unwrap();
        let (path, main) = &pages[0];
        assert_eq!(path, "usr/share/man/man1/kmemlabctl.1.gz");
        let main = String::from_utf8(main.clone()).unwrap();
        assert!(
            main.starts_with(".ie \\n(.g") || main.contains(".TH kmemlabctl 1"),
            "{main:.300}"
        );
        assert!(main.contains(".TH kmemlabctl 1"), "{main:.300}");
        for section in [
            "NAME",
            "SYNOPSIS",
            "OPTIONS",
            "NOTES",
            "\"EXIT STATUS\"",
            "\"SEE ALSO\"",
        ] {
            assert!(
                main.contains(&format!(".SH {section}")),
                "{section}: {main}"
            );
        }
        assert!(main.contains("no device or module"), "{main}");
        let alloc = pages
            .iter()
            .find(|(p, _)| p.ends_with("kmemlabctl-alloc.1.gz"))
            .map(|(_, t)| String::from_utf8(t.clone()).unwrap())
            .expect("no kmemlabctl-alloc page");
        let options = long_options(&alloc);
        for opt in [
            "kind", "size", "gfp", "persist", "count", "hold", "json", "device",
        ] {
            assert!(options.contains(opt), "{opt}: {options:?}");
        }
        assert!(!options.contains("iters"), "{options:?}");
        assert_eq!(pages.len(), 1 + 9, "kmemlabctl and its 9 commands");
    }

    #[test]
    fn completions_know_the_commands_and_options() {
        for (shell, _) in COMPLETIONS {
            let text = String::from_utf8(completion(*shell)).unwrap();
            for word in [
                "alloc", "trigger", "hold", "interval", "json", "watch", "threads",
            ] {
                assert!(text.contains(word), "{shell}: no {word}");
            }
        }
    }
}
