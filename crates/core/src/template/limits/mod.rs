//! Bounds on rendering: a chat template comes from a model file and is code, so a hostile or
//! broken one must end in a [`TemplateError::LimitExceeded`](super::TemplateError) naming the
//! limit, never in a hang, a stack overflow or an out-of-memory abort.
//!
//! - [`FUEL`]: minijinja instructions per render (an endless or enormous loop);
//! - [`MAX_RECURSION`]: minijinja's recursion depth (macros calling themselves, deep nesting);
//! - [`MAX_OUTPUT_BYTES`]: bytes a render writes, counting text captured by `{% set %}` blocks,
//!   macro calls and `tojson`;
//! - [`MAX_TEMPLATE_BYTES`]: the template source, which also bounds the literal text one
//!   instruction can emit;
//! - [`MAX_WIDTH`]: the size arguments of the builtins that allocate that many items or spaces
//!   up front (`indent`, `batch`, `slice`, widths and precisions in `format` / `str.format`,
//!   `tojson(indent=...)`), which would otherwise abort the process in one step.
//!
//! Each limit is at least a hundred times what real templates use (the fixtures' templates
//! render a 200-turn conversation with tools in under 1% of [`FUEL`]).
//!
//! What minijinja gives no hook to bound (jinja2's sandbox does not bound them either):
//! - intermediate strings: one repetition (`'x' * n`) is capped at 100 MB, but a chain of
//!   concatenations (`{% set ns.s = ns.s ~ ns.s %}` in a loop) doubles a string per step;
//! - value nesting: `{% set ns.x = [ns.x] %}` in a loop nests as deep as the fuel allows, and
//!   minijinja drops and prints values recursively: past ~50k levels on a 2 MB thread stack
//!   the process overflows its stack. `tojson` refuses nesting beyond [`MAX_RECURSION`].

use std::fmt;
use std::io;

use minijinja::value::{Rest, Value, ValueOrKwargs};
use minijinja::{Environment, Error, ErrorKind, Output, State};

/// Instructions one render may execute: a fraction of a second of minijinja time.
pub const FUEL: u64 = 10_000_000;
/// minijinja's recursion limit (its own default, the deepest it validates as stack-safe).
pub const MAX_RECURSION: usize = 500;
/// Bytes one render may produce, including captured text: far beyond any context window.
pub const MAX_OUTPUT_BYTES: usize = 64 << 20;
/// Bytes of template source accepted (real templates are under 50 KB).
pub const MAX_TEMPLATE_BYTES: usize = 1 << 20;
/// Largest width, precision, indent or count a builtin may be asked to allocate.
pub const MAX_WIDTH: usize = 100_000;

/// Which bound a template ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Fuel,
    Recursion,
    Output,
    TemplateSize,
    Width,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Fuel => write!(f, "fuel of {FUEL} instructions (an endless loop?)"),
            Limit::Recursion => write!(f, "recursion limit of {MAX_RECURSION}"),
            Limit::Output => write!(f, "output limit of {MAX_OUTPUT_BYTES} bytes"),
            Limit::TemplateSize => write!(f, "source size limit of {MAX_TEMPLATE_BYTES} bytes"),
            Limit::Width => write!(f, "limit of {MAX_WIDTH} on a width, indent or count"),
        }
    }
}

/// The error a limit raises inside minijinja, kept as the error's source.
#[derive(Debug)]
struct Exceeded(Limit);

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exceeded the {}", self.0)
    }
}

impl std::error::Error for Exceeded {}

pub(super) fn exceeded(limit: Limit) -> Error {
    Error::new(ErrorKind::InvalidOperation, Exceeded(limit).to_string()).with_source(Exceeded(limit))
}

/// The limit behind a render error, if one is.
pub(super) fn limit_of(err: &Error) -> Option<Limit> {
    match err.kind() {
        ErrorKind::OutOfFuel => Some(Limit::Fuel),
        ErrorKind::InvalidOperation if err.detail() == Some("recursion limit exceeded") => {
            Some(Limit::Recursion)
        }
        _ => super::find_source::<Exceeded>(err).map(|e| e.0),
    }
}

/// Applies every limit to `env` (before any template is added).
pub(super) fn bound(env: &mut Environment<'static>) {
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(MAX_RECURSION);
    env.set_formatter(counting_formatter);
    env.set_unknown_method_callback(|state, value, method, args| {
        if method == "format" {
            if let Some(format) = value.as_str() {
                check_format(format, false)?;
            }
        }
        minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
    });
    guard_builtin(env, "indent", Value::from_function(minijinja::filters::indent));
    guard_builtin(env, "batch", Value::from_function(minijinja::filters::batch));
    guard_builtin(env, "slice", Value::from_function(minijinja::filters::slice));
    let format = Value::from_function(minijinja::filters::format);
    env.add_filter("format", move |state: &mut State, args: Rest<ValueOrKwargs>| {
        let args = args.into_values();
        if let Some(spec) = args.first().and_then(Value::as_str) {
            check_format(spec, true)?;
        }
        format.call(state, &args)
    });
}

/// Replaces the builtin filter `name` by one that first checks its size arguments.
fn guard_builtin(env: &mut Environment<'static>, name: &'static str, builtin: Value) {
    env.add_filter(name, move |state: &mut State, args: Rest<ValueOrKwargs>| {
        let args = args.into_values();
        // The first argument is the value filtered, whatever its size.
        check_sizes(&args[1.min(args.len())..])?;
        builtin.call(state, &args)
    });
}

/// Refuses integer arguments (also keyword ones) above [`MAX_WIDTH`].
fn check_sizes(args: &[Value]) -> Result<(), Error> {
    let too_big = |v: &Value| i64::try_from(v.clone()).is_ok_and(|n| n > MAX_WIDTH as i64);
    for arg in args {
        if too_big(arg) {
            return Err(exceeded(Limit::Width));
        }
        if arg.is_kwargs() {
            for key in arg.try_iter()? {
                if too_big(&arg.get_item(&key)?) {
                    return Err(exceeded(Limit::Width));
                }
            }
        }
    }
    Ok(())
}

/// Refuses a format string (printf-style, else `str.format`) whose widths or precisions
/// exceed [`MAX_WIDTH`] or come from the arguments (`%*d`, `{:{}}`). Conservative: every
/// digit run in a conversion spec counts as a width.
fn check_format(format: &str, printf: bool) -> Result<(), Error> {
    let (open, bytes) = (if printf { b'%' } else { b'{' }, format.as_bytes());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != open || bytes.get(i + 1) == Some(&open) {
            i += if bytes[i] == open { 2 } else { 1 };
            continue;
        }
        let rest = &bytes[i + 1..];
        let len = if printf {
            rest.iter().position(u8::is_ascii_alphabetic)
        } else {
            rest.iter().position(|&b| b == b'}')
        }
        .unwrap_or(rest.len());
        let spec = &rest[..len];
        let dynamic = spec.contains(&b'*') || (!printf && spec.contains(&b'{'));
        let too_wide = spec
            .split(|b| !b.is_ascii_digit())
            .any(|run| run.len() > 6 || run.iter().fold(0, |n, d| n * 10 + usize::from(d - b'0')) > MAX_WIDTH);
        if dynamic || too_wide {
            return Err(exceeded(Limit::Width));
        }
        i += len + 1;
    }
    Ok(())
}

/// Bytes written so far in this render by [`counting_formatter`].
struct Written(usize);

/// minijinja's formatter without autoescape (what `{{ value }}` writes), counting the bytes of
/// every value written, also into captures, against [`MAX_OUTPUT_BYTES`]; formatting a huge
/// value stops as soon as it passes the limit.
fn counting_formatter(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    let written = state.get_or_insert_extension(Written(0)).0;
    let mut buf = Bounded { text: String::new(), room: MAX_OUTPUT_BYTES.saturating_sub(written) };
    let text = match value.as_str() {
        Some(s) if s.len() <= buf.room => s,
        Some(_) => return Err(exceeded(Limit::Output)),
        None => {
            fmt::write(&mut buf, format_args!("{value}")).map_err(|_| exceeded(Limit::Output))?;
            &buf.text
        }
    };
    out.write_str(text).map_err(Error::from)?;
    state.get_or_insert_extension(Written(0)).0 = written + text.len();
    Ok(())
}

/// A string that refuses to grow past `room` bytes.
struct Bounded {
    text: String,
    room: usize,
}

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.text.len() + s.len() > self.room {
            return Err(fmt::Error);
        }
        self.text.push_str(s);
        Ok(())
    }
}

/// The render's output buffer: fails the render once it would pass [`MAX_OUTPUT_BYTES`]
/// (literal template text is written here without going through the formatter).
#[derive(Default)]
pub(super) struct OutputBuffer {
    pub(super) bytes: Vec<u8>,
    pub(super) overflowed: bool,
}

impl io::Write for OutputBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_OUTPUT_BYTES {
            self.overflowed = true;
            return Err(io::Error::other(Exceeded(Limit::Output)));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
