//! The `tojson` filter exactly as transformers defines it: Python's
//! `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
//!
//! minijinja's built-in `tojson` cannot stand in for it: it HTML-escapes `<`, `>`, `&` and `'`
//! (tool schemas and chat markup are full of those) and prints floats the Rust way, while the
//! rendered prompt has to match Python byte for byte.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Error, ErrorKind};

use super::limits::{exceeded, Limit, MAX_OUTPUT_BYTES, MAX_RECURSION, MAX_WIDTH};

/// Filter entry point. Options are keyword-only (`tojson(indent=4)`), as every known chat
/// template passes them.
pub(super) fn tojson(value: &Value, kwargs: Kwargs) -> Result<String, Error> {
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let indent = kwargs
        .get::<Option<Value>>("indent")?
        .map(indent_unit)
        .transpose()?
        .flatten();
    let separators = kwargs.get::<Option<Vec<String>>>("separators")?;
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    kwargs.assert_all_used()?;

    // Python's defaults: the item separator loses its space when indenting.
    let (item_sep, key_sep) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "tojson: separators must be a pair (item_separator, key_separator)",
            ))
        }
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let mut dumper = Dumper {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
        out: String::new(),
    };
    dumper.value(value, 0)?;
    Ok(dumper.out)
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)` for a JSON value, as LLaMA
/// Factory's tool formatters write tool schemas and calls. Fails only on what Python would
/// reject too (nothing a parsed JSON value can hold).
pub(super) fn dumps(value: &serde_json::Value, indent: Option<usize>) -> Result<String, Error> {
    let mut dumper = Dumper {
        ensure_ascii: false,
        indent: indent.map(|n| " ".repeat(n)),
        item_sep: if indent.is_some() { "," } else { ", " }.to_owned(),
        key_sep: ": ".to_owned(),
        sort_keys: false,
        out: String::new(),
    };
    dumper.value(&Value::from(minijinja::value::Serde(value)), 0)?;
    Ok(dumper.out)
}

/// Python accepts an int (that many spaces; negative means none) or a string for `indent`;
/// `None` means single-line output. Up to [`MAX_WIDTH`] characters.
fn indent_unit(indent: Value) -> Result<Option<String>, Error> {
    match indent.kind() {
        ValueKind::None | ValueKind::Undefined => Ok(None),
        ValueKind::String if indent.as_str().map_or(0, str::len) > MAX_WIDTH => Err(exceeded(Limit::Width)),
        ValueKind::String => Ok(indent.as_str().map(str::to_owned)),
        // bool is an int in Python
        ValueKind::Bool => Ok(Some(if indent.is_true() {
            " ".to_owned()
        } else {
            String::new()
        })),
        _ => {
            let n = usize::try_from(i64::try_from(indent)?).unwrap_or(0);
            if n > MAX_WIDTH {
                return Err(exceeded(Limit::Width));
            }
            Ok(Some(" ".repeat(n)))
        }
    }
}

struct Dumper {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
    out: String,
}

impl Dumper {
    /// Writes `v`; nesting deeper than [`MAX_RECURSION`] or output past [`MAX_OUTPUT_BYTES`]
    /// is refused (Python's own encoder has a recursion limit too).
    fn value(&mut self, v: &Value, depth: usize) -> Result<(), Error> {
        if depth > MAX_RECURSION {
            return Err(exceeded(Limit::Recursion));
        }
        if self.out.len() > MAX_OUTPUT_BYTES {
            return Err(exceeded(Limit::Output));
        }
        match v.kind() {
            ValueKind::None => self.out.push_str("null"),
            ValueKind::Bool => self
                .out
                .push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number => self.number(v)?,
            ValueKind::String => self.string(v.as_str().unwrap_or_default()),
            ValueKind::Seq | ValueKind::Iterable => {
                self.container(('[', ']'), v.try_iter()?, depth, |d, item, depth| {
                    d.value(&item, depth)
                })?;
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in v.try_iter()? {
                    let item = v.get_item(&key)?;
                    entries.push((key_string(&key)?, item));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.container(('{', '}'), entries, depth, |d, (key, item), depth| {
                    d.string(&key);
                    let sep = d.key_sep.clone();
                    d.out.push_str(&sep);
                    d.value(&item, depth)
                })?;
            }
            kind => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: object of type {kind} is not JSON serializable"),
                ))
            }
        }
        Ok(())
    }

    /// Layout shared by arrays and objects, following CPython's encoder: empty containers are
    /// `[]`/`{}`; with an indent every element sits on its own line, one level deeper.
    fn container<T>(
        &mut self,
        (open, close): (char, char),
        items: impl IntoIterator<Item = T>,
        depth: usize,
        mut write_item: impl FnMut(&mut Self, T, usize) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.out.push(open);
        let mut items = items.into_iter().peekable();
        if items.peek().is_none() {
            self.out.push(close);
            return Ok(());
        }
        let newline = |unit: &str, level: usize| format!("\n{}", unit.repeat(level));
        let (first, separator) = match &self.indent {
            Some(unit) => {
                let nl = newline(unit, depth + 1);
                (nl.clone(), format!("{}{nl}", self.item_sep))
            }
            None => (String::new(), self.item_sep.clone()),
        };
        self.out.push_str(&first);
        for (i, item) in items.enumerate() {
            if i > 0 {
                self.out.push_str(&separator);
            }
            write_item(self, item, depth + 1)?;
        }
        if let Some(unit) = &self.indent {
            let nl = newline(unit, depth);
            self.out.push_str(&nl);
        }
        self.out.push(close);
        Ok(())
    }

    fn number(&mut self, v: &Value) -> Result<(), Error> {
        if v.is_integer() {
            let _ = write!(self.out, "{v}");
        } else {
            self.out
                .push_str(&python_float_repr(f64::try_from(v.clone())?));
        }
        Ok(())
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                '\u{8}' => self.out.push_str("\\b"),
                '\u{c}' => self.out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && (c as u32) > 0x7e) => {
                    // Python escapes as UTF-16 code units, lowercase hex.
                    for unit in c.encode_utf16(&mut [0; 2]) {
                        let _ = write!(self.out, "\\u{unit:04x}");
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}

/// Python converts non-string dict keys the way it prints the scalar itself.
fn key_string(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_owned()),
        ValueKind::None => Ok("null".to_owned()),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_owned()),
        ValueKind::Number if key.is_integer() => Ok(key.to_string()),
        ValueKind::Number => Ok(python_float_repr(f64::try_from(key.clone())?)),
        kind => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: keys must be str, int, float, bool or None, not {kind}"),
        )),
    }
}

/// `float.__repr__`: the shortest round-tripping digits, positional notation for decimal
/// exponents in [-4, 16), scientific (`1e+16`, `1.5e-05`) outside, and a `.0` on integral
/// values. JSON spellings of the non-finite values are Python's (`NaN`, `Infinity`).
pub(super) fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust's `{:e}` yields the same shortest digits as Python, e.g. "-1.25e-7".
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa
        .strip_prefix('-')
        .map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{int}.{frac}")
        };
        format!("{sign}{body}")
    } else {
        let (head, tail) = digits.split_at(1);
        let frac = if tail.is_empty() {
            String::new()
        } else {
            format!(".{tail}")
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{head}{frac}e{exp_sign}{:02}", exp.unsigned_abs())
    }
}
