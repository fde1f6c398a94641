//! The imports form layers: each module uses only modules below it, and no child reaches into its parent.
//!
//! Reads the sources as text: `crate::X` and `super::X` paths outside tests. The orders below are
//! the architecture (docs/design.md); a new module is added to them at the height it belongs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A folder of modules, bottom first; `facade` is the file that declares them (lib.rs, mod.rs),
/// which may use every one of them and which none of them may use.
struct Layer {
    dir: &'static str,
    facade: &'static str,
    /// How this layer's modules are named from inside (`crate` or `super`).
    via: &'static str,
    order: &'static [&'static str],
    /// Names that resolve outside this layer (re-exported crates), always allowed.
    outside: &'static [&'static str],
}

const CORE: &[&str] = &[
    "text",
    "time",
    "reason",
    "api",
    "probe",
    "imap",
    "dovecot",
    "reset_guard",
    "window",
    "maintenance",
    "settings",
    "machine",
    "control",
    "fixtures",
];
const CORE_NAMES: &[&str] = &[
    "api",
    "control",
    "conditions",
    "dovecot",
    "machine",
    "reason",
    "settings",
    "text",
    "time",
    "window",
];

const LAYERS: &[Layer] = &[
    Layer {
        dir: "core/src",
        facade: "lib.rs",
        via: "crate",
        order: CORE,
        outside: &[],
    },
    Layer {
        dir: "core/src/machine",
        facade: "mod.rs",
        via: "super",
        order: &[
            "decision",
            "drain",
            "note",
            "conditions",
            "observed",
            "ring",
            "split",
            "lock",
            "judge",
            "gates",
            "start",
            "steps",
            "needs",
            "cleanup",
            "dry_run",
            "decide",
            "fold",
            "stages",
            "face",
        ],
        outside: &[],
    },
    Layer {
        dir: "src",
        facade: "lib.rs",
        via: "crate",
        order: &["exec", "probe", "engine", "metrics", "http", "controller"],
        outside: CORE_NAMES,
    },
    Layer {
        dir: "src/engine",
        facade: "mod.rs",
        via: "super",
        order: &["cluster", "reads", "driver", "ring"],
        outside: &[],
    },
    Layer {
        dir: "src/controller",
        facade: "mod.rs",
        via: "super",
        order: &[
            "lean",
            "stores",
            "context",
            "budget",
            "rings",
            "cluster",
            "status",
            "reconcile",
            "ringpass",
            "run",
            "leader",
        ],
        outside: &[],
    },
];

/// Source before the first `#[cfg(test)]`: test modules may use anything.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The names that follow `prefix::` in `text`, also inside `prefix::{a, b::c}` groups.
fn used(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let pat = format!("{prefix}::");
    let mut rest = text;
    while let Some(i) = rest.find(&pat) {
        let before = rest[..i].chars().last();
        rest = &rest[i + pat.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `self::super::`, `foo_crate::` and the like
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

/// The module a file is in this layer: `a.rs` and `a/…` are `a`.
fn module_of(layer_dir: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(layer_dir).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_module_uses_only_modules_below_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut problems = Vec::new();
    for layer in LAYERS {
        let dir = root.join(layer.dir);
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        for file in files {
            // test modules (tests.rs, or a tests/ folder) may use anything
            let in_tests = file
                .strip_prefix(&dir)
                .unwrap()
                .components()
                .any(|c| c.as_os_str() == "tests" || c.as_os_str() == "tests.rs");
            if in_tests {
                continue;
            }
            let name = module_of(&dir, &file);
            let direct_child = file.parent() == Some(dir.as_path());
            if name == layer.facade.trim_end_matches(".rs")
                || ["tests", "bin", "main"].contains(&name.as_str())
            {
                continue;
            }
            let Some(height) = layer.order.iter().position(|m| *m == name) else {
                // a folder module's own files are checked as their own layer
                if !direct_child {
                    continue;
                }
                problems.push(format!(
                    "{}: module {name} is not placed in the layer order",
                    file.display()
                ));
                continue;
            };
            // `super::` inside a folder module's files names that folder's siblings, not ours
            if layer.via == "crate" || direct_child {
                for target in used(&code(&file), layer.via) {
                    if layer.outside.contains(&target.as_str()) {
                        continue;
                    }
                    match layer.order.iter().position(|m| *m == target) {
                        Some(h) if h < height => {}
                        Some(_) => problems.push(format!(
                            "{}: {name} uses {target}, which is not below it",
                            file.display()
                        )),
                        None => problems.push(format!(
                            "{}: {name} reaches into its parent for {}::{target}",
                            file.display(),
                            layer.via
                        )),
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "layering:\n{}", problems.join("\n"));
}

#[test]
fn the_reader_finds_grouped_and_plain_paths() {
    let text = "use super::decision::{A, B};\nuse super::{note::Note, observed};\nlet x = crate::time::after(a);\n";
    assert_eq!(
        used(text, "super").into_iter().collect::<Vec<_>>(),
        ["decision", "note", "observed"]
    );
    assert_eq!(
        used(text, "crate").into_iter().collect::<Vec<_>>(),
        ["time"]
    );
}
