//! OpenAI's `tool_choice`, and the grammar that forces a tool call in a [`ToolFormat`].
//!
//! `"none"` and `"auto"` constrain nothing (whether a reply's calls are extracted is the front
//! end's business). `"required"` and a named function (`{"type": "function", "function":
//! {"name": …}}`) are enforced by constrained decoding: [`ToolFormat::call_grammar`] writes a
//! Lark grammar (llguidance's dialect, see [`crate::constraint`]) that admits only calls written
//! exactly as [`ToolFormat::render_calls`] writes them, each call's arguments embedded as the
//! tool's `parameters` JSON schema (`%json {…}`). So a reply that ends with "stop" is, for
//! [`ToolFormat::parse`] given the tools' names, nothing but calls to the offered tools whose
//! arguments validate against their schemas.
//!
//! The shapes of the calls are listed at [`ToolChoice`].
//!
//! With [`CallRules`], OpenAI's two other knobs: `parallel_tool_calls: false` admits one call
//! where `"required"` admits several, and a structured-output schema for text replies makes
//! `"auto"` a grammar too (either the calls, or JSON valid against the schema), while a forced
//! call is the whole reply and the schema waits for a later text turn.
//!
//! Invariants: the JSON has the fixed separators `", "` and `": "` and no other whitespace (as
//! [`ToolFormat::render_calls`] writes it, and so a small model cannot spin in whitespace); a
//! tool's `parameters` must describe an object (absent means no arguments: `{}`).

use serde_json::{json, Value as Json};

use super::{
    is_function_wrapper, is_name_char, ToolError, ToolFormat, ACTION, ACTION_INPUT, MISTRAL_MARKER, QWEN_CLOSE,
    QWEN_OPEN,
};

/// OpenAI's `tool_choice` request field: `"none"`, `"auto"`, `"required"`, or
/// `{"type": "function", "function": {"name": …}}` (that function, exactly once).
///
/// What a forcing choice admits, by format ([`ToolFormat::call_grammar`]):
///
/// | format | `"required"`: one or more calls | named function: exactly one call |
/// |---|---|---|
/// | `qwen` | `<tool_call>\n{"name": …, "arguments": {…}}\n</tool_call>`, joined by `\n` | one block |
/// | `llama3` | `{"name": …, "parameters": {…}}`, or a list `[…, …]` for several | one object |
/// | `mistral` | `[TOOL_CALLS] [{"name": …, "arguments": {…}}, …]` | a list of one |
/// | `default` | `Action: name\nAction Input: {…}`, joined by `\n` | one pair |
///
/// Markers are written as text: a tokenizer that has them as control tokens (Mistral's
/// `[TOOL_CALLS]`) spells them out, which [`ToolFormat::parse`] reads the same way.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Json", into = "Json")]
pub enum ToolChoice {
    /// The model must not call tools.
    None,
    /// The model may call tools (OpenAI's default when tools are given).
    Auto,
    /// The model must call one or more of the tools.
    Required,
    /// The model must call this function, once.
    Function(String),
}

impl ToolChoice {
    /// Whether this choice constrains decoding (`required` or a named function).
    pub fn forces_call(&self) -> bool {
        matches!(self, Self::Required | Self::Function(_))
    }
}

impl TryFrom<Json> for ToolChoice {
    type Error = String;

    fn try_from(value: Json) -> Result<Self, String> {
        let shape = || {
            format!(
                "tool_choice must be \"none\", \"auto\", \"required\" or {{\"type\": \"function\", \"function\": \
                 {{\"name\": …}}}}, got {value}"
            )
        };
        match &value {
            Json::String(s) => match s.as_str() {
                "none" => Ok(Self::None),
                "auto" => Ok(Self::Auto),
                "required" => Ok(Self::Required),
                _ => Err(shape()),
            },
            Json::Object(o) if o.get("type").and_then(Json::as_str) == Some("function") => {
                match o.get("function").and_then(|f| f.get("name")).and_then(Json::as_str) {
                    Some(name) => Ok(Self::Function(name.to_owned())),
                    None => Err(shape()),
                }
            }
            _ => Err(shape()),
        }
    }
}

impl From<ToolChoice> for Json {
    fn from(choice: ToolChoice) -> Json {
        match choice {
            ToolChoice::None => json!("none"),
            ToolChoice::Auto => json!("auto"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Function(name) => json!({"type": "function", "function": {"name": name}}),
        }
    }
}

/// What else shapes the reply besides `tool_choice` (OpenAI's request fields).
#[derive(Debug, Clone, Copy, Default)]
pub struct CallRules<'a> {
    /// `parallel_tool_calls: false`: at most one call per reply.
    pub single_call: bool,
    /// The JSON schema a text reply must follow (`response_format`), with its layout options:
    /// under `"auto"` the reply is either calls or such JSON.
    pub text_schema: Option<&'a Json>,
}

/// One offered function, as the grammar needs it.
struct Function {
    name: String,
    /// The `parameters` schema, an object schema with llguidance's layout options added.
    schema: Json,
}

impl ToolFormat {
    /// The Lark grammar that admits only the calls `choice` forces, in this format (see the
    /// module doc); `None` when it forces nothing (`none`, `auto`). `tools` are the request's
    /// JSON-schema definitions (`{"type": "function", "function": {…}}` or the bare function).
    ///
    /// Errors: a tool without a name or with `parameters` that do not describe an object
    /// ([`ToolError::Definition`]); `"required"` without tools, a named function that is not
    /// among them, a name the `default` format cannot write ([`ToolError::Choice`]).
    ///
    /// Under `rules`: `"required"` admits one call only when `rules.single_call`; `"auto"`
    /// with tools and a `rules.text_schema` admits the calls (one if `single_call`) or JSON
    /// valid against the schema; `"auto"` without a schema and `"none"` give `None`.
    pub fn call_grammar(self, tools: &[Json], choice: &ToolChoice, rules: CallRules<'_>) -> Result<Option<String>, ToolError> {
        let text = match (choice, rules.text_schema) {
            (ToolChoice::Auto, Some(schema)) if !tools.is_empty() => Some(schema),
            _ if choice.forces_call() => None,
            _ => return Ok(None),
        };
        let offered = tools.iter().enumerate().map(|(i, t)| function_of(i, t)).collect::<Result<Vec<_>, _>>()?;
        let (functions, several) = match choice {
            ToolChoice::Function(name) => match offered.into_iter().find(|f| &f.name == name) {
                Some(f) => (vec![f], false),
                None => {
                    let names: Vec<String> = tools.iter().filter_map(|t| name_of(t).map(str::to_owned)).collect();
                    return Err(ToolError::Choice(format!(
                        "function {name:?} is not among the tools ({})",
                        if names.is_empty() { "none given".to_owned() } else { names.join(", ") }
                    )));
                }
            },
            _ if offered.is_empty() => {
                return Err(ToolError::Choice("\"required\" needs at least one tool in `tools`".into()))
            }
            _ => (offered, !rules.single_call),
        };
        if self == Self::Default {
            if let Some(f) = functions.iter().find(|f| f.name.is_empty() || !f.name.chars().all(is_name_char)) {
                return Err(ToolError::Choice(format!(
                    "the default tool format writes names of a-z, A-Z, 0-9, _ and - only, not {:?}",
                    f.name
                )));
            }
        }
        let mut grammar = self.grammar(&functions, several);
        if let Some(schema) = text {
            // The calls' start rule becomes one alternative, the schema's JSON the other.
            grammar = grammar.replacen("start: ", "calls: ", 1);
            grammar.insert_str(0, &format!("start: calls | text\ntext: %json {schema}\n"));
        }
        Ok(Some(grammar))
    }

    fn grammar(self, functions: &[Function], several: bool) -> String {
        let key = if self == Self::Llama3 { "parameters" } else { "arguments" };
        let mut rules = Vec::new();
        // `body`: one call's JSON object (or, for `default`, its `Action` pair); one rule per
        // function, its arguments the function's schema.
        let mut bodies = Vec::new();
        for (i, f) in functions.iter().enumerate() {
            let (head, tail) = match self {
                Self::Default => (format!("{ACTION} {}\n{ACTION_INPUT} ", f.name), String::new()),
                _ => {
                    let name = serde_json::to_string(&f.name).expect("a string serializes");
                    (format!("{{\"name\": {name}, \"{key}\": "), "}".to_owned())
                }
            };
            rules.push(format!("args_{i}: %json {}", f.schema));
            let tail = if tail.is_empty() { String::new() } else { format!(" {}", lit(&tail)) };
            bodies.push(format!("body_{i}"));
            rules.push(format!("body_{i}: {} args_{i}{tail}", lit(&head)));
        }
        rules.push(format!("body: {}", bodies.join(" | ")));
        let start = match (self, several) {
            (Self::Qwen, _) => {
                rules.push(format!("call: {} body {}", lit(&format!("{QWEN_OPEN}\n")), lit(&format!("\n{QWEN_CLOSE}"))));
                if several { r#"call ("\n" call)*"# } else { "call" }
            }
            (Self::Default, true) => r#"body ("\n" body)*"#,
            (Self::Default | Self::Llama3, false) => "body",
            (Self::Llama3, true) => r#"body | "[" body (", " body)* "]""#,
            (Self::Mistral, _) => {
                rules.push(format!("open: {}", lit(&format!("{MISTRAL_MARKER} ["))));
                if several { r#"open body (", " body)* "]""# } else { r#"open body "]""# }
            }
        };
        rules.insert(0, format!("start: {start}"));
        rules.join("\n")
    }
}

/// A Lark string literal for `text` (Lark reads JSON escapes).
fn lit(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

fn name_of(tool: &Json) -> Option<&str> {
    let function = if is_function_wrapper(tool) { tool.get("function")? } else { tool };
    function.get("name")?.as_str()
}

/// Tool `index`'s name and arguments schema.
fn function_of(index: usize, tool: &Json) -> Result<Function, ToolError> {
    let error = |message: &str| ToolError::Definition { index, message: message.to_owned() };
    let function = if is_function_wrapper(tool) {
        tool.get("function").ok_or_else(|| error("`function` is missing"))?
    } else {
        tool
    };
    let name = name_of(tool).ok_or_else(|| error("the function has no `name` string"))?.to_owned();
    let mut schema = match function.get("parameters") {
        // No parameters: the function takes no arguments.
        None | Some(Json::Null) => json!({"type": "object", "properties": {}, "additionalProperties": false}),
        Some(Json::Object(o)) => Json::Object(o.clone()),
        Some(_) => return Err(error("`parameters` must be a JSON schema object")),
    };
    let map = schema.as_object_mut().expect("an object");
    match map.get("type") {
        None => {
            map.insert("type".into(), json!("object"));
        }
        Some(t) if t == "object" => {}
        Some(t) => return Err(error(&format!("`parameters` must describe an object, not type {t}"))),
    }
    map.entry("x-guidance")
        .or_insert_with(|| json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}));
    Ok(Function { name, schema })
}
