//! Structured outputs as clients ask for them: OpenAI's `response_format`, vLLM's
//! `structured_outputs` object and its older `guided_*` fields, read into one
//! [`Constraint`] (the llguidance side is `candela_structured`).
//!
//! At most one kind may be given; two are a 400 naming both fields, as vLLM does.
//! `response_format: {"type": "text"}` is no constraint.

use std::sync::Arc;

use candela_structured::{Constraint, Grammar, Grammars, JsonWhitespace};
use serde::Deserialize;
use serde_json::Value;

use super::request::SamplingOptions;
use crate::error::{Error, Result};

/// OpenAI's `response_format`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

/// `response_format.json_schema`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSchemaFormat {
    pub name: String,
    /// Refused when non-empty: nothing shows it to the model.
    pub description: Option<String>,
    /// vLLM also reads it as `json_schema`.
    #[serde(alias = "json_schema")]
    pub schema: Option<Value>,
    /// Outputs always follow the schema exactly; `strict` changes nothing more.
    pub strict: Option<bool>,
}

/// vLLM's `structured_outputs` object (`StructuredOutputsParams`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructuredOutputs {
    /// A JSON schema, as an object or a string holding one.
    pub json: Option<Value>,
    pub regex: Option<String>,
    pub choice: Option<Vec<String>>,
    /// Lark (llguidance's dialect) or GBNF.
    pub grammar: Option<String>,
    pub json_object: Option<bool>,
    /// Compact JSON (no whitespace between tokens) is the default here; `false`
    /// allows any whitespace.
    pub disable_any_whitespace: Option<bool>,
    /// Objects without `additionalProperties` in the schema get `false`.
    pub disable_additional_properties: Option<bool>,
    /// The whitespace JSON may have between tokens, as a regex.
    pub whitespace_pattern: Option<String>,
    /// vLLM's switch between grammar backends; there is one here, so it changes nothing.
    pub disable_fallback: Option<bool>,
    /// Not supported: a 400 when set.
    pub structural_tag: Option<Value>,
}

/// A constraint and the request field it came from (the one a 400 names).
#[derive(Debug, Clone, PartialEq)]
pub struct Requested {
    pub field: &'static str,
    pub constraint: Constraint,
}

/// The one constraint a request's fields ask for.
///
/// # Errors
/// 400 naming the fields: two kinds at once, a JSON schema string that is not
/// JSON, a missing `json_schema.schema`, `structural_tag`, or a
/// `guided_decoding_backend` other than llguidance.
pub fn constraint(o: &SamplingOptions) -> Result<Option<Requested>> {
    if let Some(backend) = &o.guided_decoding_backend
        && !matches!(backend.as_str(), "auto" | "guidance" | "llguidance")
    {
        return Err(Error::invalid(
            "guided_decoding_backend",
            format!(
                "guided_decoding_backend {backend:?} is not available; structured outputs run on llguidance (\"guidance\")."
            ),
        ));
    }
    let so = o.structured_outputs.clone().unwrap_or_default();
    if so.structural_tag.is_some() {
        return Err(Error::invalid(
            "structured_outputs",
            "structured_outputs.structural_tag is not supported.",
        ));
    }
    let pattern = so
        .whitespace_pattern
        .clone()
        .or_else(|| o.guided_whitespace_pattern.clone());
    let whitespace = match (pattern, so.disable_any_whitespace) {
        (Some(p), _) => JsonWhitespace::Pattern(p),
        (None, Some(false)) => JsonWhitespace::Any,
        (None, _) => JsonWhitespace::Compact,
    };
    let closed = so.disable_additional_properties.unwrap_or(false);
    let json = |field: &'static str, v: &Value| -> Result<Requested> {
        let mut schema = match v {
            Value::String(s) => serde_json::from_str(s).map_err(|e| {
                Error::invalid(field, format!("{field} is not a valid JSON schema: {e}"))
            })?,
            other => other.clone(),
        };
        if closed {
            close_objects(&mut schema);
        }
        Ok(Requested {
            field,
            constraint: Constraint::JsonSchema {
                schema,
                whitespace: whitespace.clone(),
            },
        })
    };
    let mut found: Vec<Requested> = Vec::new();
    match &o.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => found.push(Requested {
            field: "response_format",
            constraint: Constraint::JsonObject {
                whitespace: whitespace.clone(),
            },
        }),
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            if json_schema
                .description
                .as_deref()
                .is_some_and(|d| !d.is_empty())
            {
                // OpenAI shows it to the model; nothing here would, so it is refused.
                return Err(Error::invalid(
                    "response_format",
                    "response_format.json_schema.description is not supported; the schema itself \
                     is enforced, so leave the description out.",
                ));
            }
            let schema = json_schema.schema.as_ref().ok_or_else(|| {
                Error::invalid(
                    "response_format",
                    "response_format.json_schema.schema is required.",
                )
            })?;
            found.push(json("response_format", schema)?);
        }
    }
    if let Some(v) = &so.json {
        found.push(json("structured_outputs", v)?);
    }
    if let Some(v) = &o.guided_json {
        found.push(json("guided_json", v)?);
    }
    let simple = [
        (
            "structured_outputs",
            so.regex.clone().map(Constraint::Regex),
        ),
        (
            "structured_outputs",
            so.choice.clone().map(Constraint::Choice),
        ),
        (
            "structured_outputs",
            so.grammar.clone().map(Constraint::Grammar),
        ),
        (
            "structured_outputs",
            so.json_object
                .filter(|&b| b)
                .map(|_| Constraint::JsonObject {
                    whitespace: whitespace.clone(),
                }),
        ),
        (
            "guided_regex",
            o.guided_regex.clone().map(Constraint::Regex),
        ),
        (
            "guided_choice",
            o.guided_choice.clone().map(Constraint::Choice),
        ),
        (
            "guided_grammar",
            o.guided_grammar.clone().map(Constraint::Grammar),
        ),
    ];
    for (field, constraint) in simple {
        if let Some(constraint) = constraint {
            found.push(Requested { field, constraint });
        }
    }
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => {
            let fields: Vec<&str> = found.iter().map(|r| r.field).collect();
            Err(Error::invalid(
                found[1].field,
                format!(
                    "only one kind of structured outputs constraint may be given, got {}.",
                    fields.join(" and ")
                ),
            ))
        }
    }
}

/// The server's grammar compiler, or why its tokenizer cannot have one.
pub type Compiler = std::result::Result<Grammars, candela_structured::Error>;

/// Compiles a requested constraint off the async runtime (a large schema takes a while).
///
/// # Errors
/// 400 naming the field when the constraint does not compile or the model's
/// tokenizer cannot run structured outputs.
pub async fn compile(compiler: &Arc<Compiler>, requested: Requested) -> Result<Grammar> {
    let compiler = compiler.clone();
    let field = requested.field;
    let compiled = tokio::task::spawn_blocking(move || match compiler.as_ref() {
        Ok(grammars) => grammars.compile(&requested.constraint),
        Err(e) => Err(e.clone()),
    })
    .await
    .map_err(|e| Error::Internal(format!("grammar compiler task failed: {e}")))?;
    compiled.map_err(|e| Error::invalid(field, format!("Invalid {field}: {e}")))
}

/// vLLM's `disable_additional_properties`: every object schema that does not say
/// otherwise gets `"additionalProperties": false`.
fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let is_object =
                map.get("type").is_some_and(|t| t == "object") || map.contains_key("properties");
            if is_object && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(v: Value) -> SamplingOptions {
        serde_json::from_value(v).unwrap()
    }

    fn refused(v: Value) -> (Option<&'static str>, String) {
        match constraint(&fields(v)).unwrap_err() {
            Error::InvalidRequest { param, message } => (param, message),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_spelling_gives_its_constraint() {
        let c = |v| {
            constraint(&fields(v))
                .unwrap()
                .map(|r| (r.field, r.constraint))
        };
        assert_eq!(c(json!({})), None);
        assert_eq!(c(json!({"response_format": {"type": "text"}})), None);
        assert_eq!(
            c(json!({"response_format": {"type": "json_object"}})),
            Some((
                "response_format",
                Constraint::JsonObject {
                    whitespace: JsonWhitespace::Compact
                }
            ))
        );
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(
            c(
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}}})
            ),
            Some((
                "response_format",
                Constraint::JsonSchema {
                    schema: schema.clone(),
                    whitespace: JsonWhitespace::Compact
                }
            ))
        );
        assert_eq!(
            c(json!({"guided_json": schema.to_string()})),
            Some((
                "guided_json",
                Constraint::JsonSchema {
                    schema: schema.clone(),
                    whitespace: JsonWhitespace::Compact
                }
            ))
        );
        assert_eq!(
            c(json!({"structured_outputs": {"json": schema, "disable_any_whitespace": false}})),
            Some((
                "structured_outputs",
                Constraint::JsonSchema {
                    schema: schema.clone(),
                    whitespace: JsonWhitespace::Any
                }
            ))
        );
        assert_eq!(
            c(json!({"guided_choice": ["a", "b"], "guided_decoding_backend": "guidance"})),
            Some((
                "guided_choice",
                Constraint::Choice(vec!["a".into(), "b".into()])
            ))
        );
        assert_eq!(
            c(json!({"structured_outputs": {"regex": "[0-9]+"}})),
            Some(("structured_outputs", Constraint::Regex("[0-9]+".into())))
        );
        assert_eq!(
            c(json!({"guided_grammar": "root ::= \"a\""})),
            Some((
                "guided_grammar",
                Constraint::Grammar("root ::= \"a\"".into())
            ))
        );
        assert_eq!(
            c(json!({"guided_json": {}, "guided_whitespace_pattern": "[ ]?"})),
            Some((
                "guided_json",
                Constraint::JsonSchema {
                    schema: json!({}),
                    whitespace: JsonWhitespace::Pattern("[ ]?".into())
                }
            ))
        );
    }

    #[test]
    fn additional_properties_are_closed_on_request() {
        let r = constraint(&fields(json!({"structured_outputs": {
            "json": {"type": "object", "properties": {"o": {"type": "object"}, "p": {"type": "object", "additionalProperties": true}}},
            "disable_additional_properties": true}})));
        let r = r.unwrap().unwrap();
        let Constraint::JsonSchema { schema, .. } = r.constraint else {
            panic!()
        };
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["properties"]["o"]["additionalProperties"], false);
        assert_eq!(schema["properties"]["p"]["additionalProperties"], true);
    }

    #[test]
    fn conflicts_and_unsupported_parts_are_400s_naming_the_field() {
        let (param, msg) = refused(json!({"guided_regex": "a", "guided_choice": ["a"]}));
        assert_eq!(param, Some("guided_choice"));
        assert!(msg.contains("guided_regex and guided_choice"), "{msg}");
        let (param, _) =
            refused(json!({"response_format": {"type": "json_object"}, "guided_json": {}}));
        assert_eq!(param, Some("guided_json"));
        let (param, msg) = refused(json!({"guided_json": "{not json"}));
        assert_eq!(param, Some("guided_json"));
        assert!(msg.contains("not a valid JSON schema"), "{msg}");
        let (param, _) = refused(
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
        );
        assert_eq!(param, Some("response_format"));
        let (param, _) = refused(json!({"response_format": {"type": "json_schema",
            "json_schema": {"name": "x", "description": "a city", "schema": {}}}}));
        assert_eq!(param, Some("response_format"));
        let (param, _) = refused(json!({"structured_outputs": {"structural_tag": {}}}));
        assert_eq!(param, Some("structured_outputs"));
        let (param, _) = refused(json!({"guided_json": {}, "guided_decoding_backend": "xgrammar"}));
        assert_eq!(param, Some("guided_decoding_backend"));
        assert!(
            serde_json::from_value::<SamplingOptions>(json!({"response_format": {"type": "yaml"}}))
                .is_err()
        );
        assert!(
            serde_json::from_value::<SamplingOptions>(json!({"structured_outputs": {"jsonn": {}}}))
                .is_err()
        );
    }
}
