//! The one quoting rule of spec text: square brackets group.
//!
//! `,` ends an option and `;` ends a list item only outside brackets, and
//! brackets nest, so a value can hold either: `path=[data/a,b.safetensors]`,
//! `schedulers=[linear:total_iters=5;cosine:t_max=10]`. A value or list item
//! written inside one pair of brackets that enclose all of it reads as the
//! text inside (`[0.5]` is `0.5`, `[1;2]` the list `1;2`, `[]` the empty
//! list). Printing adds brackets exactly where this reading needs them, so
//! printed text parses back to the same value. Brackets inside a value must
//! balance: that is the one thing a value cannot hold.
use crate::{Error, Result};

/// The pieces of `text` between the `separator`s that lie outside brackets,
/// each trimmed (`a,[b,c],d` split at `,` is `a`, `[b,c]`, `d`). Errors on
/// a `]` that closes nothing or a `[` left open.
pub fn split_outside_brackets(text: &str, separator: char) -> Result<Vec<&str>> {
    let unbalanced = || {
        Error::InvalidArgument(format!(
            "'{text}' has unbalanced brackets: [ and ] group text holding ',' or ';' and must pair up"
        ))
    };
    let mut pieces = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1).ok_or_else(unbalanced)?,
            c if c == separator && depth == 0 => {
                pieces.push(text.get(start..i).unwrap_or_default().trim());
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(unbalanced());
    }
    pieces.push(text.get(start..).unwrap_or_default().trim());
    Ok(pieces)
}

/// `text` (trimmed) without one pair of brackets that enclose all of it:
/// `[a,b]` is `a,b`, `[[1;2]]` is `[1;2]`; `[a];[b]` and unbracketed text
/// come back unchanged. How every value reads its text.
pub fn unbracket(text: &str) -> &str {
    let text = text.trim();
    if wholly_bracketed(text) {
        text.get(1..text.len() - 1).unwrap_or(text)
    } else {
        text
    }
}

/// Whether `text` starts with a `[` whose matching `]` is its last character.
fn wholly_bracketed(text: &str) -> bool {
    if !text.starts_with('[') {
        return false;
    }
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1 == text.len();
                }
            }
            _ => {}
        }
    }
    false
}

/// Whether every `]` in `text` closes a `[` and every `[` is closed.
pub(crate) fn balanced(text: &str) -> bool {
    split_outside_brackets(text, '\0').is_ok()
}

/// Whether `separator` occurs in `text` outside brackets.
fn separates(text: &str, separator: char) -> bool {
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            c if c == separator && depth == 0 => return true,
            _ => {}
        }
    }
    false
}

/// `text` as it must be written where `separator` would end it: in
/// brackets if it holds `separator` outside brackets, unchanged otherwise
/// (a value in a spec, with `,`; an item of a list, with `;`).
pub(crate) fn bracket_for(text: &str, separator: char) -> String {
    if separates(text, separator) {
        format!("[{text}]")
    } else {
        text.to_string()
    }
}

/// `text` as a value whose reading removes one enclosing pair of brackets
/// ([`unbracket`]) writes it: in brackets if that reading would change it
/// (it is wholly bracketed itself, or has spaces at either end).
pub(crate) fn protect(text: &str) -> String {
    if wholly_bracketed(text) || text.trim() != text {
        format!("[{text}]")
    } else {
        text.to_string()
    }
}
