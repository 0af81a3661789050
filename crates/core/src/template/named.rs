//! Named chat templates for models that ship without a Jinja template, mirroring LLaMA Factory's
//! `register_template(...)` entries in `src/llamafactory/data/template.py`.
//!
//! Each entry is a handful of slots, like LLaMA Factory's formatters, compiled into a Jinja
//! source by [`NamedTemplate::jinja_source`] and rendered through the same path as a model's own
//! template. The slots are Jinja expressions in which `content` is the text being formatted.
//!
//! Conventions shared by all of them:
//! - **No BOS in the text.** LLaMA Factory's `format_prefix` (`{"bos_token"}` for llama3, gemma
//!   and mistral) is left to the tokenizer, which adds BOS when encoding, so BOS is never
//!   doubled. EOS still appears where a format puts it inside a turn (mistral's assistant turns).
//! - LLaMA Factory appends the assistant header to every user and tool turn; here it is emitted
//!   before each assistant turn and, when `add_generation_prompt` is set, at the end. The text is
//!   identical for conversations that end with a generation prompt, and a conversation rendered
//!   without one ends after its last turn, as with Hugging Face templates.
//! - A leading `system` message (or the template's default system prompt) becomes a system turn,
//!   or is prefixed to the first user message for formats without a system role (LLaMA Factory's
//!   `Llama2Template`: gemma, mistral). A `tool` message is LLaMA Factory's observation turn.
//! - Tool definitions and other roles are rejected with an error rather than silently dropped.

use super::ToolFormat;

/// One LLaMA Factory template, as slots (Jinja expressions over `content`).
pub(super) struct NamedTemplate {
    pub(super) name: &'static str,
    /// Jinja string literal of LLaMA Factory's `default_system`, used when no system message is
    /// given.
    default_system: Option<&'static str>,
    /// The system text (`format_system`).
    system: &'static str,
    /// `true` for LLaMA Factory's `Llama2Template`: the formatted system text is prefixed to the
    /// first user message instead of being a turn of its own.
    system_in_first_user: bool,
    /// A user turn, without the assistant header LLaMA Factory appends to it.
    user: &'static str,
    /// What opens an assistant turn: the generation prompt.
    assistant_header: &'static str,
    /// The assistant turn after its header (`format_assistant`).
    assistant: &'static str,
    /// A `tool` result turn (`format_observation` without the assistant header).
    tool: &'static str,
    /// LLaMA Factory's `stop_words`: strings that end a turn besides the tokenizer's EOS.
    pub(super) stop_words: &'static [&'static str],
    /// The format ends assistant turns with the EOS token itself (mistral), which is then a
    /// stop string too.
    pub(super) stops_at_eos: bool,
    /// LLaMA Factory's `format_tools` / `format_function` tool format.
    pub(super) tool_format: ToolFormat,
}

pub(super) static NAMED_TEMPLATES: [NamedTemplate; 6] = [
    // LLaMA Factory `empty`: every slot is the bare content; for base-model completion.
    NamedTemplate {
        name: "empty",
        default_system: None,
        system: "content",
        system_in_first_user: false,
        user: "content",
        assistant_header: "''",
        assistant: "content",
        tool: "content",
        stop_words: &[],
        stops_at_eos: false,
        tool_format: ToolFormat::Default,
    },
    // LLaMA Factory `chatml`.
    NamedTemplate {
        name: "chatml",
        default_system: None,
        system: r"'<|im_start|>system\n' + content + '<|im_end|>\n'",
        system_in_first_user: false,
        user: r"'<|im_start|>user\n' + content + '<|im_end|>\n'",
        assistant_header: r"'<|im_start|>assistant\n'",
        assistant: r"content + '<|im_end|>\n'",
        tool: r"'<|im_start|>tool\n' + content + '<|im_end|>\n'",
        stop_words: &["<|im_end|>", "<|im_start|>"],
        stops_at_eos: false,
        tool_format: ToolFormat::Default,
    },
    // LLaMA Factory `qwen`: ChatML with Qwen's default system prompt and tool results wrapped in
    // a user turn.
    NamedTemplate {
        name: "qwen",
        default_system: Some(
            "'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.'",
        ),
        system: r"'<|im_start|>system\n' + content + '<|im_end|>\n'",
        system_in_first_user: false,
        user: r"'<|im_start|>user\n' + content + '<|im_end|>\n'",
        assistant_header: r"'<|im_start|>assistant\n'",
        assistant: r"content + '<|im_end|>\n'",
        tool: r"'<|im_start|>user\n<tool_response>\n' + content + '\n</tool_response><|im_end|>\n'",
        stop_words: &["<|im_end|>"],
        stops_at_eos: false,
        tool_format: ToolFormat::Qwen,
    },
    // LLaMA Factory `llama3`.
    NamedTemplate {
        name: "llama3",
        default_system: None,
        system: r"'<|start_header_id|>system<|end_header_id|>\n\n' + content + '<|eot_id|>'",
        system_in_first_user: false,
        user: r"'<|start_header_id|>user<|end_header_id|>\n\n' + content + '<|eot_id|>'",
        assistant_header: r"'<|start_header_id|>assistant<|end_header_id|>\n\n'",
        assistant: r"content + '<|eot_id|>'",
        tool: r"'<|start_header_id|>ipython<|end_header_id|>\n\n' + content + '<|eot_id|>'",
        stop_words: &["<|eot_id|>", "<|eom_id|>"],
        stops_at_eos: false,
        tool_format: ToolFormat::Llama3,
    },
    // LLaMA Factory `gemma` (a `Llama2Template`): no system role; the assistant is `model`.
    NamedTemplate {
        name: "gemma",
        default_system: None,
        system: r"content + '\n\n'",
        system_in_first_user: true,
        user: r"'<start_of_turn>user\n' + content + '<end_of_turn>\n'",
        assistant_header: r"'<start_of_turn>model\n'",
        assistant: r"content + '<end_of_turn>\n'",
        tool: r"'<start_of_turn>tool\n' + content + '<end_of_turn>\n'",
        stop_words: &["<end_of_turn>"],
        stops_at_eos: false,
        tool_format: ToolFormat::Default,
    },
    // LLaMA Factory `mistral` (a `Llama2Template`): `[INST] … [/INST]`, assistant turns are
    // ` {content}` + EOS.
    NamedTemplate {
        name: "mistral",
        default_system: None,
        system: r"content + '\n\n'",
        system_in_first_user: true,
        user: r"'[INST] ' + content + '[/INST]'",
        assistant_header: "''",
        assistant: "' ' + content + eos_token",
        tool: r#"'[TOOL_RESULTS] {"content": ' + content + '}[/TOOL_RESULTS]'"#,
        stop_words: &[],
        stops_at_eos: true,
        tool_format: ToolFormat::Mistral,
    },
];

impl NamedTemplate {
    /// The Jinja source this template renders with.
    pub(super) fn jinja_source(&self) -> String {
        let Self {
            name,
            system,
            user,
            assistant_header,
            assistant,
            tool,
            ..
        } = self;
        let default_system = self.default_system.unwrap_or("''");
        // Where the system text goes: its own turn, or a prefix the first user turn consumes.
        let (system_turn, first_user_prefix) = if self.system_in_first_user {
            (
                format!("{{%- set content = system %}}{{%- set ns.user_prefix = {system} %}}"),
                "{%- set content = ns.user_prefix + message.content %}{%- set ns.user_prefix = '' %}",
            )
        } else {
            (
                format!("{{%- set content = system %}}{{{{- {system} }}}}"),
                "",
            )
        };
        format!(
            r#"{{#- Named chat template `{name}`, mirroring LLaMA Factory's `{name}` template. -#}}
{{%- if tools %}}
    {{{{- raise_exception("the named chat template `{name}` does not support tool definitions") }}}}
{{%- endif %}}
{{%- set ns = namespace(user_prefix='') %}}
{{%- if messages and messages[0].role == 'system' %}}
    {{%- set system = messages[0].content %}}
    {{%- set loop_messages = messages[1:] %}}
{{%- else %}}
    {{%- set system = {default_system} %}}
    {{%- set loop_messages = messages %}}
{{%- endif %}}
{{%- if system %}}
    {system_turn}
{{%- endif %}}
{{%- for message in loop_messages %}}
    {{%- set content = message.content %}}
    {{%- if message.role == 'user' %}}
        {first_user_prefix}
        {{{{- {user} }}}}
    {{%- elif message.role == 'assistant' %}}
        {{{{- {assistant_header} + {assistant} }}}}
    {{%- elif message.role == 'tool' %}}
        {{{{- {tool} }}}}
    {{%- else %}}
        {{{{- raise_exception("the named chat template `{name}` does not support the role `" ~ message.role ~ "`") }}}}
    {{%- endif %}}
{{%- endfor %}}
{{%- if add_generation_prompt %}}
    {{{{- {assistant_header} }}}}
{{%- endif %}}
"#
        )
    }
}
