//! The invariants of `docs/architecture.md` that code can break, checked on
//! the sources (no build, no libtorch):
//! - kiln-loop's modules import only what its module table allows (the
//!   table is read from `docs/architecture.md` itself, so the document and
//!   the check cannot drift);
//! - `unsafe` appears only in the files allowed to hold it, and every
//!   crate root without any says `#![forbid(unsafe_code)]`;
//! - only kiln-tensor names `tch` or `torch-sys` (others use its re-exports);
//! - no library's `src/` uses `anyhow` or prints (`println!`, `eprintln!`…).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The code of a Rust file without comments and string contents, line by
/// line (line numbers kept), so that prose never counts as a use.
fn code_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = 0usize;
    for line in text.lines() {
        let mut code = String::new();
        let mut chars = line.chars().peekable();
        let mut in_string = false;
        while let Some(c) = chars.next() {
            if in_block > 0 {
                if c == '*' && chars.peek() == Some(&'/') {
                    chars.next();
                    in_block -= 1;
                } else if c == '/' && chars.peek() == Some(&'*') {
                    chars.next();
                    in_block += 1;
                }
                continue;
            }
            if in_string {
                if c == '\\' {
                    chars.next();
                } else if c == '"' {
                    in_string = false;
                    code.push('"');
                }
                continue;
            }
            match c {
                '/' if chars.peek() == Some(&'/') => break,
                '/' if chars.peek() == Some(&'*') => {
                    chars.next();
                    in_block += 1;
                }
                '"' => {
                    in_string = true;
                    code.push('"');
                }
                // A char literal: skip it whole ('"' must not open a string).
                '\'' => {
                    let rest: String = chars.clone().take(3).collect();
                    if rest.starts_with("\\") {
                        let close = rest.chars().skip(2).position(|c| c == '\'');
                        if close.is_some() {
                            for _ in 0..3 {
                                chars.next();
                            }
                        }
                    } else if rest.chars().nth(1) == Some('\'') {
                        chars.next();
                        chars.next();
                    }
                    code.push('\'');
                }
                c => code.push(c),
            }
        }
        out.push(code);
    }
    out
}

/// kiln-loop's module table from `docs/architecture.md`: module → the
/// modules it may use (besides itself), between the table markers.
fn module_table() -> BTreeMap<String, BTreeSet<String>> {
    let doc = read(&root().join("docs/architecture.md"));
    let marker = |m: &str| {
        doc.find(m)
            .unwrap_or_else(|| panic!("docs/architecture.md has no {m} marker"))
    };
    let (start, end) = (
        marker("<!-- module-table -->"),
        marker("<!-- /module-table -->"),
    );
    let mut table = BTreeMap::new();
    for line in doc[start..end].lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | module | floor | may use |
        if cells.len() < 5 || cells[1].starts_with('-') || cells[1] == "module" {
            continue;
        }
        let module = cells[1].trim_matches('`').to_string();
        let uses = cells[3]
            .split(',')
            .map(|m| m.trim().trim_matches('`').to_string())
            .filter(|m| !m.is_empty() && m != "—")
            .collect();
        table.insert(module, uses);
    }
    assert!(!table.is_empty(), "the module table is empty");
    table
}

/// What kiln-loop's root re-exports: a name at the crate root → its module.
fn reexports(lib: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let flat = lib.replace('\n', " ");
    for stmt in flat.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        let names = names.trim().trim_start_matches('{').trim_end_matches('}');
        for name in names.split(',') {
            let name = name.trim();
            let name = name.rsplit("::").next().unwrap_or(name);
            if !name.is_empty() {
                out.insert(name.to_string(), module.trim().to_string());
            }
        }
    }
    out
}

/// The top-level kiln-loop module a file belongs to.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    Some(first.trim_end_matches(".rs").to_string())
}

/// The crate-root names a line uses: `crate::x::…`, `crate::{A, b::C}`.
fn crate_paths(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        // `kiln_loop::…` in a doc test is not this crate's path.
        let before = &rest[..at];
        rest = &rest[at + "crate::".len()..];
        if before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or_default();
            let mut depth = 0;
            let mut item = String::new();
            for c in inner.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(item.trim().to_string());
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.push(item.trim().to_string());
        } else {
            out.push(rest.to_string());
        }
    }
    out.into_iter()
        .map(|p| {
            p.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .filter(|p| !p.is_empty())
        .collect()
}

#[test]
fn kiln_loop_modules_import_only_what_the_module_table_allows() {
    let src = root().join("crates/loop/src");
    let table = module_table();
    let lib = read(&src.join("lib.rs"));
    let exports = reexports(&lib);
    // Every module of the crate is in the table, and nothing else is.
    let declared: BTreeSet<String> = code_lines(&lib)
        .iter()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")
                .map(|m| m.trim_end_matches(';').trim().to_string())
        })
        .collect();
    let listed: BTreeSet<String> = table.keys().cloned().collect();
    assert_eq!(
        declared, listed,
        "kiln-loop's modules (left) and docs/architecture.md's module table (right) differ"
    );
    let mut violations = Vec::new();
    for file in rust_files(&src) {
        let Some(module) = module_of(&src, &file) else {
            continue;
        };
        if module == "lib" {
            continue;
        }
        let allowed = &table[&module];
        for (n, line) in code_lines(&read(&file)).iter().enumerate() {
            for name in crate_paths(line) {
                let used = exports.get(&name).cloned().unwrap_or(name.clone());
                if used != module && table.contains_key(&used) && !allowed.contains(&used) {
                    violations.push(format!(
                        "{}:{}: {module} uses {used} (via crate::{name})",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against docs/architecture.md's module table:\n{}",
        violations.join("\n")
    );
    // The table itself has no cycle (a module that reaches itself).
    for start in table.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<&String> = table[start].iter().collect();
        while let Some(m) = stack.pop() {
            assert!(m != start, "the module table has a cycle through {start}");
            if seen.insert(m.clone()) {
                stack.extend(table.get(m).into_iter().flatten());
            }
        }
    }
}

/// The crates of the workspace: (directory, whether it may hold unsafe code).
const CRATES: [(&str, bool); 5] = [
    ("crates/tensor-bridge", true),
    ("crates/losses", false),
    ("crates/optim", false),
    ("crates/loop", false),
    ("crates/cli", false),
];

/// Files outside kiln-tensor allowed to hold `unsafe`: MPI's FFI.
const UNSAFE_FILES: [&str; 1] = ["crates/loop/src/distributed/mpi.rs"];

fn has_word(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

/// Whether `line` invokes the macro `name!`.
fn uses_macro(line: &str, name: &str) -> bool {
    line.match_indices(name).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let ident = before.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident && line[at + name.len()..].starts_with('!')
    })
}

#[test]
fn unsafe_code_lives_only_where_it_is_allowed() {
    let root = root();
    let mut violations = Vec::new();
    for (dir, may) in CRATES {
        for sub in ["src", "tests", "examples", "benches"] {
            for file in rust_files(&root.join(dir).join(sub)) {
                let rel = file.strip_prefix(&root).unwrap_or(&file).to_path_buf();
                let allowed = may || UNSAFE_FILES.iter().any(|f| rel == Path::new(f));
                for (n, line) in code_lines(&read(&file)).iter().enumerate() {
                    if has_word(line, "unsafe") && !line.contains("unsafe_code") && !allowed {
                        violations.push(format!("{}:{}", rel.display(), n + 1));
                    }
                }
            }
        }
    }
    for file in rust_files(&root.join("tests")) {
        for (n, line) in code_lines(&read(&file)).iter().enumerate() {
            if has_word(line, "unsafe") && !line.contains("unsafe_code") {
                violations.push(format!("{}:{}", file.display(), n + 1));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "unsafe outside kiln-tensor and {UNSAFE_FILES:?}:\n{}",
        violations.join("\n")
    );
    // Crate roots that hold no unsafe forbid it; kiln-loop denies it and
    // allows it on its MPI module alone.
    for (root_file, attribute) in [
        ("crates/losses/src/lib.rs", "#![forbid(unsafe_code)]"),
        ("crates/optim/src/lib.rs", "#![forbid(unsafe_code)]"),
        ("crates/cli/src/main.rs", "#![forbid(unsafe_code)]"),
        ("crates/loop/src/lib.rs", "#![deny(unsafe_code)]"),
    ] {
        assert!(
            read(&root.join(root_file)).contains(attribute),
            "{root_file} lacks {attribute}"
        );
    }
}

#[test]
fn only_kiln_tensor_names_tch_and_torch_sys() {
    let root = root();
    let mut violations = Vec::new();
    for (dir, _) in CRATES.iter().filter(|(d, _)| *d != "crates/tensor-bridge") {
        let manifest = read(&root.join(dir).join("Cargo.toml"));
        for line in manifest.lines() {
            let key = line.split('=').next().unwrap_or_default().trim();
            if ["tch", "torch-sys"]
                .iter()
                .any(|d| key == *d || key.starts_with(&format!("{d}.")))
            {
                violations.push(format!("{dir}/Cargo.toml: {line}"));
            }
        }
        // Without the dependency, `tch::…` can only be kiln-tensor's
        // re-export (`kiln_tensor::tch`); torch-sys it does not re-export.
        for sub in ["src", "tests", "examples", "benches"] {
            for file in rust_files(&root.join(dir).join(sub)) {
                for (n, line) in code_lines(&read(&file)).iter().enumerate() {
                    if has_word(line, "torch_sys") {
                        violations.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "tch/torch-sys named outside kiln-tensor:\n{}",
        violations.join("\n")
    );
}

#[test]
fn libraries_neither_use_anyhow_nor_print() {
    let root = root();
    let mut violations = Vec::new();
    for dir in [
        "crates/tensor-bridge",
        "crates/losses",
        "crates/optim",
        "crates/loop",
    ] {
        for file in rust_files(&root.join(dir).join("src")) {
            let lines = code_lines(&read(&file));
            // Unit tests at the end of a file may print and use anyhow.
            let end = lines
                .iter()
                .position(|l| l.trim() == "#[cfg(test)]")
                .unwrap_or(lines.len());
            for (n, line) in lines.iter().take(end).enumerate() {
                let prints = ["println", "eprintln", "print", "eprint", "dbg"]
                    .iter()
                    .any(|m| uses_macro(line, m));
                if has_word(line, "anyhow") || prints {
                    violations.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "library code that uses anyhow or prints:\n{}",
        violations.join("\n")
    );
}
