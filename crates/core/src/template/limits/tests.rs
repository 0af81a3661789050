//! Hostile templates end in the limit they ran into; real ones stay far inside every limit.

use serde_json::{json, Map};

use super::super::{ChatTemplate, TemplateError};
use super::*;

fn render(source: &str) -> Result<String, TemplateError> {
    let template = ChatTemplate::from_jinja(source, "<s>", "</s>")?;
    let messages = json!([{"role": "user", "content": "hi\nthere"}]);
    template.render_json(&messages, None, true, &Map::new())
}

#[track_caller]
fn assert_limit(source: &str, expected: Limit) {
    match render(source) {
        Err(TemplateError::LimitExceeded { limit, .. }) => assert_eq!(limit, expected, "{source}"),
        other => panic!("{source}: expected {expected:?}, got {other:?}"),
    }
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    // 10¹⁰ iterations: range() itself stops at 100 000 items, nesting does not.
    let err = render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
        .expect_err("out of fuel");
    assert!(matches!(err, TemplateError::LimitExceeded { limit: Limit::Fuel, .. }), "{err:?}");
    assert!(err.to_string().contains("fuel of 10000000 instructions"), "{err}");
}

#[test]
fn unbounded_recursion_hits_the_recursion_limit() {
    assert_limit("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", Limit::Recursion);
    // Nesting built by a loop is as deep as the loop is long; tojson refuses it.
    assert_limit(
        "{% set ns = namespace(x=1) %}{% for i in range(2000) %}{% set ns.x = [ns.x] %}{% endfor %}\
         {{ ns.x|tojson }}",
        Limit::Recursion,
    );
}

#[test]
fn output_bombs_hit_the_output_limit() {
    // Values written, literal text, captured text and tojson output all count.
    assert_limit("{% for i in range(1000) %}{{ 'x' * 100000 }}{% endfor %}", Limit::Output);
    let literal = "y".repeat(1000);
    assert_limit(&format!("{{% for i in range(100000) %}}{literal}{{% endfor %}}"), Limit::Output);
    assert_limit(
        "{% set s %}{% for i in range(1000) %}{{ 'x' * 100000 }}{% endfor %}{% endset %}",
        Limit::Output,
    );
    assert_limit("{{ ['x' * 100000] * 1000 }}", Limit::Output);
    assert_limit("{{ (['x' * 100000] * 1000)|tojson }}", Limit::Output);
    // minijinja's own cap on one repetition is a plain render error.
    assert!(matches!(render("{{ 'x' * 10**9 }}"), Err(TemplateError::Render { .. })));
}

#[test]
fn allocating_builtins_refuse_huge_sizes() {
    for source in [
        "{{ messages[0].content|indent(10**12) }}",
        "{{ messages[0].content|indent(width=10**12) }}",
        "{{ [1, 2]|batch(10**12, 0) }}",
        "{{ [1, 2]|slice(10**12) }}",
        "{{ '%999999999s'|format('x') }}",
        "{{ '%.999999999f'|format(1.5) }}",
        "{{ '%*s'|format(10**12, 'x') }}",
        "{{ '{:>999999999}'.format('x') }}",
        "{{ '{:{}}'.format('x', 10**12) }}",
        "{{ messages|tojson(indent=10**12) }}",
        "{{ messages|tojson(indent='x' * 1000000) }}",
    ] {
        assert_limit(source, Limit::Width);
    }
    // Ordinary sizes still work.
    assert_eq!(render("{{ messages[0].content|indent(2) }}").expect("renders"), "hi\n  there");
    assert_eq!(render("{{ '%5s|%%|%-3d'|format('a', 7) }}").expect("renders"), "    a|%|7  ");
    assert_eq!(render("{{ '%d'|format(10**12) }}").expect("renders"), "1000000000000");
    assert_eq!(render("{{ '{:>4}{{}}'.format('b') }}").expect("renders"), "   b{}");
    assert_eq!(render("{{ [1, 2, 3]|batch(2, 0)|list }}").expect("renders"), "[[1, 2], [3, 0]]");
}

#[test]
fn oversized_sources_are_refused_before_compiling() {
    let source = "x".repeat(MAX_TEMPLATE_BYTES + 1);
    assert!(matches!(
        ChatTemplate::from_jinja(&source, "", ""),
        Err(TemplateError::LimitExceeded { limit: Limit::TemplateSize, .. })
    ));
}

#[test]
fn real_templates_use_a_small_part_of_the_fuel() {
    // A 200-turn conversation with tools through every fixture template, on 1% of the fuel.
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City"}},
        "required": ["city"]}}}]);
    let turns: Vec<_> = (0..200)
        .flat_map(|i| {
            [json!({"role": "user", "content": format!("question {i}")}),
             json!({"role": "assistant", "content": format!("answer {i}")})]
        })
        .collect();
    let dir = ingot_testkit::fixtures_dir().join("templates");
    let mut rendered = 0;
    for entry in std::fs::read_dir(&dir).expect("fixture templates") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "jinja") {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("template");
        let mut template = ChatTemplate::from_jinja(&source, "<s>", "</s>").expect("compiles");
        template.env.set_fuel(Some(FUEL / 100));
        let out = template.render_json(&json!(turns), Some(&tools), true, &Map::new());
        match out {
            Ok(text) => assert!(text.contains("answer 199"), "{}", path.display()),
            // Templates that refuse tools or roles do so by raise_exception, not by a limit.
            Err(e) => assert!(matches!(e, TemplateError::Raised { .. }), "{}: {e}", path.display()),
        }
        rendered += 1;
    }
    assert!(rendered >= 10, "only {rendered} fixture templates");
}

