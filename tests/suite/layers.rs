//! The architecture, held: `src/lib.rs` declares the top-level modules bottom
//! up, and a module may use only modules declared above it. This test reads
//! every module's non-test code for `crate::…` paths and fails on any import
//! that runs up (which is also every import circle). The allow-list is empty.
//! It also holds the clock rule: the wall clock's type is named only where a
//! process starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Imports that may run up, each with its reason. Empty, and to stay so.
const ALLOWED_UPWARD: &[(&str, &str)] = &[];

/// Files that may name `SystemClock`: its definition, and where a process starts.
const WALL_CLOCK_FILES: &[&str] = &["src/clock.rs", "src/run/mod.rs", "src/check.rs", "src/cli/"];

/// The top-level modules in the order `src/lib.rs` declares them.
fn layer_order() -> Vec<String> {
    let lib = std::fs::read_to_string("src/lib.rs").unwrap();
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").and_then(|r| r.strip_suffix(';')))
        .map(str::to_string)
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// A file's code without its tests and comments: test modules sit at the
/// end of a file (`#[cfg(test)] mod …`), or in their own `tests.rs`.
fn production_code(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") || path.components().any(|c| c.as_os_str() == "tests") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let end = (0..lines.len())
        .find(|&i| {
            lines[i].trim() == "#[cfg(test)]" && lines.get(i + 1).is_some_and(|n| n.trim_start().starts_with("mod "))
        })
        .unwrap_or(lines.len());
    lines[..end].iter().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The top-level names `code` reaches through `crate::`: paths, and the
/// first segment of each item of `use crate::{…}`.
fn crate_names(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(item.trim().split("::").next().unwrap_or("").to_string());
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 || c != '{' {
                    item.push(c);
                }
            }
            out.push(item.trim().split("::").next().unwrap_or("").to_string());
        } else {
            out.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

#[test]
fn no_module_imports_one_declared_below_it() {
    let order = layer_order();
    assert!(order.len() > 20, "src/lib.rs declares the modules: {order:?}");
    let position: BTreeMap<&str, usize> = order.iter().enumerate().map(|(i, m)| (m.as_str(), i)).collect();
    let mut upward = Vec::new();
    for module in &order {
        let mut files = Vec::new();
        let dir = PathBuf::from("src").join(module);
        if dir.is_dir() {
            rust_files(&dir, &mut files);
        } else {
            files.push(PathBuf::from(format!("src/{module}.rs")));
        }
        for file in files {
            for name in crate_names(&production_code(&file)) {
                // `crate::Error` is lib.rs's re-export of `run::Error`.
                let target = if name == "Error" { "run" } else { name.as_str() };
                let Some(&to) = position.get(target) else { continue };
                let allowed = ALLOWED_UPWARD.iter().any(|(f, t)| file.ends_with(f) && *t == target);
                if target != module && to >= position[module.as_str()] && !allowed {
                    upward.push(format!(
                        "{} uses crate::{name}, declared below `{module}` in src/lib.rs",
                        file.display()
                    ));
                }
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(upward.is_empty(), "imports that run up the layers:\n{}", upward.join("\n"));
}

#[test]
fn only_a_starting_process_names_the_wall_clock() {
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    let named: Vec<String> = files
        .iter()
        .filter(|f| production_code(f).contains("SystemClock"))
        .map(|f| f.display().to_string())
        .filter(|f| !WALL_CLOCK_FILES.iter().any(|ok| f.starts_with(ok)))
        .collect();
    assert!(named.is_empty(), "take the injected Clock instead of SystemClock in: {named:?}");
}

#[test]
fn the_reader_sees_what_an_import_names() {
    let names = crate_names("use crate::a::B;\nuse crate::{c, d::{E, F}, g::H};\nlet x = crate::i::j();");
    assert_eq!(names, ["a", "c", "d", "g", "i"]);
}
