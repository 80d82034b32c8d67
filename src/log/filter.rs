//! The `LLMDD_LOG` filter: env_logger-like directives, comma separated.
//!
//! - `LEVEL` (`off`, `error`, `warn`, `info`, `debug`, `trace`, any case) sets
//!   the default level; the last one wins.
//! - `MODULE=LEVEL` sets the level of a module and its submodules, where
//!   `MODULE` is `llmdd` or a path below it (`llmdd::transport`). The longest
//!   matching module wins; a later directive for the same module replaces an
//!   earlier one.
//! - `MODULE` alone means `MODULE=trace` (as in env_logger).
//!
//! Anything else is an unknown word: [`Filter::parse`] returns it so the caller
//! can warn (`LLMDD_LOG`) or refuse (`llmdd_set_log_filter`). Unlike env_logger,
//! a module matches only at `::` boundaries (`llmdd::trans` does not match
//! `llmdd::transport`), and there are no `/regex` message filters.

use log::{Level, LevelFilter};

/// The crate's root module; every llmdd log target is it or below it.
const ROOT: &str = "llmdd";

/// A parsed filter: a default level plus per-module levels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    default: LevelFilter,
    /// Sorted longest module first, so the first match is the most specific.
    modules: Vec<(String, LevelFilter)>,
}

impl Default for Filter {
    /// `warn` for everything.
    fn default() -> Self {
        Filter {
            default: LevelFilter::Warn,
            modules: Vec::new(),
        }
    }
}

impl Filter {
    /// Parses `spec`; returns the filter built from the words it understood
    /// and the words it did not (in order, trimmed). An empty spec is the
    /// default (`warn`).
    pub fn parse(spec: &str) -> (Filter, Vec<String>) {
        let mut f = Filter::default();
        let mut unknown = Vec::new();
        for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match directive(word) {
                Some((None, level)) => f.default = level,
                Some((Some(module), level)) => {
                    f.modules.retain(|(m, _)| m != module);
                    f.modules.push((module.to_string(), level));
                }
                None => unknown.push(word.to_string()),
            }
        }
        // Stable sort: equal lengths keep their order (they cannot overlap).
        f.modules.sort_by_key(|m| std::cmp::Reverse(m.0.len()));
        (f, unknown)
    }

    /// The most verbose level any directive enables (what the cheap atomic
    /// check in the log macros compares against).
    pub fn max_level(&self) -> LevelFilter {
        self.modules
            .iter()
            .map(|(_, l)| *l)
            .fold(self.default, Ord::max)
    }

    /// Whether any per-module directive exists (otherwise the default level
    /// alone decides, and [`Filter::max_level`] is exact).
    pub fn has_modules(&self) -> bool {
        !self.modules.is_empty()
    }

    /// The level that applies to log target `target`. Allocation-free.
    pub fn level_for(&self, target: &str) -> LevelFilter {
        self.modules
            .iter()
            .find(|(m, _)| within(target, m))
            .map_or(self.default, |(_, l)| *l)
    }

    /// Whether a line at `level` from `target` passes.
    pub fn enabled(&self, level: Level, target: &str) -> bool {
        level <= self.level_for(target)
    }
}

/// One directive: `(None, level)` for a default, `(Some(module), level)`.
fn directive(word: &str) -> Option<(Option<&str>, LevelFilter)> {
    match word.split_once('=') {
        Some((module, level)) => {
            let module = module.trim();
            let level = level.trim().parse().ok()?;
            is_module(module).then_some((Some(module), level))
        }
        None => match word.parse() {
            Ok(level) => Some((None, level)),
            Err(_) => is_module(word).then_some((Some(word), LevelFilter::Trace)),
        },
    }
}

/// `llmdd` or `llmdd::a::b` with identifier segments.
fn is_module(name: &str) -> bool {
    let mut segments = name.split("::");
    segments.next() == Some(ROOT)
        && segments
            .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

/// `target` is `module` or one of its submodules.
fn within(target: &str, module: &str) -> bool {
    target
        .strip_prefix(module)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(spec: &str) -> Filter {
        let (f, unknown) = Filter::parse(spec);
        assert!(unknown.is_empty(), "{spec:?}: unknown {unknown:?}");
        f
    }

    #[test]
    fn empty_and_blank_specs_are_the_warn_default() {
        for spec in ["", " ", ",", " , ,"] {
            let f = parse_ok(spec);
            assert_eq!(f, Filter::default());
            assert_eq!(f.max_level(), LevelFilter::Warn);
            assert!(f.enabled(Level::Warn, "llmdd::x"));
            assert!(!f.enabled(Level::Info, "llmdd::x"));
        }
    }

    #[test]
    fn a_level_word_sets_the_default_in_any_case() {
        for (spec, level) in [
            ("off", LevelFilter::Off),
            ("error", LevelFilter::Error),
            ("WARN", LevelFilter::Warn),
            ("Info", LevelFilter::Info),
            ("debug", LevelFilter::Debug),
            (" trace ", LevelFilter::Trace),
            ("debug,error", LevelFilter::Error),
        ] {
            let f = parse_ok(spec);
            assert_eq!(f.level_for("llmdd::datadist::session"), level, "{spec}");
            assert_eq!(f.max_level(), level, "{spec}");
            assert!(!f.has_modules());
        }
        assert!(!parse_ok("off").enabled(Level::Error, "llmdd"));
    }

    #[test]
    fn module_directives_apply_to_the_module_and_below_only() {
        let f = parse_ok("warn,llmdd::transport=debug");
        assert!(f.has_modules());
        assert_eq!(f.max_level(), LevelFilter::Debug);
        assert!(f.enabled(Level::Debug, "llmdd::transport"));
        assert!(f.enabled(Level::Debug, "llmdd::transport::tcp"));
        assert!(!f.enabled(Level::Trace, "llmdd::transport::tcp"));
        // Not at a `::` boundary, or a sibling: the default applies.
        assert!(!f.enabled(Level::Debug, "llmdd::transports"));
        assert!(!f.enabled(Level::Info, "llmdd::datadist::session"));
        assert!(f.enabled(Level::Warn, "llmdd::datadist::session"));
        assert_eq!(f.level_for("llmdd"), LevelFilter::Warn);
    }

    #[test]
    fn the_longest_module_wins_whatever_the_order() {
        for spec in [
            "llmdd=info,llmdd::transport=off,llmdd::transport::tcp=trace",
            "llmdd::transport::tcp=trace,llmdd::transport=off,llmdd=info",
        ] {
            let f = parse_ok(spec);
            assert_eq!(
                f.level_for("llmdd::transport::tcp::conn"),
                LevelFilter::Trace
            );
            assert_eq!(f.level_for("llmdd::transport::shm"), LevelFilter::Off);
            assert_eq!(f.level_for("llmdd::datadist"), LevelFilter::Info);
            // The default still covers targets outside llmdd.
            assert_eq!(f.level_for("other"), LevelFilter::Warn);
            assert_eq!(f.max_level(), LevelFilter::Trace);
        }
    }

    #[test]
    fn later_directives_replace_earlier_ones() {
        let f = parse_ok("llmdd::a=debug, llmdd::a = error ,info");
        assert_eq!(f.level_for("llmdd::a"), LevelFilter::Error);
        assert_eq!(f.level_for("llmdd::b"), LevelFilter::Info);
        assert_eq!(f.max_level(), LevelFilter::Info);
    }

    #[test]
    fn a_bare_module_means_trace() {
        let f = parse_ok("error,llmdd::datadist");
        assert_eq!(f.level_for("llmdd::datadist::comm"), LevelFilter::Trace);
        assert_eq!(f.level_for("llmdd::transport"), LevelFilter::Error);
        assert_eq!(parse_ok("llmdd").level_for("llmdd::x"), LevelFilter::Trace);
    }

    #[test]
    fn unknown_words_are_returned_and_the_rest_still_applies() {
        let (f, unknown) = Filter::parse(
            "verbose,info,llmdd::transport=loud,transport=debug,llmdd::=info,\
             llmdd::a b=info,llmdd:x,=info,llmdd::session=,llmdd/foo,llmdd::ok=debug",
        );
        assert_eq!(
            unknown,
            [
                "verbose",
                "llmdd::transport=loud",
                "transport=debug",
                "llmdd::=info",
                "llmdd::a b=info",
                "llmdd:x",
                "=info",
                "llmdd::session=",
                "llmdd/foo",
            ]
        );
        assert_eq!(f.level_for("llmdd::transport"), LevelFilter::Info);
        assert_eq!(f.level_for("llmdd::ok"), LevelFilter::Debug);
        assert_eq!(f.max_level(), LevelFilter::Debug);
    }

    #[test]
    fn off_with_one_module_enabled() {
        let f = parse_ok("off,llmdd::datadist::session=info");
        assert_eq!(f.max_level(), LevelFilter::Info);
        assert!(f.enabled(Level::Info, "llmdd::datadist::session"));
        assert!(!f.enabled(Level::Debug, "llmdd::datadist::session"));
        assert!(!f.enabled(Level::Error, "llmdd::datadist::comm"));
    }
}
