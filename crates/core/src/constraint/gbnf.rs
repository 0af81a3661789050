//! llama.cpp's GBNF grammars (a request's `grammar` field) translated into the Lark syntax
//! llguidance compiles, so a GBNF grammar constrains decoding as a `response_format` does.
//!
//! GBNF, as llama.cpp's grammar parser reads it: rules `name ::= alternatives` (names of
//! `a-z A-Z 0-9 -`; `root` is the start), alternatives separated by `|`, sequences of string
//! literals `"..."`, character classes `[a-z]` / `[^...]`, `.` (any character), rule names
//! and parenthesized groups, each optionally repeated by `*`, `+`, `?`, `{m}`, `{m,}`,
//! `{m,n}` or `{,n}`; `#` starts a comment; a newline ends a rule except inside parentheses
//! or right after `|` or `::=`. Escapes in literals and classes: `\x..`, `\u....`,
//! `\U........`, `\t`, `\r`, `\n`, `\\`, `\"`, `\[`, `\]` (and `\-`, `\^` in classes).
//! Token references (`<[id]>`) are not supported.
//!
//! Invariants of the translation: every GBNF rule becomes a Lark rule (lower-case names, so
//! Lark never treats one as a lexer terminal, which could not recurse): `root` becomes `start`,
//! any other name `r-` followed by the name with each upper-case letter `X` written `_x`
//! (GBNF names have no `_`, so distinct names stay distinct). Literals become JSON-escaped
//! Lark strings, classes and `.` single-character regexes whose non-alphanumeric characters
//! are all written `\x{..}`, so no GBNF text reaches Lark unescaped. A reference to an
//! undefined rule, a missing `root`, a rule defined twice, a repetition above
//! [`MAX_REPEAT`] or nesting deeper than [`MAX_NESTING`] are errors here, with the line.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Largest bound of a `{m,n}` repetition (llguidance expands repetitions).
pub const MAX_REPEAT: u32 = 1024;
/// Deepest nesting of parenthesized groups (the parser recurses per level).
pub const MAX_NESTING: usize = 64;

/// Why a GBNF grammar could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("GBNF line {line}: {message}")]
pub struct GbnfError {
    pub line: usize,
    pub message: String,
}

/// The Lark grammar equivalent to a GBNF grammar.
pub fn to_lark(gbnf: &str) -> Result<String, GbnfError> {
    let mut parser = Parser { src: gbnf, pos: 0, depth: 0 };
    let rules = parser.grammar()?;
    if !rules.contains_key("root") {
        return Err(GbnfError { line: 1, message: "the grammar has no `root` rule (its start)".into() });
    }
    let mut out = String::new();
    for (name, (line, alts)) in &rules {
        check_refs(alts, &rules, *line)?;
        let _ = writeln!(out, "{}: {}", lark_name(name), print_alts(alts));
    }
    Ok(out)
}

/// One element of a sequence.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    Literal(String),
    /// `[...]`: inclusive ranges, and whether the class is negated.
    Class { negated: bool, ranges: Vec<(char, char)> },
    Any,
    Rule(String),
    Group(Vec<Vec<Node>>),
    Repeat { node: Box<Node>, min: u32, max: Option<u32> },
}

type Alternatives = Vec<Vec<Node>>;

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn error(&self, message: impl Into<String>) -> GbnfError {
        GbnfError { line: self.src[..self.pos].matches('\n').count() + 1, message: message.into() }
    }

    /// Skips blanks and comments, and newlines where `newlines` (inside a group, after `|`).
    fn space(&mut self, newlines: bool) {
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' => self.pos += 1,
                '\r' | '\n' if newlines => self.pos += 1,
                '#' => {
                    let end = self.src[self.pos..].find('\n').map_or(self.src.len(), |i| self.pos + i);
                    self.pos = end;
                }
                _ => break,
            }
        }
    }

    fn grammar(&mut self) -> Result<BTreeMap<String, (usize, Alternatives)>, GbnfError> {
        let mut rules = BTreeMap::new();
        self.space(true);
        while self.peek().is_some() {
            let line = self.error("").line;
            let name = self.name()?;
            self.space(false);
            if !self.src[self.pos..].starts_with("::=") {
                return Err(self.error(format!("expected `::=` after the rule name `{name}`")));
            }
            self.pos += 3;
            self.space(true);
            let alts = self.alternatives(false)?;
            match self.peek() {
                None | Some('\r' | '\n') => {}
                Some(c) => return Err(self.error(format!("unexpected `{c}` in rule `{name}`"))),
            }
            if rules.insert(name.clone(), (line, alts)).is_some() {
                return Err(self.error(format!("rule `{name}` is defined twice")));
            }
            self.space(true);
        }
        Ok(rules)
    }

    fn name(&mut self) -> Result<String, GbnfError> {
        let len = self.src[self.pos..].find(|c: char| !is_name_char(c)).unwrap_or(self.src.len() - self.pos);
        if len == 0 {
            let found = self.peek().map_or("the end".to_string(), |c| format!("`{c}`"));
            return Err(self.error(format!("expected a rule name, found {found}")));
        }
        let name = self.src[self.pos..self.pos + len].to_string();
        self.pos += len;
        Ok(name)
    }

    fn alternatives(&mut self, nested: bool) -> Result<Alternatives, GbnfError> {
        let mut alts = vec![self.sequence(nested)?];
        while self.peek() == Some('|') {
            self.pos += 1;
            self.space(true);
            alts.push(self.sequence(nested)?);
        }
        Ok(alts)
    }

    fn sequence(&mut self, nested: bool) -> Result<Vec<Node>, GbnfError> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            let mut node = match c {
                '"' => {
                    self.pos += 1;
                    self.literal()?
                }
                '[' => {
                    self.pos += 1;
                    self.class()?
                }
                '.' => {
                    self.pos += 1;
                    Node::Any
                }
                '(' => {
                    self.pos += 1;
                    self.group()?
                }
                c if is_name_char(c) => Node::Rule(self.name()?),
                _ => break,
            };
            self.space(nested);
            while let Some((min, max)) = self.repetition()? {
                node = Node::Repeat { node: Box::new(node), min, max };
                self.space(nested);
            }
            items.push(node);
        }
        Ok(items)
    }

    fn group(&mut self) -> Result<Node, GbnfError> {
        if self.depth == MAX_NESTING {
            return Err(self.error(format!("groups nest deeper than {MAX_NESTING} levels")));
        }
        self.depth += 1;
        self.space(true);
        let alts = self.alternatives(true)?;
        self.depth -= 1;
        if self.bump() != Some(')') {
            return Err(self.error("expected `)` to close a group"));
        }
        Ok(Node::Group(alts))
    }

    /// A postfix operator's bounds, if one follows.
    fn repetition(&mut self) -> Result<Option<(u32, Option<u32>)>, GbnfError> {
        let bounds = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => {
                let end = self.src[self.pos..].find('}').ok_or_else(|| self.error("expected `}` to close `{`"))?;
                let body = &self.src[self.pos + 1..self.pos + end];
                let bounds = self.bounds(body)?;
                self.pos += end;
                bounds
            }
            _ => return Ok(None),
        };
        self.pos += 1;
        Ok(Some(bounds))
    }

    fn bounds(&self, body: &str) -> Result<(u32, Option<u32>), GbnfError> {
        let number = |s: &str| -> Result<u32, GbnfError> {
            let n: u32 = s.trim().parse().map_err(|_| self.error(format!("`{{{body}}}`: `{s}` is not a count")))?;
            if n > MAX_REPEAT {
                return Err(self.error(format!("`{{{body}}}`: a repetition is at most {MAX_REPEAT}")));
            }
            Ok(n)
        };
        let (min, max) = match body.split_once(',') {
            None => (number(body)?, Some(number(body)?)),
            Some((min, max)) => {
                let min = if min.trim().is_empty() { 0 } else { number(min)? };
                (min, if max.trim().is_empty() { None } else { Some(number(max)?) })
            }
        };
        if max.is_some_and(|max| max < min) {
            return Err(self.error(format!("`{{{body}}}`: the maximum is below the minimum")));
        }
        Ok((min, max))
    }

    fn literal(&mut self) -> Result<Node, GbnfError> {
        let mut text = String::new();
        loop {
            match self.bump() {
                None => return Err(self.error("unterminated string literal")),
                Some('"') => return Ok(Node::Literal(text)),
                Some('\\') => text.push(self.escape(false)?),
                Some(c) => text.push(c),
            }
        }
    }

    fn class(&mut self) -> Result<Node, GbnfError> {
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        loop {
            let start = match self.bump() {
                None => return Err(self.error("unterminated character class")),
                Some(']') if !ranges.is_empty() => return Ok(Node::Class { negated, ranges }),
                Some(']') => return Err(self.error("an empty character class `[]` matches nothing")),
                Some('\\') => self.escape(true)?,
                Some(c) => c,
            };
            let end = if self.src[self.pos..].starts_with('-') && !self.src[self.pos..].starts_with("-]") {
                self.pos += 1;
                match self.bump() {
                    Some('\\') => self.escape(true)?,
                    Some(c) => c,
                    None => return Err(self.error("unterminated character class")),
                }
            } else {
                start
            };
            if end < start {
                return Err(self.error(format!("character range `{start}-{end}` is reversed")));
            }
            ranges.push((start, end));
        }
    }

    /// The character an escape (after its `\`) stands for.
    fn escape(&mut self, in_class: bool) -> Result<char, GbnfError> {
        let hex = |p: &mut Self, digits: usize| -> Result<char, GbnfError> {
            let text = p.src.get(p.pos..p.pos + digits).filter(|t| t.chars().all(|c| c.is_ascii_hexdigit()));
            let text = text.ok_or_else(|| p.error(format!("expected {digits} hex digits in an escape")))?;
            p.pos += digits;
            let code = u32::from_str_radix(text, 16).map_err(|e| p.error(e.to_string()))?;
            char::from_u32(code).ok_or_else(|| p.error(format!("escape `{text}` is not a character")))
        };
        match self.bump() {
            Some('x') => hex(self, 2),
            Some('u') => hex(self, 4),
            Some('U') => hex(self, 8),
            Some('t') => Ok('\t'),
            Some('r') => Ok('\r'),
            Some('n') => Ok('\n'),
            Some(c @ ('\\' | '"' | '[' | ']')) => Ok(c),
            Some(c @ ('-' | '^')) if in_class => Ok(c),
            Some(c) => Err(self.error(format!("unknown escape `\\{c}`"))),
            None => Err(self.error("an escape at the end of the grammar")),
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

fn lark_name(name: &str) -> String {
    if name == "root" {
        return "start".into();
    }
    let mut out = String::from("r-");
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn check_refs(alts: &Alternatives, rules: &BTreeMap<String, (usize, Alternatives)>, line: usize) -> Result<(), GbnfError> {
    fn walk(node: &Node, rules: &BTreeMap<String, (usize, Alternatives)>, line: usize) -> Result<(), GbnfError> {
        match node {
            Node::Rule(name) if !rules.contains_key(name) => {
                Err(GbnfError { line, message: format!("rule `{name}` is used but not defined") })
            }
            Node::Group(alts) => alts.iter().flatten().try_for_each(|n| walk(n, rules, line)),
            Node::Repeat { node, .. } => walk(node, rules, line),
            _ => Ok(()),
        }
    }
    alts.iter().flatten().try_for_each(|n| walk(n, rules, line))
}

fn print_alts(alts: &Alternatives) -> String {
    let seqs: Vec<String> = alts
        .iter()
        .map(|seq| match seq.as_slice() {
            // An empty alternative matches the empty string.
            [] => "\"\"".to_string(),
            seq => seq.iter().map(print_node).collect::<Vec<_>>().join(" "),
        })
        .collect();
    seqs.join(" | ")
}

fn print_node(node: &Node) -> String {
    match node {
        Node::Literal(text) => serde_json::Value::String(text.clone()).to_string(),
        Node::Class { negated, ranges } => {
            let mut out = String::from(if *negated { "/[^" } else { "/[" });
            for &(start, end) in ranges {
                push_class_char(&mut out, start);
                if end != start {
                    out.push('-');
                    push_class_char(&mut out, end);
                }
            }
            out.push_str("]/");
            out
        }
        Node::Any => "/./s".into(),
        Node::Rule(name) => lark_name(name),
        Node::Group(alts) => format!("({})", print_alts(alts)),
        Node::Repeat { node, min, max } => {
            let inner = match &**node {
                Node::Group(alts) => print_alts(alts),
                node => print_node(node),
            };
            match (min, max) {
                (0, None) => format!("({inner})*"),
                (1, None) => format!("({inner})+"),
                (0, Some(1)) => format!("({inner})?"),
                (min, None) => format!("({inner}){{{min},}}"),
                (min, Some(max)) => format!("({inner}){{{min},{max}}}"),
            }
        }
    }
}

fn push_class_char(out: &mut String, c: char) {
    if c.is_ascii_alphanumeric() {
        out.push(c);
    } else {
        let _ = write!(out, "\\x{{{:x}}}", c as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_names_literals_and_classes_translate() {
        let lark = to_lark("root ::= \"a\\\"b\" [a-z0-9_]+ json-Value # comment\njson-Value ::= [^\"\\\\] | ( \"x\" | \"y\" ){2,3}\n").expect("translates");
        assert_eq!(
            lark,
            "r-json-_value: /[^\\x{22}\\x{5c}]/ | (\"x\" | \"y\"){2,3}\nstart: \"a\\\"b\" (/[a-z0-9\\x{5f}]/)+ r-json-_value\n"
        );
    }

    #[test]
    fn newlines_end_rules_except_inside_groups_and_after_bars() {
        let lark = to_lark("root ::= (\n  \"a\"\n  | \"b\" ) x? |\n  \"c\"\nx ::= . {1,}").expect("translates");
        assert_eq!(lark, "start: (\"a\" | \"b\") (r-x)? | \"c\"\nr-x: (/./s)+\n");
    }

    #[test]
    fn bad_grammars_name_the_line_and_the_problem() {
        let cases = [
            ("root ::= x", "rule `x` is used but not defined"),
            ("start ::= \"a\"", "no `root` rule"),
            ("root ::= \"a\"\nroot ::= \"b\"", "defined twice"),
            ("root ::= \"a", "unterminated string"),
            ("root ::= [a", "unterminated character class"),
            ("root ::= []", "empty character class"),
            ("root ::= [z-a]", "reversed"),
            ("root ::= \"a\"{5000}", "at most 1024"),
            ("root ::= \"a\"{3,1}", "below the minimum"),
            ("root ::= (\"a\"", "expected `)`"),
            ("root = \"a\"", "expected `::=`"),
            ("root ::= \"\\q\"", "unknown escape"),
            ("root ::= \"\\uD800\"", "not a character"),
            ("root ::= \"a\" )", "unexpected `)`"),
        ];
        for (gbnf, wanted) in cases {
            let e = to_lark(gbnf).expect_err("an error");
            assert!(e.to_string().contains(wanted), "{gbnf:?}: {e}");
        }
        assert_eq!(to_lark("\n\nroot ::= \"a\"\nb ::= c").expect_err("an error").line, 4);
        let deep = format!("root ::= {}\"a\"{}", "(".repeat(100), ")".repeat(100));
        assert!(to_lark(&deep).expect_err("an error").message.contains("deeper than 64"));
    }
}
