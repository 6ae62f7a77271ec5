//! A config's options: [`Options`], visited by readers, writers and documenters.
use super::{OptionValue, Spec};
use crate::{Error, Result};

/// How a config names, documents and constrains one option for an
/// [`OptionVisitor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionInfo {
    /// The canonical key (`t_max`).
    pub name: &'static str,
    /// Other accepted keys, e.g. PyTorch's argument name (`T_max`).
    pub aliases: &'static [&'static str],
    /// One line on what it does.
    pub help: &'static str,
    /// Whether a spec must give it (no default).
    pub required: bool,
}

impl OptionInfo {
    /// An optional option `name` described by `help`.
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            aliases: &[],
            help,
            required: false,
        }
    }

    /// The same option, also accepted under `aliases`.
    pub const fn aliases(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    /// The same option, without a default: a spec must give it.
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }
}

/// Receives a config's options one by one (see [`Options`]).
pub trait OptionVisitor {
    /// One option: how it is named and documented, and the field holding it.
    fn option(&mut self, info: OptionInfo, value: &mut dyn OptionValue) -> Result<()>;
}

/// A config whose fields are spec options: it visits each field once, in
/// the order specs list them. Reading a spec ([`Spec::apply`]), writing one
/// ([`Spec::from_config`]) and documenting the options with the config's
/// current values as defaults ([`OptionDoc::collect`](super::OptionDoc::collect)) all come from this one
/// visit.
pub trait Options {
    /// Calls `visitor.option(info, &mut field)` for each option.
    fn options(&mut self, visitor: &mut dyn OptionVisitor) -> Result<()>;
}

/// Reads a spec into the visited fields.
pub(super) struct Reader<'s> {
    pub(super) spec: &'s mut Spec,
    pub(super) accepted: Vec<&'static str>,
}

impl OptionVisitor for Reader<'_> {
    fn option(&mut self, info: OptionInfo, value: &mut dyn OptionValue) -> Result<()> {
        self.accepted.push(info.name);
        let mut given = std::iter::once(info.name)
            .chain(info.aliases.iter().copied())
            .filter(|k| self.spec.contains(k));
        let Some(key) = given.next() else {
            if info.required {
                return Err(Error::InvalidArgument(format!(
                    "{}: option {} is required",
                    self.spec.name, info.name
                )));
            }
            return Ok(());
        };
        if let Some(other) = given.next() {
            return Err(Error::InvalidArgument(format!(
                "{}: option {} is given twice (as {key} and {other})",
                self.spec.name, info.name
            )));
        }
        let text = self.spec.raw(key).unwrap_or_default();
        value
            .parse_text(&text)
            .map_err(|expected| self.spec.bad(key, &text, &expected))
    }
}

/// Writes the visited fields into a spec.
pub(super) struct Writer<'s> {
    pub(super) spec: &'s mut Spec,
}

impl OptionVisitor for Writer<'_> {
    fn option(&mut self, info: OptionInfo, value: &mut dyn OptionValue) -> Result<()> {
        self.spec.set(info.name, value.format_text())
    }
}
