//! The one registry type: [`Registry`] of [`Entry`]s with [`OptionDoc`]s.
use super::{
    bad_value, suggest, unknown_options, OptionInfo, OptionValue, OptionVisitor, Options, Spec,
};
use crate::{Error, Result};
use std::fmt;
use std::sync::Arc;

/// One option of a registry entry: its key, aliases, default and help, and
/// its type (to check and normalise values before any builder runs).
pub struct OptionDoc {
    /// The canonical key (`t_max`).
    pub name: String,
    /// Other accepted keys (`T_max`).
    pub aliases: Vec<String>,
    /// One line on what it does.
    pub help: String,
    /// The default as spec text, `None` when the option is required.
    pub default: Option<String>,
    value: Box<dyn OptionValue>,
}

impl Clone for OptionDoc {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            aliases: self.aliases.clone(),
            help: self.help.clone(),
            default: self.default.clone(),
            value: self.value.clone_value(),
        }
    }
}

impl fmt::Debug for OptionDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OptionDoc")
            .field("name", &self.name)
            .field("aliases", &self.aliases)
            .field("help", &self.help)
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

impl OptionDoc {
    /// An option `name` whose default is `default` (its type is the option's type).
    pub fn new(name: &str, default: impl OptionValue + Clone + 'static, help: &str) -> Self {
        Self {
            name: name.to_string(),
            aliases: Vec::new(),
            help: help.to_string(),
            default: Some(default.format_text()),
            value: Box::new(default),
        }
    }

    /// A required option `name` of the type of `example`.
    pub fn required(name: &str, example: impl OptionValue + Clone + 'static, help: &str) -> Self {
        Self {
            default: None,
            ..Self::new(name, example, help)
        }
    }

    /// The same option, also accepted as `alias`.
    pub fn alias(mut self, alias: &str) -> Self {
        self.aliases.push(alias.to_string());
        self
    }

    /// The options `config` visits, with its current values as defaults.
    /// An error the config's [`Options::options`] raises itself ends the list there.
    pub fn collect(config: &mut (impl Options + ?Sized)) -> Vec<OptionDoc> {
        let mut c = Collector { docs: Vec::new() };
        // The collector never fails; a config that fails on its own is documented up to there.
        let _ = config.options(&mut c);
        c.docs
    }

    /// Whether `key` is this option's name or one of its aliases.
    pub fn matches(&self, key: &str) -> bool {
        self.name == key || self.aliases.iter().any(|a| a == key)
    }

    /// `text` checked against the option's type and written canonically
    /// (`1e-3` → `0.001`, `1` → `true` for a boolean); on failure, what was expected.
    pub fn normalise(&self, text: &str) -> std::result::Result<String, String> {
        let mut v = self.value.clone_value();
        v.parse_text(text)?;
        Ok(v.format_text())
    }
}

/// A registered component: canonical kebab-case name, aliases, a one-line
/// summary, its options and its builder. `B` is the builder's type, e.g.
/// `dyn Fn(&mut Spec) -> Result<Box<dyn Loss>> + Send + Sync` for losses.
pub struct Entry<B: ?Sized> {
    /// The canonical name, kebab-case (`cross-entropy`).
    pub name: String,
    /// Other accepted names, e.g. PyTorch's class name (`CrossEntropyLoss`).
    pub aliases: Vec<String>,
    /// One line on what the component is.
    pub summary: String,
    /// Its options, in the order resolved specs list them.
    pub options: Vec<OptionDoc>,
    /// Builds the component from a resolved spec (canonical name and keys,
    /// every option present with a checked value).
    pub build: Arc<B>,
}

impl<B: ?Sized> Clone for Entry<B> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            aliases: self.aliases.clone(),
            summary: self.summary.clone(),
            options: self.options.clone(),
            build: Arc::clone(&self.build),
        }
    }
}

impl<B: ?Sized> fmt::Debug for Entry<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("aliases", &self.aliases)
            .field("summary", &self.summary)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<B: ?Sized> Entry<B> {
    /// An entry without options or aliases.
    pub fn new(name: &str, summary: &str, build: Arc<B>) -> Self {
        Self {
            name: name.to_string(),
            aliases: Vec::new(),
            summary: summary.to_string(),
            options: Vec::new(),
            build,
        }
    }

    /// The same entry, also found as `alias`.
    pub fn alias(mut self, alias: &str) -> Self {
        self.aliases.push(alias.to_string());
        self
    }

    /// The same entry with each of `aliases`.
    pub fn aliases(self, aliases: &[&str]) -> Self {
        aliases.iter().fold(self, |e, a| e.alias(a))
    }

    /// The same entry with one more option.
    pub fn option(mut self, doc: OptionDoc) -> Self {
        self.options.push(doc);
        self
    }

    /// The same entry with the options `config` visits, documented with its
    /// current values as defaults (pass the config's `Default`).
    pub fn options_of(mut self, config: &mut (impl Options + ?Sized)) -> Self {
        self.options.extend(OptionDoc::collect(config));
        self
    }

    /// Whether `name` is the entry's name or one of its aliases.
    pub fn matches(&self, name: &str) -> bool {
        self.name == name || self.aliases.iter().any(|a| a == name)
    }
}

/// Something that exists under a name but is built from code, not from a
/// spec (schedulers taking closures): listed by [`Registry::describe`] and
/// named in the error for its name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CodeOnly {
    name: String,
    aliases: Vec<String>,
    summary: String,
}

/// Components by spec: the one registry type of kiln (losses, optimizers,
/// schedulers, models). `B` is the builder type of its entries; each crate
/// calls the builder of the entry [`Registry::prepare`] returns with its own
/// arguments (parameters, an optimizer…).
pub struct Registry<B: ?Sized> {
    kind: String,
    title: String,
    entries: Vec<Entry<B>>,
    code_only: Vec<CodeOnly>,
}

impl<B: ?Sized> Clone for Registry<B> {
    fn clone(&self) -> Self {
        Self {
            kind: self.kind.clone(),
            title: self.title.clone(),
            entries: self.entries.clone(),
            code_only: self.code_only.clone(),
        }
    }
}

impl<B: ?Sized> fmt::Debug for Registry<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("kind", &self.kind)
            .field("names", &self.names())
            .finish_non_exhaustive()
    }
}

impl<B: ?Sized> Registry<B> {
    /// An empty registry of `kind` (`loss`, used in errors: "unknown loss
    /// 'x'") titled `title` (`Losses`, the heading of [`Registry::describe`]).
    pub fn new(kind: &str, title: &str) -> Self {
        Self {
            kind: kind.to_string(),
            title: title.to_string(),
            entries: Vec::new(),
            code_only: Vec::new(),
        }
    }

    /// What the registry holds (`loss`).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Adds `entry`, replacing an entry of the same name (in its place).
    pub fn register(&mut self, entry: Entry<B>) {
        self.code_only.retain(|c| c.name != entry.name);
        match self.entries.iter_mut().find(|e| e.name == entry.name) {
            Some(slot) => *slot = entry,
            None => self.entries.push(entry),
        }
    }

    /// Names something built from code only (a scheduler taking a closure):
    /// [`Registry::describe`] lists it and a spec naming it gets an error
    /// that says so.
    pub fn register_code_only(&mut self, name: &str, aliases: &[&str], summary: &str) {
        self.code_only.retain(|c| c.name != name);
        self.code_only.push(CodeOnly {
            name: name.to_string(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            summary: summary.to_string(),
        });
    }

    /// The canonical names, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// The entries, in registration order.
    pub fn entries(&self) -> &[Entry<B>] {
        &self.entries
    }

    /// The entry named `name` or, failing that, having it as an alias.
    pub fn get(&self, name: &str) -> Option<&Entry<B>> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .or_else(|| self.entries.iter().find(|e| e.matches(name)))
    }

    /// The entry for `name`, or an error naming the accepted names (and the
    /// nearest one).
    pub fn lookup(&self, name: &str) -> Result<&Entry<B>> {
        if let Some(e) = self.get(name) {
            return Ok(e);
        }
        let kind = &self.kind;
        let accepted = self.names().join(", ");
        if let Some(c) = self
            .code_only
            .iter()
            .find(|c| c.name == name || c.aliases.iter().any(|a| a == name))
        {
            return Err(Error::InvalidArgument(format!(
                "{kind} '{name}' is built from code, not from a spec string ({}); accepted: {accepted}",
                c.summary
            )));
        }
        let candidates = self.entries.iter().flat_map(|e| {
            std::iter::once(e.name.as_str()).chain(e.aliases.iter().map(String::as_str))
        });
        let hint = suggest(name, candidates)
            .map(|s| format!(" (did you mean '{s}'?)"))
            .unwrap_or_default();
        Err(Error::InvalidArgument(format!(
            "unknown {kind} '{name}'{hint}; accepted: {accepted}"
        )))
    }

    /// The entry `spec` names and the spec resolved against it (see
    /// [`Registry::resolve`]): what a builder receives. Unknown names and
    /// options, bad values and missing required options are errors here,
    /// before any builder runs.
    pub fn prepare(&self, spec: &Spec) -> Result<(&Entry<B>, Spec)> {
        let entry = self.lookup(&spec.name)?;
        let mut given: Vec<Option<(&str, &str)>> = vec![None; entry.options.len()];
        let mut unknown = Vec::new();
        for (key, value) in spec.options() {
            match entry.options.iter().position(|o| o.matches(key)) {
                Some(i) => {
                    if let Some(Some((first, _))) = given.get(i) {
                        return Err(Error::InvalidArgument(format!(
                            "{}: option {} is given twice (as {first} and {key})",
                            entry.name,
                            entry.options.get(i).map_or("", |o| o.name.as_str())
                        )));
                    }
                    if let Some(slot) = given.get_mut(i) {
                        *slot = Some((key, value));
                    }
                }
                None => unknown.push(key),
            }
        }
        if !unknown.is_empty() {
            let candidates = entry.options.iter().flat_map(|o| {
                std::iter::once(o.name.as_str()).chain(o.aliases.iter().map(String::as_str))
            });
            return Err(unknown_options(
                &entry.name,
                &unknown,
                candidates,
                entry.options.iter().map(|o| o.name.as_str()),
            ));
        }
        let mut out = Spec::new(&entry.name)?;
        for (doc, given) in entry.options.iter().zip(given) {
            let text = match (given, &doc.default) {
                (Some((key, value)), _) => self.normalise(entry, doc, key, value)?,
                (None, Some(default)) => default.clone(),
                (None, None) => {
                    return Err(Error::InvalidArgument(format!(
                        "{}: option {} is required",
                        entry.name, doc.name
                    )))
                }
            };
            out.push(&doc.name, &text)?;
        }
        Ok((entry, out))
    }

    /// The text of option `key=value` of `entry` checked against its type
    /// and written canonically, with the specs it holds resolved through
    /// this registry ([`OptionValue::nested_specs`]).
    fn normalise(
        &self,
        entry: &Entry<B>,
        doc: &OptionDoc,
        key: &str,
        value: &str,
    ) -> Result<String> {
        let mut v = doc.value.clone_value();
        v.parse_text(value)
            .map_err(|expected| bad_value(&entry.name, key, value, &expected))?;
        for nested in v.nested_specs() {
            *nested = self.resolve(nested).map_err(|e| {
                Error::InvalidArgument(format!("{}: option {key}: {e}", entry.name))
            })?;
        }
        Ok(v.format_text())
    }

    /// `spec` resolved: the canonical name, then every option of the entry
    /// in its declared order with its effective value (the one given, or the
    /// default), written canonically; specs nested in a value (a
    /// sequence's schedulers) are resolved the same way, through this
    /// registry. The text can be pasted back: building from it gives the
    /// same component, and resolving it again gives it back unchanged.
    /// Values the builder derives from its arguments (a scheduler's total
    /// steps) stay as the entry writes them (`none`).
    pub fn resolve(&self, spec: &Spec) -> Result<Spec> {
        self.prepare(spec).map(|(_, s)| s)
    }

    /// Every entry, its aliases, summary and options with their defaults:
    /// the listing `kiln losses`, `kiln optimizers` and `kiln schedulers` print.
    ///
    /// ```text
    /// Losses (spec: NAME[:key=value,...]; ...)
    ///
    /// cross-entropy (CrossEntropyLoss)
    ///     log-softmax + negative log-likelihood
    ///     weight=none                     per-class weights, ;-separated (C values)
    /// ```
    pub fn describe(&self) -> String {
        let mut out = format!(
            "{} (spec: NAME[:key=value,...]; lists as a;b;c; a value holding , or ; goes in [brackets]; PyTorch's class and argument names work too)\n",
            self.title
        );
        // The left column of option and code-only lines, then at least two spaces.
        let column = |text: &str| {
            let pad = 32usize.saturating_sub(text.chars().count()).max(2);
            format!("{text}{}", " ".repeat(pad))
        };
        let header = |name: &str, aliases: &[String]| {
            if aliases.is_empty() {
                name.to_string()
            } else {
                format!("{name} ({})", aliases.join(", "))
            }
        };
        for e in &self.entries {
            out.push('\n');
            out.push_str(&header(&e.name, &e.aliases));
            out.push('\n');
            out.push_str(&format!("    {}\n", e.summary));
            for o in &e.options {
                let lhs = match &o.default {
                    Some(d) => format!("{}={d}", o.name),
                    None => format!("{} (required)", o.name),
                };
                let also = if o.aliases.is_empty() {
                    String::new()
                } else {
                    format!(" (also {})", o.aliases.join(", "))
                };
                out.push_str(&format!("    {}{}{also}\n", column(&lhs), o.help));
            }
        }
        if !self.code_only.is_empty() {
            out.push_str("\nBuilt from code only (no spec string):\n");
            for c in &self.code_only {
                out.push_str(&format!(
                    "    {}{}\n",
                    column(&header(&c.name, &c.aliases)),
                    c.summary
                ));
            }
        }
        out
    }
}

/// Documents the visited fields.
struct Collector {
    docs: Vec<OptionDoc>,
}

impl OptionVisitor for Collector {
    fn option(&mut self, info: OptionInfo, value: &mut dyn OptionValue) -> Result<()> {
        self.docs.push(OptionDoc {
            name: info.name.to_string(),
            aliases: info.aliases.iter().map(|a| a.to_string()).collect(),
            help: info.help.to_string(),
            default: (!info.required).then(|| value.format_text()),
            value: value.clone_value(),
        });
        Ok(())
    }
}
