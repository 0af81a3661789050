//! Named chat templates for models that ship without a Jinja template (or to override one),
//! mirroring LLaMA Factory's `register_template(...)` entries in `src/llamafactory/data/template.py`.
//!
//! Each entry is a handful of slots, like LLaMA Factory's formatters, compiled into a Jinja
//! source by [`NamedTemplate::jinja_source`] and rendered through the same path as a model's own
//! template. The slots are Jinja expressions in which `content` is the text being formatted.
//! Slots an entry leaves out take LLaMA Factory's defaults ([`LF_DEFAULTS`]).
//!
//! Conventions shared by all of them:
//! - **No BOS at the start of the text.** LLaMA Factory's `format_prefix` (`{"bos_token"}` for
//!   llama3, gemma, mistral, deepseek) and llama2's BOS before the first user turn are left to
//!   the tokenizer, which adds BOS when encoding, so BOS is never doubled. BOS and EOS still
//!   appear where a format puts them inside the conversation (llama2's later user turns, EOS
//!   closing assistant turns).
//! - LLaMA Factory appends the assistant header to every user and tool turn; here it is emitted
//!   before each assistant turn and, when `add_generation_prompt` is set, at the end. The text is
//!   identical for conversations that alternate (as LLaMA Factory requires) and end with a
//!   generation prompt; a conversation rendered without one ends after its last turn, as with
//!   Hugging Face templates.
//! - A leading `system` message (or the template's default system prompt) becomes a system turn,
//!   or is prefixed to the first message when that is a user message, for formats without a
//!   system role (LLaMA Factory's `Llama2Template`: llama2, gemma, mistral). A `tool` message is
//!   LLaMA Factory's observation turn.
//! - Tools, as LLaMA Factory does it: tool definitions are written by the template's
//!   [`ToolFormat`] and appended to the system text (`format_tools(tools, date_string)`); an
//!   assistant message with `tool_calls` is written from its calls alone (`format_tool_calls`,
//!   its text content dropped, as LLaMA Factory's API drops it) in the `function` slot.
//! - Reasoning templates (LLaMA Factory's `ReasoningTemplate`: qwen3, deepseekr1) remove the
//!   `<think>` blocks of earlier assistant turns (`remove_thought`) and, with
//!   `enable_thinking=false`, close an empty thinking block after the generation prompt.
//! - Other roles are rejected with an error rather than silently dropped.

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
    /// An assistant turn made of tool calls, after its header (`format_function`); `None`: the
    /// `assistant` slot.
    function: Option<&'static str>,
    /// A `tool` result turn (`format_observation` without the assistant header); `None`: the
    /// `user` slot.
    tool: Option<&'static str>,
    /// LLaMA Factory's `stop_words`: strings that end a turn besides the tokenizer's EOS.
    pub(super) stop_words: &'static [&'static str],
    /// LLaMA Factory's `format_tools`.
    pub(super) tool_format: ToolFormat,
    /// LLaMA Factory's `ReasoningTemplate` (thought words `<think>\n`, `\n</think>\n\n`).
    reasoning: bool,
}

/// What `register_template` uses for the slots an entry does not give: the bare content for
/// system, user and tool turns, assistant turns closed by EOS, the default tool format.
const LF_DEFAULTS: NamedTemplate = NamedTemplate {
    name: "",
    default_system: None,
    system: "content",
    system_in_first_user: false,
    user: "content",
    assistant_header: "''",
    assistant: "content + eos_token",
    function: None,
    tool: None,
    stop_words: &[],
    tool_format: ToolFormat::Default,
    reasoning: false,
};

const CHATML_SYSTEM: &str = r"'<|im_start|>system\n' + content + '<|im_end|>\n'";
const CHATML_USER: &str = r"'<|im_start|>user\n' + content + '<|im_end|>\n'";
const CHATML_HEADER: &str = r"'<|im_start|>assistant\n'";
const CHATML_ASSISTANT: &str = r"content + '<|im_end|>\n'";

/// LLaMA Factory `qwen`: ChatML with tool results wrapped in a user turn and Qwen's tool format.
const QWEN: NamedTemplate = NamedTemplate {
    name: "qwen",
    default_system: Some("'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.'"),
    system: CHATML_SYSTEM,
    user: CHATML_USER,
    assistant_header: CHATML_HEADER,
    assistant: CHATML_ASSISTANT,
    tool: Some(r"'<|im_start|>user\n<tool_response>\n' + content + '\n</tool_response><|im_end|>\n'"),
    stop_words: &["<|im_end|>"],
    tool_format: ToolFormat::Qwen,
    ..LF_DEFAULTS
};

/// LLaMA Factory `gemma` (a `Llama2Template`): no system role; the assistant is `model`.
const GEMMA: NamedTemplate = NamedTemplate {
    name: "gemma",
    system: r"content + '\n\n'",
    system_in_first_user: true,
    user: r"'<start_of_turn>user\n' + content + '<end_of_turn>\n'",
    assistant_header: r"'<start_of_turn>model\n'",
    assistant: r"content + '<end_of_turn>\n'",
    tool: Some(r"'<start_of_turn>tool\n' + content + '<end_of_turn>\n'"),
    stop_words: &["<end_of_turn>"],
    ..LF_DEFAULTS
};

/// LLaMA Factory `deepseek3`: `<｜User｜>` / `<｜Assistant｜>` turns closed by EOS.
const DEEPSEEK3: NamedTemplate = NamedTemplate {
    name: "deepseek3",
    user: "'<｜User｜>' + content",
    assistant_header: "'<｜Assistant｜>'",
    ..LF_DEFAULTS
};

pub(super) static NAMED_TEMPLATES: [NamedTemplate; 15] = [
    // LLaMA Factory `default`: `Human:` / `Assistant:` turns closed by EOS.
    NamedTemplate {
        name: "default",
        system: r"'System: ' + content + eos_token + '\n'",
        user: r"'Human: ' + content + eos_token",
        assistant_header: r"'\nAssistant:'",
        assistant: r"content + eos_token + '\n'",
        ..LF_DEFAULTS
    },
    // LLaMA Factory `empty`: every slot is the bare content; for base-model completion.
    NamedTemplate {
        name: "empty",
        assistant: "content",
        ..LF_DEFAULTS
    },
    // LLaMA Factory `chatml`.
    NamedTemplate {
        name: "chatml",
        system: CHATML_SYSTEM,
        user: CHATML_USER,
        assistant_header: CHATML_HEADER,
        assistant: CHATML_ASSISTANT,
        tool: Some(r"'<|im_start|>tool\n' + content + '<|im_end|>\n'"),
        stop_words: &["<|im_end|>", "<|im_start|>"],
        ..LF_DEFAULTS
    },
    QWEN,
    // LLaMA Factory `qwen2_vl` (Qwen2-VL / Qwen2.5-VL): `qwen` with the VL models' default
    // system prompt; images are `<image>` placeholders in the text (see the engine's media).
    NamedTemplate {
        name: "qwen2_vl",
        default_system: Some("'You are a helpful assistant.'"),
        ..QWEN
    },
    // LLaMA Factory `qwen3`: `qwen` without a default system prompt, reasoning.
    NamedTemplate {
        name: "qwen3",
        default_system: None,
        reasoning: true,
        ..QWEN
    },
    // LLaMA Factory `qwen3_nothink`: `qwen3` for the instruct (non-thinking) models.
    NamedTemplate {
        name: "qwen3_nothink",
        default_system: None,
        ..QWEN
    },
    // LLaMA Factory `llama2` (a `Llama2Template`): `[INST] … [/INST]`, BOS before every user
    // turn (the first one's from the tokenizer), `<<SYS>>` in the first.
    NamedTemplate {
        name: "llama2",
        system: r"'<<SYS>>\n' + content + '\n<</SYS>>\n\n'",
        system_in_first_user: true,
        user: "(bos_token if not loop.first else '') + '[INST] ' + content + ' [/INST]'",
        ..LF_DEFAULTS
    },
    // LLaMA Factory `llama3`.
    NamedTemplate {
        name: "llama3",
        system: r"'<|start_header_id|>system<|end_header_id|>\n\n' + content + '<|eot_id|>'",
        user: r"'<|start_header_id|>user<|end_header_id|>\n\n' + content + '<|eot_id|>'",
        assistant_header: r"'<|start_header_id|>assistant<|end_header_id|>\n\n'",
        assistant: "content + '<|eot_id|>'",
        tool: Some(r"'<|start_header_id|>ipython<|end_header_id|>\n\n' + content + '<|eot_id|>'"),
        stop_words: &["<|eot_id|>", "<|eom_id|>"],
        tool_format: ToolFormat::Llama3,
        ..LF_DEFAULTS
    },
    // LLaMA Factory `mistral` (a `Llama2Template`): `[INST] … [/INST]`, assistant turns are
    // ` {content}` + EOS, calls `[TOOL_CALLS] […]` + EOS.
    NamedTemplate {
        name: "mistral",
        system: r"content + '\n\n'",
        system_in_first_user: true,
        user: "'[INST] ' + content + '[/INST]'",
        assistant: "' ' + content + eos_token",
        function: Some("'[TOOL_CALLS] ' + content + eos_token"),
        tool: Some(r#"'[TOOL_RESULTS] {"content": ' + content + '}[/TOOL_RESULTS]'"#),
        tool_format: ToolFormat::Mistral,
        ..LF_DEFAULTS
    },
    GEMMA,
    // LLaMA Factory `gemma3`: `gemma`'s text (it differs only in image handling).
    NamedTemplate {
        name: "gemma3",
        ..GEMMA
    },
    // LLaMA Factory `phi4`.
    NamedTemplate {
        name: "phi4",
        system: "'<|im_start|>system<|im_sep|>' + content + '<|im_end|>'",
        user: "'<|im_start|>user<|im_sep|>' + content + '<|im_end|>'",
        assistant_header: "'<|im_start|>assistant<|im_sep|>'",
        assistant: "content + '<|im_end|>'",
        stop_words: &["<|im_end|>"],
        ..LF_DEFAULTS
    },
    DEEPSEEK3,
    // LLaMA Factory `deepseekr1`: `deepseek3`, reasoning.
    NamedTemplate {
        name: "deepseekr1",
        reasoning: true,
        ..DEEPSEEK3
    },
];

impl NamedTemplate {
    /// The format ends assistant turns with the EOS token itself, which is then a stop string
    /// too (the tokenizer's EOS id stops generation anyway; the text may carry it as well).
    pub(super) fn stops_at_eos(&self) -> bool {
        self.assistant.contains("eos_token")
    }

    /// The Jinja source this template renders with.
    pub(super) fn jinja_source(&self) -> String {
        let Self {
            name,
            system,
            user,
            assistant_header,
            assistant,
            ..
        } = self;
        let function = self.function.unwrap_or(assistant);
        let tool = self.tool.unwrap_or(user);
        let default_system = self.default_system.unwrap_or("''");
        // Where the system text goes: its own turn, or a prefix of the first message if a user's.
        let (system_turn, first_user_prefix) = if self.system_in_first_user {
            (
                format!("{{%- set content = system %}}{{%- set ns.user_prefix = {system} %}}"),
                "{%- if loop.first %}{%- set content = ns.user_prefix + content %}{%- endif %}",
            )
        } else {
            (format!("{{%- set content = system %}}{{{{- {system} }}}}"), "")
        };
        let (remove_thought, empty_thought) = if self.reasoning {
            (
                "{%- if not loop.last %}{%- set content = remove_thought(content) %}{%- endif %}",
                r"{%- if enable_thinking is defined and not enable_thinking %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}",
            )
        } else {
            ("", "")
        };
        format!(
            r#"{{#- Named chat template `{name}`, mirroring LLaMA Factory's `{name}` template. -#}}
{{%- set ns = namespace(user_prefix='') %}}
{{%- if messages and messages[0].role == 'system' %}}
    {{%- set system = messages[0].content %}}
    {{%- set loop_messages = messages[1:] %}}
{{%- else %}}
    {{%- set system = {default_system} %}}
    {{%- set loop_messages = messages %}}
{{%- endif %}}
{{%- if tools %}}
    {{%- set system = system + format_tools(tools, date_string) %}}
{{%- endif %}}
{{%- if system %}}
    {system_turn}
{{%- endif %}}
{{%- for message in loop_messages %}}
    {{%- set content = message.content %}}
    {{%- if message.role == 'user' %}}
        {first_user_prefix}
        {{{{- {user} }}}}
    {{%- elif message.role == 'assistant' and message.tool_calls %}}
        {{%- set content = format_tool_calls(message.tool_calls) %}}
        {{{{- {assistant_header} + {function} }}}}
    {{%- elif message.role == 'assistant' %}}
        {remove_thought}
        {{{{- {assistant_header} + {assistant} }}}}
    {{%- elif message.role == 'tool' %}}
        {{{{- {tool} }}}}
    {{%- else %}}
        {{{{- raise_exception("the named chat template `{name}` does not support the role `" ~ message.role ~ "`") }}}}
    {{%- endif %}}
{{%- endfor %}}
{{%- if add_generation_prompt %}}
    {{{{- {assistant_header} }}}}
    {empty_thought}
{{%- endif %}}
"#
        )
    }
}
