//! Renders a Hugging Face / GGUF Jinja chat template with minijinja.
//!
//! Set up like `transformers`' `apply_chat_template`: `trim_blocks` and
//! `lstrip_blocks` on, Python string methods (`.strip()`, `.startswith()`, ...)
//! via minijinja-contrib's pycompat, `raise_exception(msg)` and
//! `strftime_now(fmt)` as globals, transformers' `tojson` (Python's `json.dumps`:
//! `", "` and `": "` separators, keys in order, no HTML escaping), and the variables `messages`,
//! `add_generation_prompt`, `bos_token`, `eos_token` (plus any extra context
//! such as `tools`). Compilation happens once in [`ChatTemplate::new`].

use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind, Value};
use serde::Serialize;

use crate::{Error, Result};

const NAME: &str = "chat";

/// A compiled chat template and the special tokens it may reference.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

fn template_error(e: minijinja::Error) -> Error {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    Error::ChatTemplate(msg)
}

fn raise_exception(msg: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
}

/// `tojson` as transformers gives it to chat templates: Python's `json.dumps(x,
/// ensure_ascii=False, indent=None, separators=None, sort_keys=False)`, each of those
/// keyword arguments honoured. minijinja's own filter writes compact, HTML-escaped JSON,
/// which would show models tool schemas unlike those they were trained on.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let err = |e: &dyn std::fmt::Display| {
        minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string())
    };
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    kwargs.assert_all_used()?;
    let mut json = serde_json::to_value(&value).map_err(|e| err(&e))?;
    if sort_keys == Some(true) {
        sort_json_keys(&mut json);
    }
    // Python's defaults: `", "` and `": "`, or `","` before a newline when indenting.
    let (item, key) = match separators.as_deref() {
        Some([item, key]) => (item.clone(), key.clone()),
        Some(_) => return Err(err(&"tojson: separators must be (item, key)")),
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let formatter = PythonJson {
        item,
        key,
        indent: indent.map(|n| " ".repeat(n)),
        open: Vec::new(),
    };
    let mut out = Vec::new();
    json.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out, formatter,
    ))
    .map_err(|e| err(&e))?;
    let mut text = String::from_utf8(out).map_err(|e| err(&e))?;
    if ensure_ascii == Some(true) {
        text = text
            .chars()
            .map(|c| match c as u32 {
                0..0x80 => c.to_string(),
                _ => c
                    .encode_utf16(&mut [0; 2])
                    .iter()
                    .map(|u| format!("\\u{u:04x}"))
                    .collect(),
            })
            .collect();
    }
    Ok(Value::from_safe_string(text))
}

fn sort_json_keys(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.sort_keys();
            map.values_mut().for_each(sort_json_keys);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(sort_json_keys),
        _ => {}
    }
}

/// `json.dumps`' layout: `item` between items, `key` after keys and, with `indent`, one
/// item per line (empty containers stay `[]` / `{}`).
struct PythonJson {
    item: String,
    key: String,
    indent: Option<String>,
    /// Per open container: whether it has an item yet.
    open: Vec<bool>,
}

impl PythonJson {
    fn newline<W: ?Sized + std::io::Write>(&self, w: &mut W) -> std::io::Result<()> {
        if let Some(unit) = &self.indent {
            w.write_all(b"\n")?;
            for _ in 0..self.open.len() {
                w.write_all(unit.as_bytes())?;
            }
        }
        Ok(())
    }

    fn open<W: ?Sized + std::io::Write>(&mut self, w: &mut W, b: &[u8]) -> std::io::Result<()> {
        self.open.push(false);
        w.write_all(b)
    }

    fn close<W: ?Sized + std::io::Write>(&mut self, w: &mut W, b: &[u8]) -> std::io::Result<()> {
        if self.open.pop() == Some(true) {
            self.newline(w)?;
        }
        w.write_all(b)
    }

    fn value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if let Some(has) = self.open.last_mut() {
            *has = true;
        }
        if !first {
            w.write_all(self.item.as_bytes())?;
        }
        self.newline(w)
    }
}

impl serde_json::ser::Formatter for PythonJson {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"]")
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.value(w, first)
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"}")
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.value(w, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(self.key.as_bytes())
    }
}

/// `strftime_now(fmt)` of Llama 3 templates; only the date formats they use.
fn strftime_now(fmt: String) -> String {
    let today = jiff::tz::TimeZone::UTC
        .to_datetime(jiff::Timestamp::now())
        .date();
    let (y, m, d) = (today.year(), today.month(), today.day());
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let month = MONTHS[(m - 1) as usize];
    fmt.replace("%d", &format!("{d:02}"))
        .replace("%m", &format!("{m:02}"))
        .replace("%Y", &y.to_string())
        .replace("%B", month)
        .replace("%b", &month[..3])
}

impl ChatTemplate {
    /// Compiles `source`.
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] with minijinja's message when the template does not parse.
    pub fn new(source: &str, bos_token: Option<&str>, eos_token: Option<&str>) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_string())
            .map_err(template_error)?;
        Ok(Self {
            env,
            bos_token: bos_token.unwrap_or_default().to_string(),
            eos_token: eos_token.unwrap_or_default().to_string(),
        })
    }

    /// Renders `messages` (anything serializing to a list of `{role, content, ...}`).
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] when rendering fails, including `raise_exception` calls.
    pub fn render<M: Serialize>(
        &self,
        messages: &M,
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.render_with(
            messages,
            add_generation_prompt,
            &std::collections::BTreeMap::<String, ()>::new(),
        )
    }

    /// Like [`render`](Self::render) with the entries of `extra` (a map, e.g.
    /// `{"tools": [...]}`) as more variables; the template's own variables win.
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] when rendering fails.
    pub fn render_with<M: Serialize, E: Serialize>(
        &self,
        messages: &M,
        add_generation_prompt: bool,
        extra: &E,
    ) -> Result<String> {
        let extra = Value::from_serialize(extra);
        let tmpl = self.env.get_template(NAME).map_err(template_error)?;
        let base = minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        tmpl.render(minijinja::context! { ..base, ..extra })
            .map_err(template_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn chatml_renders_with_default_system_prompt() {
        let t = ChatTemplate::new(CHATML, None, Some("<|im_end|>")).unwrap();
        let out = t
            .render(&json!([{"role": "user", "content": "Hi"}]), true)
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = t
            .render(
                &json!([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]),
                false,
            )
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n"
        );
    }

    #[test]
    fn python_methods_tokens_and_exceptions() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m.role not in ['user'] %}{{ raise_exception('only user: ' + m.role) }}{% endif %}{{ m.content.strip().upper() }}{% endfor %}{{ eos_token }}";
        let t = ChatTemplate::new(src, Some("<s>"), Some("</s>")).unwrap();
        assert_eq!(
            t.render(&json!([{"role": "user", "content": "  hi "}]), false)
                .unwrap(),
            "<s>HI</s>"
        );
        let e = t
            .render(&json!([{"role": "bot", "content": "x"}]), false)
            .unwrap_err();
        assert!(e.to_string().contains("only user: bot"), "{e}");
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        let e = ChatTemplate::new("{% for m in messages %}", None, None).unwrap_err();
        assert!(matches!(e, Error::ChatTemplate(_)), "{e}");
    }

    #[test]
    fn tojson_writes_what_pythons_json_dumps_writes() {
        let t = ChatTemplate::new(
            "{{ messages[0] | tojson }}|{{ messages[0] | tojson(indent=2) }}",
            None,
            None,
        )
        .unwrap();
        let msg = json!([{"type": "function", "function": {"name": "f", "d": "<b> & é", "p": [1, 2], "e": {}}}]);
        assert_eq!(
            t.render(&msg, false).unwrap(),
            "{\"type\": \"function\", \"function\": {\"name\": \"f\", \"d\": \"<b> & é\", \"p\": [1, 2], \"e\": {}}}|{\n  \"type\": \"function\",\n  \"function\": {\n    \"name\": \"f\",\n    \"d\": \"<b> & é\",\n    \"p\": [\n      1,\n      2\n    ],\n    \"e\": {}\n  }\n}"
        );
    }

    #[test]
    fn tojson_honours_pythons_keyword_arguments() {
        let src =
            "{{ messages[0] | tojson(ensure_ascii=True, sort_keys=True, separators=[',', ':']) }}";
        let t = ChatTemplate::new(src, None, None).unwrap();
        let msg = json!([{"b": "é😀", "a": {"d": [], "c": 1}}]);
        assert_eq!(
            t.render(&msg, false).unwrap(),
            r#"{"a":{"c":1,"d":[]},"b":"\u00e9\ud83d\ude00"}"#
        );
    }

    #[test]
    fn strftime_now_formats_a_date() {
        let s = strftime_now("%d %b %Y".into());
        assert_eq!(s.len(), 11, "{s}");
    }
}
