//! The import graph of `src/` points down: no cycle between files, and no file
//! imports one of a higher layer than its own, per the layer table of
//! `docs/architecture.md`.
//!
//! The graph is extracted from the sources: every `crate::` path (in `use`
//! lines and in code), `super::`/`self::` paths, and paths through a child
//! module a file declares (`mod x;` then `x::…`), leaving test code out
//! (`#[cfg(test)]` items and the files they load). A path resolves to the file
//! of its longest module prefix; `crate::NAME` for a macro or a re-export of
//! `lib.rs` resolves to the file that defines it.
//!
//! A `pub use child::…` re-export of one of a file's own child modules is its
//! facade, not an import: the parent may re-export what its children define
//! while the children use the parent's helpers (`use super::*`).
//!
//! The tree has neither (issue 10); [`KNOWN`] is empty. It is a ratchet: a
//! problem not in it fails the test, and so does an entry that no longer
//! occurs (delete it), so the list only shrinks.
//!
//! `LLMDD_GRAPH=1 cargo test --test layers -- --nocapture` prints every edge.
//!
//! A second check keeps the wire frames below the API layer: the frame type
//! `Msg` is named only in the engine (`transfer`, whose typed RPCs and
//! handshake frames the API layer calls) and the net layer (`transport`, the
//! codec), outside test code.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One source file: its module path (`a::b`, "" for the crate root) and text
/// without comments, literals and test code.
struct File {
    module: String,
    code: String,
}

/// Known violations, exactly as the test reports them. Issue 10 emptied
/// it; it stays as the ratchet's other half (an entry that no longer occurs
/// fails the test), and nothing may be added.
const KNOWN: &[&str] = &[];

#[test]
fn import_graph_has_no_cycle_and_points_down() {
    let src = Path::new(ROOT).join("src");
    let files = load(&src);
    let graph = edges(&files);
    let layers = layer_table();

    if std::env::var_os("LLMDD_GRAPH").is_some() {
        for (from, tos) in &graph {
            for to in tos {
                println!("{from} -> {to}");
            }
        }
    }

    let mut problems = Vec::new();
    for f in files.values() {
        if layer_of(&layers, &f.module).is_none() {
            problems.push(format!(
                "{}: in no layer of docs/architecture.md",
                name(&f.module)
            ));
        }
    }
    for (from, tos) in &graph {
        let Some(lf) = layer_of(&layers, from) else {
            continue;
        };
        for to in tos {
            let Some(lt) = layer_of(&layers, to) else {
                continue;
            };
            if lt.0 > lf.0 {
                problems.push(format!("upward: {} imports {}", name(from), name(to)));
            }
        }
    }
    for scc in cycles(&graph) {
        let names: Vec<String> = scc.iter().map(|m| name(m)).collect();
        problems.push(format!("cycle between files: {}", names.join(" <-> ")));
    }
    let new: Vec<&String> = problems
        .iter()
        .filter(|p| !KNOWN.contains(&p.as_str()))
        .collect();
    let gone: Vec<&&str> = KNOWN
        .iter()
        .filter(|k| !problems.iter().any(|p| p == **k))
        .collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "the import graph of src/ breaks the layering:\n  new (fix the import, never add it to KNOWN):\n    {}\n  fixed (delete from KNOWN in tests/layers.rs and from docs/architecture.md):\n    {}",
        new.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n    "),
        gone.iter().map(|s| **s).collect::<Vec<_>>().join("\n    ")
    );
}

/// Modules that may build or match wire frames: the engine and the codec.
const FRAME_MODULES: &[&str] = &["transfer", "transport"];

#[test]
fn wire_frames_are_built_and_matched_only_in_the_engine_and_codec() {
    let files = load(&Path::new(ROOT).join("src"));
    let mut found = Vec::new();
    for f in files.values() {
        let allowed = FRAME_MODULES
            .iter()
            .any(|p| f.module == *p || f.module.starts_with(&format!("{p}::")));
        if !allowed && tokens(&f.code).iter().any(|t| t == "Msg") {
            found.push(name(&f.module));
        }
    }
    assert!(
        found.is_empty(),
        "`Msg` (a wire frame) is named outside transfer/ and transport/ in:\n    {}\n  \
         send and match frames through the engine's typed calls (transfer::rpc, \
         transfer::handshake) instead",
        found.join("\n    ")
    );
}

/// `crate` for the root, else the module path.
fn name(m: &str) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.to_string()
    }
}

// ---------------------------------------------------------------- layer table

/// (rank, layer name, module prefixes) rows of the table that follows the
/// `<!-- layers -->` marker in docs/architecture.md.
type Layers = Vec<(u32, String, Vec<String>)>;

fn layer_table() -> Layers {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/architecture.md"))
        .expect("docs/architecture.md");
    let start = doc
        .find("<!-- layers -->")
        .expect("docs/architecture.md has a `<!-- layers -->` table");
    let mut rows = Vec::new();
    for line in doc[start..].lines().skip(1) {
        let line = line.trim();
        if line.is_empty() && !rows.is_empty() {
            break;
        }
        if !line.starts_with('|') {
            continue;
        }
        let cols: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let Ok(rank) = cols[0].parse::<u32>() else {
            continue; // the header and the separator row
        };
        let mods: Vec<String> = cols[2]
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|m| {
                if m == "crate" {
                    String::new()
                } else {
                    m.to_string()
                }
            })
            .collect();
        assert!(!mods.is_empty(), "layer row without `modules`: {line}");
        rows.push((rank, cols[1].to_string(), mods));
    }
    assert!(rows.len() >= 2, "the layer table has fewer than two rows");
    rows
}

/// The layer of module `m`: the row with the longest prefix of it.
fn layer_of<'a>(layers: &'a Layers, m: &str) -> Option<(u32, &'a str)> {
    let mut best: Option<(usize, u32, &str)> = None;
    for (rank, layer, mods) in layers {
        for p in mods {
            let hit = if p.is_empty() {
                m.is_empty()
            } else {
                m == p || m.starts_with(&format!("{p}::"))
            };
            if hit && best.map_or(true, |b| p.len() >= b.0) {
                best = Some((p.len(), *rank, layer));
            }
        }
    }
    best.map(|b| (b.1, b.2))
}

// ---------------------------------------------------------------- sources

fn load(src: &Path) -> BTreeMap<String, File> {
    let mut paths = Vec::new();
    walk(src, &mut paths);
    let mut all: BTreeMap<String, (PathBuf, String)> = BTreeMap::new();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap();
        all.insert(module_of(src, &p), (p, text));
    }
    // Modules a `#[cfg(test)] mod x;` loads are test code, with their children.
    let mut test_only: BTreeSet<String> = BTreeSet::new();
    for (m, (_, text)) in &all {
        for child in test_modules(&strip(text)) {
            test_only.insert(join(m, &child));
        }
    }
    all.into_iter()
        .filter(|(m, _)| {
            !test_only
                .iter()
                .any(|t| m == t || m.starts_with(&format!("{t}::")))
        })
        .map(|(m, (_, text))| {
            let code = drop_test_items(&strip(&text));
            (m.clone(), File { module: m, code })
        })
        .collect()
}

/// The module path of source file `p` under `src` (`a::b` for `a/b.rs` or
/// `a/b/mod.rs`, "" for `lib.rs`).
fn module_of(src: &Path, p: &Path) -> String {
    let rel = p.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts.join("::")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}::{child}")
    }
}

/// `text` without comments and with string and char literals emptied.
fn strip(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && (i == 0 || !ident(b[i - 1]))
        {
            // A raw string r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push('r');
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"'
                    && b[j + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == b'#')
                        .count()
                        == hashes
                {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            } else if b.get(i + 2) == Some(&b'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            // Copy one whole UTF-8 character.
            let len = utf8_len(c);
            out.push_str(&text[i..i + len]);
            i += len;
        }
    }
    out
}

fn utf8_len(c: u8) -> usize {
    match c {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

fn ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Names of `#[cfg(test)] mod x;` declarations.
fn test_modules(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        rest = &rest[at + "#[cfg(test)]".len()..];
        let item = skip_attrs(rest);
        let words: Vec<&str> = item.split_whitespace().take(3).collect();
        let decl = match words.as_slice() {
            ["mod", n, ..] => Some(*n),
            ["pub" | "pub(crate)", "mod", n] => Some(*n),
            _ => None,
        };
        if let Some(n) = decl {
            if let Some(n) = n.strip_suffix(';') {
                out.push(n.to_string());
            }
        }
    }
    out
}

/// `s` after any leading whitespace and attributes.
fn skip_attrs(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if !s.starts_with("#[") {
            return s;
        }
        let mut depth = 0;
        for (i, c) in s.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => {
                    depth -= 1;
                    if depth == 0 {
                        s = &s[i + 1..];
                        break;
                    }
                }
                _ => {}
            }
        }
    }
}

/// `code` without the items under `#[cfg(test)]`.
fn drop_test_items(code: &str) -> String {
    let mut out = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        // The item ends at its first `;` at depth 0, or its braced body.
        let b = after.as_bytes();
        let mut i = 0;
        let mut depth = 0i32;
        while i < b.len() {
            match b[i] {
                b'{' | b'(' | b'[' => depth += 1,
                b'}' | b')' | b']' => {
                    depth -= 1;
                    if depth == 0 && b[i] == b'}' {
                        i += 1;
                        break;
                    }
                }
                b';' if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        rest = &after[i.min(after.len())..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------- edges

fn edges(files: &BTreeMap<String, File>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    // crate::NAME for an exported macro or a re-export of the crate root.
    let mut root_names: HashMap<String, String> = HashMap::new();
    for f in files.values() {
        let mut rest = f.code.as_str();
        while let Some(at) = rest.find("#[macro_export]") {
            rest = &rest[at..];
            if let Some(m) = rest.find("macro_rules!") {
                let name: String = rest[m + "macro_rules!".len()..]
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                root_names.insert(name, f.module.clone());
            }
            rest = &rest["#[macro_export]".len()..];
        }
    }
    if let Some(lib) = files.get("") {
        for (path, _) in use_paths(&lib.code, "pub use ") {
            if let Some(last) = path.last() {
                let target = resolve(&modules, "", &path);
                if !target.is_empty() {
                    root_names.entry(last.clone()).or_insert(target);
                }
            }
        }
    }

    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files.values() {
        let children = declared_children(&f.code);
        let code = without_child_reexports(&f.code, &children);
        let mut targets = BTreeSet::new();
        for path in paths(&code, &f.module, &children) {
            let mut t = resolve(&modules, &f.module, &path);
            // `crate::bail!`, `crate::Status`: the file that defines the name.
            if t.is_empty() && !path.is_empty() {
                if let Some(r) = root_names.get(&path[0]) {
                    t = r.clone();
                }
            }
            if t != f.module && !(t.is_empty() && f.module.is_empty()) {
                targets.insert(t);
            }
        }
        graph.insert(f.module.clone(), targets);
    }
    graph
}

/// `code` without its `pub use` (any visibility) statements whose path
/// starts at one of its own child modules (`pub use child::…;`,
/// `pub use self::child::…;`): re-exports are the file's facade.
fn without_child_reexports(code: &str, children: &BTreeSet<String>) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("pub") {
        let before_ok = at == 0 || !ident(rest.as_bytes()[at - 1]);
        let stmt_end = rest[at..].find(';').map(|e| at + e + 1);
        let keep_going = |out: &mut String, rest: &mut &str| {
            out.push_str(&rest[..at + 3]);
            *rest = &rest[at + 3..];
        };
        let Some(end) = stmt_end.filter(|_| before_ok) else {
            keep_going(&mut out, &mut rest);
            continue;
        };
        let toks = tokens(&rest[at..end]);
        // pub [ ( crate | super | in path ) ] use [self ::] child :: …
        let mut i = 1;
        if toks.get(i).map(String::as_str) == Some("(") {
            while i < toks.len() && toks[i] != ")" {
                i += 1;
            }
            i += 1;
        }
        let is_reexport = toks.get(i).map(String::as_str) == Some("use") && {
            let mut j = i + 1;
            if toks.get(j).map(String::as_str) == Some("self")
                && toks.get(j + 1).map(String::as_str) == Some("::")
            {
                j += 2;
            }
            toks.get(j).is_some_and(|t| children.contains(t))
        };
        if is_reexport {
            out.push_str(&rest[..at]);
            rest = &rest[end..];
        } else {
            keep_going(&mut out, &mut rest);
        }
    }
    out.push_str(rest);
    out
}

/// The module names of `mod x;` / `pub mod x;` declarations.
fn declared_children(code: &str) -> BTreeSet<String> {
    let toks = tokens(code);
    let mut out = BTreeSet::new();
    for w in toks.windows(3) {
        if w[0] == "mod" && w[2] == ";" {
            out.insert(w[1].clone());
        }
    }
    out
}

/// The longest module prefix of `path` (absolute segments), as a module path.
fn resolve(modules: &BTreeSet<&str>, _from: &str, path: &[String]) -> String {
    for n in (1..=path.len()).rev() {
        let m = path[..n].join("::");
        if modules.contains(m.as_str()) {
            return m;
        }
    }
    String::new()
}

/// Lexes `code` into identifiers, `::` and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if ident(c) || c == b'$' {
            let s = i;
            i += 1;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            out.push(code[s..i].to_string());
        } else if c == b':' && b.get(i + 1) == Some(&b':') {
            out.push("::".into());
            i += 2;
        } else {
            let len = utf8_len(c);
            out.push(code[i..i + len].to_string());
            i += len;
        }
    }
    out
}

/// Every absolute path that `code` (module `module`) names through `crate::`,
/// `super::`, `self::` or a declared child module.
fn paths(code: &str, module: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let toks = tokens(code);
    let here: Vec<String> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(String::from).collect()
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i].as_str();
        let prev = if i > 0 { toks[i - 1].as_str() } else { "" };
        let starts = toks.get(i + 1).map(String::as_str) == Some("::") && prev != "::";
        let base: Option<Vec<String>> = if !starts {
            None
        } else if t == "crate" {
            Some(Vec::new())
        } else if t == "super" {
            let mut b = here.clone();
            let mut j = i;
            // super::super::…
            while toks.get(j).map(String::as_str) == Some("super")
                && toks.get(j + 1).map(String::as_str) == Some("::")
            {
                b.pop();
                j += 2;
            }
            let mut v = Vec::new();
            tree(&toks, j, b, &mut v);
            out.extend(v);
            i = j;
            continue;
        } else if t == "self" || children.contains(t) {
            let mut b = here.clone();
            if t != "self" {
                b.push(t.to_string());
            }
            Some(b)
        } else {
            None
        };
        if let Some(b) = base {
            let mut v = Vec::new();
            tree(&toks, i + 2, b, &mut v);
            if t != "self" && t != "crate" && v.is_empty() {
                let mut p = here.clone();
                p.push(t.to_string());
                v.push(p);
            }
            out.extend(v);
            i += 2;
            continue;
        }
        i += 1;
    }
    out
}

/// Expands the path (or `{…}` group) starting at token `i` under `prefix`.
fn tree(
    toks: &[String],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match toks.get(i).map(String::as_str) {
            Some("{") => {
                i += 1;
                loop {
                    match toks.get(i).map(String::as_str) {
                        Some("}") => return i + 1,
                        Some(",") => i += 1,
                        None => return i,
                        _ => i = tree(toks, i, prefix.clone(), out),
                    }
                }
            }
            Some("self") => {
                out.push(prefix);
                return i + 1;
            }
            Some("*") => {
                out.push(prefix);
                return i + 1;
            }
            Some(t) if t.bytes().all(ident) && !t.is_empty() => {
                prefix.push(t.to_string());
                if toks.get(i + 1).map(String::as_str) == Some("::") {
                    i += 2;
                } else {
                    out.push(prefix);
                    return i + 1;
                }
            }
            _ => {
                if !prefix.is_empty() {
                    out.push(prefix);
                }
                return i;
            }
        }
    }
}

/// The paths of `lead` statements (`pub use a::b::{C, D};`) in `code`.
fn use_paths(code: &str, lead: &str) -> Vec<(Vec<String>, ())> {
    let mut out = Vec::new();
    for stmt in code.split(';') {
        let s = stmt.trim();
        if let Some(rest) = s.strip_prefix(lead) {
            let toks = tokens(rest);
            let start: Vec<String> = Vec::new();
            let mut v = Vec::new();
            let from = if toks.first().map(String::as_str) == Some("crate") {
                2
            } else {
                0
            };
            tree(&toks, from, start, &mut v);
            out.extend(v.into_iter().map(|p| (p, ())));
        }
    }
    out
}

// ---------------------------------------------------------------- cycles

/// The strongly connected components with more than one file (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct St<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut St<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        if let Some(ws) = s.g.get(v) {
            for w in ws {
                let w = w.as_str();
                if !s.g.contains_key(w) {
                    continue;
                }
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(lw));
                } else if s.on.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(iw));
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = St {
        g: graph,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// The modules a user of the crate can name: the facade of `src/lib.rs`
/// (`docs/architecture.md`, "The facade"). Everything else is crate-private;
/// making a module public is a decision this list records.
const FACADE: &[&str] = &[
    "cache",
    "cache::types",
    "datadist",
    "datadist::async_transfer",
    "datadist::options",
    "engine",
    "engine::desc",
    "engine::name",
    "engine::request",
    "ffi",
    "ffi::backend",
    "ffi::cache",
    "ffi::config",
    "ffi::constants",
    "ffi::engine",
    "ffi::init",
    "ffi::instance",
    "ffi::log",
    "ffi::option_keys",
    "ffi::stats",
    "ffi::task",
    "ffi::types",
    "log",
    "log::filter",
    "log::line",
    "log::rate",
    "log::sink",
    "stats",
    "stats::histogram",
    "status",
    "status::c_constants",
    "testing",
];

/// Modules reachable from the crate root through `pub mod` declarations
/// (a `pub(crate) mod` or a private `mod` ends the chain).
#[test]
fn only_the_facade_is_public() {
    let src = Path::new(ROOT).join("src");
    let mut paths = Vec::new();
    walk(&src, &mut paths);
    let mut declared: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap();
        for line in text.lines() {
            let Some(rest) = line.trim_start().strip_prefix("pub mod ") else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            declared.entry(module_of(&src, &p)).or_default().push(name);
        }
    }
    let mut public = BTreeSet::new();
    let mut todo = vec![String::new()];
    while let Some(m) = todo.pop() {
        for child in declared.get(&m).into_iter().flatten() {
            let path = join(&m, child);
            if public.insert(path.clone()) {
                todo.push(path);
            }
        }
    }
    let want: BTreeSet<String> = FACADE.iter().map(|s| s.to_string()).collect();
    let extra: Vec<_> = public.difference(&want).collect();
    let gone: Vec<_> = want.difference(&public).collect();
    assert!(
        extra.is_empty() && gone.is_empty(),
        "the crate's public modules differ from the facade (tests/layers.rs FACADE, \
         docs/architecture.md \"The facade\"):\n  public but not listed: {extra:?}\n  \
         listed but not public: {gone:?}"
    );
}
