//! Walking toml's spanned document, one section at a time.
//!
//! A [`Section`] owns one table of the document. Readers *take* each key
//! they know, converting its value with a small converter; a wrong type or
//! value is recorded as a problem at the value's span and the reader gets a
//! [`Field::Invalid`] (with the key's span, for cross-field checks) instead
//! of a value. When the reader is done, [`Section::finish`] reports every
//! key nobody took as unknown, with a "did you mean" hint. Because nothing
//! stops at the first problem, one pass finds them all.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::problem::Collector;
use crate::values::{self, quote};

/// A byte range in the source text.
pub(crate) type Span = Range<usize>;

/// A converter's complaint: where, and what (without the key path, which
/// [`Section::field`] adds).
pub(crate) type Bad = (Span, String);

/// What a converter returns: the value, or every problem with it.
pub(crate) type Conv<T> = Result<T, Vec<Bad>>;

/// Every section and its keys, for "unknown key" hints ("did you mean",
/// "it belongs in [x]"). [`Section::take`] checks in debug builds that
/// readers only take keys listed here.
pub(crate) const SCHEMA: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "identity", "state", "control", "dbus", "link", "mail", "announce", "listen", "peer",
            "service",
        ],
    ),
    ("identity", &["name", "key_file"]),
    ("state", &["dir"]),
    ("control", &["socket", "mode", "group"]),
    ("dbus", &["bus"]),
    (
        "link",
        &[
            "driver",
            "interface",
            "families",
            "idle_hangup",
            "on_demand",
            "check_interval",
            "max_failures",
            "pppd",
            "peer",
            "device",
            "baud",
            "number",
            "init",
        ],
    ),
    ("mail", &["address", "smtp", "incoming"]),
    (
        "mail.smtp",
        &[
            "host",
            "port",
            "security",
            "username",
            "password",
            "password_file",
            "password_command",
            "ca_file",
        ],
    ),
    (
        "mail.incoming",
        &[
            "protocol",
            "host",
            "port",
            "security",
            "username",
            "password",
            "password_file",
            "password_command",
            "ca_file",
            "poll_interval",
            "folders",
            "max_message_size",
            "processed",
        ],
    ),
    (
        "announce",
        &[
            "on_change",
            "valid_for",
            "debounce",
            "publish",
            "ipv6",
            "resend",
            "max_per_hour",
            "clock_skew",
            "hooks_dir",
        ],
    ),
    (
        "listen",
        &["port", "addresses", "keepalive", "idle_timeout"],
    ),
    (
        "peer",
        &[
            "name",
            "email",
            "public_key",
            "announce",
            "auto_connect",
            "accept_unsigned",
            "format",
        ],
    ),
    ("service", &["name", "target", "peers"]),
];

/// Sections written as arrays of tables (`[[peer]]`).
const ARRAYS: &[&str] = &["peer", "service"];

fn schema_keys(section: &str) -> &'static [&'static str] {
    SCHEMA
        .iter()
        .find(|(name, _)| *name == section)
        .map_or(&[], |(_, keys)| keys)
}

/// How a section is named in messages: `[mail.smtp]`, `[[peer]]`.
pub(crate) fn header(section: &str) -> String {
    if ARRAYS.contains(&section) {
        format!("[[{section}]]")
    } else {
        format!("[{section}]")
    }
}

/// One key's outcome.
#[derive(Debug)]
pub(crate) enum Field<T> {
    /// Not in the file.
    Missing,
    /// In the file, but wrong (already reported); the key's span.
    Invalid(Span),
    /// In the file and valid.
    Given(Given<T>),
}

/// A valid value with where it was written.
#[derive(Debug)]
pub(crate) struct Given<T> {
    /// The value.
    pub value: T,
    /// The key's span (for cross-field problems about this key).
    pub key: Span,
    /// The value's span.
    pub at: Span,
}

impl<T> Field<T> {
    /// Whether the key was written at all (valid or not).
    pub(crate) fn present(&self) -> bool {
        !matches!(self, Self::Missing)
    }

    /// The key's span, if the key was written.
    pub(crate) fn key(&self) -> Option<Span> {
        match self {
            Self::Missing => None,
            Self::Invalid(k) => Some(k.clone()),
            Self::Given(g) => Some(g.key.clone()),
        }
    }

    /// The value, if valid.
    pub(crate) fn value(&self) -> Option<&T> {
        match self {
            Self::Given(g) => Some(&g.value),
            _ => None,
        }
    }

    /// The given value, or `default` when missing or invalid (an invalid
    /// value has been reported, so the config will be refused anyway; the
    /// default only keeps the remaining checks going).
    pub(crate) fn or(self, default: T) -> T {
        self.into_value().unwrap_or(default)
    }

    /// Like [`Field::or`], with a default that is made only when needed.
    pub(crate) fn or_else(self, default: impl FnOnce() -> T) -> T {
        self.into_value().unwrap_or_else(default)
    }

    /// The value, if valid.
    pub(crate) fn into_value(self) -> Option<T> {
        match self {
            Self::Given(g) => Some(g.value),
            _ => None,
        }
    }

    /// The value and key span, if valid.
    pub(crate) fn given(&self) -> Option<&Given<T>> {
        match self {
            Self::Given(g) => Some(g),
            _ => None,
        }
    }

    /// Converts a valid value, keeping the spans.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Field<U> {
        match self {
            Self::Missing => Field::Missing,
            Self::Invalid(k) => Field::Invalid(k),
            Self::Given(g) => Field::Given(Given {
                value: f(g.value),
                key: g.key,
                at: g.at,
            }),
        }
    }
}

/// One table of the document, with the keys not yet taken.
pub(crate) struct Section<'i> {
    /// `""` for the top level, `"mail.smtp"`, `"peer"`.
    name: &'static str,
    /// Where "missing key" problems point: the header, or the parent's
    /// header when the section is absent (the top level is 1:1).
    pub span: Span,
    table: DeTable<'i>,
    /// The section was of the wrong type (reported): no "missing key"
    /// problems for it.
    broken: bool,
}

impl<'i> Section<'i> {
    /// The whole document.
    pub(crate) fn root(doc: Spanned<DeTable<'i>>) -> Self {
        Self {
            name: "",
            span: doc.span(),
            table: doc.into_inner(),
            broken: false,
        }
    }

    fn empty(name: &'static str, span: Span, broken: bool) -> Self {
        Self {
            name,
            span,
            table: DeTable::new(),
            broken,
        }
    }

    /// `` `mail.smtp.host` ``: a key as messages name it.
    pub(crate) fn path(&self, key: &str) -> String {
        if self.name.is_empty() {
            format!("`{key}`")
        } else {
            format!("`{}.{key}`", self.name)
        }
    }

    /// Removes a known key from the table.
    fn take(&mut self, key: &'static str) -> Option<(Span, Spanned<DeValue<'i>>)> {
        debug_assert!(
            schema_keys(self.name).contains(&key),
            "{key} is not in SCHEMA for [{}]",
            self.name
        );
        self.table.remove_entry(key).map(|(k, v)| (k.span(), v))
    }

    /// Takes `key` and converts its value; problems are reported with the
    /// key path.
    pub(crate) fn field<T>(
        &mut self,
        c: &mut Collector<'_>,
        key: &'static str,
        conv: impl FnOnce(&Spanned<DeValue<'i>>) -> Conv<T>,
    ) -> Field<T> {
        let Some((key_span, value)) = self.take(key) else {
            return Field::Missing;
        };
        match conv(&value) {
            Ok(v) => Field::Given(Given {
                value: v,
                key: key_span,
                at: value.span(),
            }),
            Err(problems) => {
                let path = self.path(key);
                for (span, msg) in problems {
                    c.error(span, format!("{path}: {msg}"));
                }
                Field::Invalid(key_span)
            },
        }
    }

    /// Reports a required key that is missing (not one that is invalid:
    /// that was reported already), and passes the value on.
    pub(crate) fn required<T>(
        &self,
        c: &mut Collector<'_>,
        key: &str,
        field: Field<T>,
    ) -> Option<T> {
        if matches!(field, Field::Missing) && !self.broken {
            c.error(
                self.span.clone(),
                format!("missing required key `{key}` in {}", header(self.name)),
            );
        }
        field.into_value()
    }

    /// Takes a sub-table (`[mail.smtp]` inside `[mail]`, or a section at
    /// the top level). A missing one is an empty section.
    pub(crate) fn table(&mut self, c: &mut Collector<'_>, key: &'static str) -> Section<'i> {
        let name = child_name(self.name, key);
        let Some((key_span, value)) = self.take(key) else {
            return Section::empty(name, self.span.clone(), self.broken);
        };
        let span = value.span();
        match value.into_inner() {
            DeValue::Table(table) => Section {
                name,
                span,
                table,
                broken: false,
            },
            DeValue::Array(_) => {
                c.error(
                    key_span.clone(),
                    format!(
                        "`{name}` must be a single table: write {}, once",
                        header(name)
                    ),
                );
                Section::empty(name, key_span, true)
            },
            other => {
                c.error(
                    span,
                    format!(
                        "`{name}` must be a table ({}), found {}",
                        header(name),
                        kind(&other)
                    ),
                );
                Section::empty(name, key_span, true)
            },
        }
    }

    /// Takes an array of tables (`[[peer]]`). A single `[peer]` table is
    /// reported, then read as one entry so its other problems show too.
    pub(crate) fn tables(&mut self, c: &mut Collector<'_>, key: &'static str) -> Vec<Section<'i>> {
        let name = child_name(self.name, key);
        let Some((_, value)) = self.take(key) else {
            return Vec::new();
        };
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(items) => items
                .into_iter()
                .filter_map(|item| {
                    let span = item.span();
                    match item.into_inner() {
                        DeValue::Table(table) => Some(Section {
                            name,
                            span,
                            table,
                            broken: false,
                        }),
                        other => {
                            c.error(
                                span,
                                format!("each `{name}` must be a table, found {}", kind(&other)),
                            );
                            None
                        },
                    }
                })
                .collect(),
            DeValue::Table(table) => {
                c.error(
                    span.clone(),
                    format!("write [[{name}]] (one per {name}), not [{name}]"),
                );
                vec![Section {
                    name,
                    span,
                    table,
                    broken: false,
                }]
            },
            other => {
                c.error(
                    span,
                    format!(
                        "`{name}` must be written as [[{name}]] tables, found {}",
                        kind(&other)
                    ),
                );
                Vec::new()
            },
        }
    }

    /// Reports every key nobody took.
    pub(crate) fn finish(self, c: &mut Collector<'_>) {
        for (key, value) in self.table {
            let k = key.get_ref().as_ref();
            let shown = show_key(k);
            let message = if value.get_ref().is_table() && !ARRAYS.contains(&k) {
                let full = child_name_owned(self.name, k);
                let mut m = format!("unknown section [{}]", show_key(&full));
                if let Some(s) = similar(k, schema_keys(self.name)) {
                    m.push_str(&format!(
                        "; did you mean {}?",
                        header(&child_name_owned(self.name, s))
                    ));
                }
                m
            } else if self.name.is_empty() {
                let homes: Vec<String> = SCHEMA
                    .iter()
                    .filter(|(s, keys)| !s.is_empty() && keys.contains(&k))
                    .map(|(s, _)| header(s))
                    .collect();
                if homes.is_empty() {
                    match similar(k, schema_keys("")) {
                        Some(s) => format!("unknown key `{shown}`; did you mean {}?", header(s)),
                        None => format!(
                            "unknown key `{shown}`: keys belong in a section such as [identity]"
                        ),
                    }
                } else {
                    format!(
                        "`{shown}` must be inside a section: it belongs in {}",
                        or_list(&homes)
                    )
                }
            } else {
                let mut m = format!("unknown key `{shown}` in {}", header(self.name));
                if let Some(s) = similar(k, schema_keys(self.name)) {
                    m.push_str(&format!("; did you mean `{s}`?"));
                } else {
                    let homes: Vec<String> = SCHEMA
                        .iter()
                        .filter(|(s, keys)| !s.is_empty() && *s != self.name && keys.contains(&k))
                        .map(|(s, _)| header(s))
                        .collect();
                    if !homes.is_empty() {
                        m.push_str(&format!("; it belongs in {}", or_list(&homes)));
                    }
                }
                m
            };
            // A `[header]` table is reported at its `[` (before the key);
            // anything else, inline tables included, at its key.
            let start = key.span().start.min(value.span().start);
            c.error(start..key.span().end, message);
        }
    }
}

fn child_name(parent: &str, key: &'static str) -> &'static str {
    // Names come from SCHEMA, so the joined name is one of its entries.
    let full = child_name_owned(parent, key);
    SCHEMA
        .iter()
        .map(|(n, _)| *n)
        .find(|n| *n == full)
        .unwrap_or(key)
}

fn child_name_owned(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn or_list(items: &[String]) -> String {
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// A key as messages show it: escaped and cut short (keys can be any
/// quoted string).
fn show_key(k: &str) -> String {
    let q = quote(k);
    q[1..q.len() - 1].to_owned()
}

/// The known key closest to `k`, if close enough to be a typo
/// (`pasword`, `key-file`, `Port`).
fn similar(k: &str, known: &[&'static str]) -> Option<&'static str> {
    let norm = k.to_ascii_lowercase().replace('-', "_");
    let limit = (norm.chars().count() / 3).clamp(1, 2);
    known
        .iter()
        .map(|s| (values::edit_distance(&norm, s), *s))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, s)| s)
}

/// "a string", "an integer", ... for type errors.
pub(crate) fn kind(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn wrong<T>(v: &Spanned<DeValue<'_>>, expected: &str) -> Conv<T> {
    Err(vec![(
        v.span(),
        format!("expected {expected}, found {}", kind(v.get_ref())),
    )])
}

/// Converters for [`Section::field`].
pub(crate) mod conv {
    use super::*;

    /// A string, checked by `check`.
    pub(crate) fn string<T>(
        v: &Spanned<DeValue<'_>>,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Conv<T> {
        match v.get_ref() {
            DeValue::String(s) => check(s).map_err(|m| vec![(v.span(), m)]),
            _ => wrong(v, "a string"),
        }
    }

    /// A string that must not be shown in any message (a password).
    pub(crate) fn secret(v: &Spanned<DeValue<'_>>) -> Conv<zeroize::Zeroizing<String>> {
        match v.get_ref() {
            DeValue::String(s) if s.is_empty() => {
                Err(vec![(v.span(), "the password is empty".to_owned())])
            },
            DeValue::String(s) => Ok(zeroize::Zeroizing::new(s.to_string())),
            _ => wrong(v, "a string"),
        }
    }

    /// `true` or `false`.
    pub(crate) fn boolean(v: &Spanned<DeValue<'_>>) -> Conv<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Ok(*b),
            DeValue::String(s) if s.as_ref() == "true" || s.as_ref() == "false" => Err(vec![(
                v.span(),
                format!("expected a boolean, found a string: write {s} without quotes"),
            )]),
            _ => wrong(v, "true or false"),
        }
    }

    /// An integer as written (any radix), if it fits in i64.
    fn raw_integer(v: &Spanned<DeValue<'_>>) -> Conv<i64> {
        match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| vec![(v.span(), "the number is too large".to_owned())]),
            DeValue::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                Err(vec![(
                    v.span(),
                    format!("expected an integer, found a string: write {s} without quotes"),
                )])
            },
            _ => wrong(v, "an integer"),
        }
    }

    /// An integer in `min..=max`.
    pub(crate) fn integer<T: TryFrom<i64>>(
        v: &Spanned<DeValue<'_>>,
        min: i64,
        max: i64,
    ) -> Conv<T> {
        let n = raw_integer(v)?;
        if n < min || n > max {
            return Err(vec![(
                v.span(),
                format!("{n} is out of range: use {min} to {max}"),
            )]);
        }
        T::try_from(n).map_err(|_| vec![(v.span(), format!("{n} is out of range"))])
    }

    /// An integer checked by `check` (for values with their own rule).
    pub(crate) fn integer_with<T>(
        v: &Spanned<DeValue<'_>>,
        check: impl FnOnce(i64) -> Result<T, String>,
    ) -> Conv<T> {
        let n = raw_integer(v)?;
        check(n).map_err(|m| vec![(v.span(), m)])
    }

    /// A duration string in `min..=max`.
    pub(crate) fn duration(
        v: &Spanned<DeValue<'_>>,
        min: Duration,
        max: Duration,
    ) -> Conv<Duration> {
        let d = match v.get_ref() {
            DeValue::String(s) => values::duration(s).map_err(|m| vec![(v.span(), m)])?,
            DeValue::Integer(i) => {
                return Err(vec![(
                    v.span(),
                    format!(
                        "expected a duration string like \"30s\" or \"5m\", found an integer: write \"{}s\" for seconds",
                        i.as_str()
                    ),
                )]);
            },
            _ => return wrong(v, "a duration string like \"30s\" or \"5m\""),
        };
        if d < min || d > max {
            let range = if max == Duration::MAX {
                format!("at least {}", values::show_duration(min))
            } else if min.is_zero() {
                format!("at most {}", values::show_duration(max))
            } else {
                format!(
                    "between {} and {}",
                    values::show_duration(min),
                    values::show_duration(max)
                )
            };
            return Err(vec![(
                v.span(),
                format!("{} is out of range: use {range}", values::show_duration(d)),
            )]);
        }
        Ok(d)
    }

    /// A size string (`"256KiB"`) or a number of bytes.
    pub(crate) fn size(v: &Spanned<DeValue<'_>>) -> Conv<u64> {
        match v.get_ref() {
            DeValue::String(s) => values::size(s).map_err(|m| vec![(v.span(), m)]),
            DeValue::Integer(_) => {
                let n = raw_integer(v)?;
                u64::try_from(n)
                    .map_err(|_| vec![(v.span(), "a size cannot be negative".to_owned())])
            },
            _ => wrong(v, "a size like \"256KiB\""),
        }
    }

    /// A permission mode: a string `"0660"`, or a TOML octal integer
    /// `0o660`. A decimal integer is refused (660 is not 0660).
    pub(crate) fn mode(v: &Spanned<DeValue<'_>>) -> Conv<u32> {
        match v.get_ref() {
            DeValue::String(s) => values::mode(s).map_err(|m| vec![(v.span(), m)]),
            DeValue::Integer(i) if i.radix() == 8 => {
                let n = raw_integer(v)?;
                u32::try_from(n)
                    .map_err(|e| e.to_string())
                    .and_then(values::check_mode)
                    .map_err(|m| vec![(v.span(), m)])
            },
            DeValue::Integer(i) => Err(vec![(
                v.span(),
                format!(
                    "write the mode as an octal string, like \"0{}\" (a decimal number is not a mode)",
                    i.as_str()
                ),
            )]),
            _ => wrong(v, "an octal mode string like \"0660\""),
        }
    }

    /// An array of strings, each checked by `check`; every bad element is
    /// reported. Returns each value with its span.
    pub(crate) fn list<T>(
        v: &Spanned<DeValue<'_>>,
        mut check: impl FnMut(&str) -> Result<T, String>,
    ) -> Conv<Vec<(T, Span)>> {
        let DeValue::Array(items) = v.get_ref() else {
            return match v.get_ref() {
                DeValue::String(s) => Err(vec![(
                    v.span(),
                    format!("expected an array, found a string: write [{}]", quote(s)),
                )]),
                _ => wrong(v, "an array of strings"),
            };
        };
        let mut out = Vec::with_capacity(items.len());
        let mut bad = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => match check(s) {
                    Ok(t) => out.push((t, item.span())),
                    Err(m) => bad.push((item.span(), m)),
                },
                other => bad.push((
                    item.span(),
                    format!("expected a string, found {}", kind(other)),
                )),
            }
        }
        if bad.is_empty() { Ok(out) } else { Err(bad) }
    }

    /// Like [`list`], and also refuses an empty list and duplicates
    /// (reported at the second occurrence).
    pub(crate) fn set<T: PartialEq>(
        v: &Spanned<DeValue<'_>>,
        check: impl FnMut(&str) -> Result<T, String>,
    ) -> Conv<Vec<(T, Span)>> {
        let items = list(v, check)?;
        if items.is_empty() {
            return Err(vec![(
                v.span(),
                "the list is empty: give at least one value".to_owned(),
            )]);
        }
        let dups: Vec<Bad> = items
            .iter()
            .enumerate()
            .filter(|(i, (t, _))| items[..*i].iter().any(|(u, _)| u == t))
            .map(|(_, (_, span))| (span.clone(), "listed twice".to_owned()))
            .collect();
        if dups.is_empty() {
            Ok(items)
        } else {
            Err(dups)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_sections_are_unique_and_arrays_are_known() {
        for (i, (name, keys)) in SCHEMA.iter().enumerate() {
            assert!(SCHEMA[..i].iter().all(|(n, _)| n != name), "{name}");
            for (j, k) in keys.iter().enumerate() {
                assert!(!keys[..j].contains(k), "{name}.{k}");
            }
        }
        for a in ARRAYS {
            assert!(schema_keys("").contains(a));
        }
    }

    #[test]
    fn typo_hints() {
        let keys = schema_keys("mail.smtp");
        assert_eq!(similar("pasword", keys), Some("password"));
        assert_eq!(similar("password-file", keys), Some("password_file"));
        assert_eq!(similar("Port", keys), Some("port"));
        assert_eq!(similar("hostname", keys), None);
        assert_eq!(similar("x", keys), None);
        assert_eq!(similar("peers", schema_keys("")), Some("peer"));
    }
}
