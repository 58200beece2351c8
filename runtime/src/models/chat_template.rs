//! Chat templates: the Jinja `tokenizer.chat_template` a model ships (GGUF metadata or
//! `tokenizer_config.json`), rendered over a conversation the way Hugging Face transformers'
//! `apply_chat_template` renders it, so that a prompt built here is the prompt the model was
//! trained on.
//!
//! transformers renders with jinja2's `ImmutableSandboxedEnvironment(trim_blocks=True,
//! lstrip_blocks=True)` plus the `loopcontrols` extension, its own `raise_exception` function and
//! its own `tojson` filter (`json.dumps(x, ensure_ascii=False, ...)`, no HTML escaping); it passes
//! `messages`, `tools=None`, `documents=None`, `add_generation_prompt` and the special tokens
//! (`transformers/utils/chat_template_utils.py`). Here that is minijinja with the same whitespace
//! settings, `{% break %}` / `{% continue %}`, Python's string and dict methods (`.strip()`,
//! `.startswith()`, `.items()`, ...) from `minijinja-contrib`'s `pycompat`, and a `tojson` that
//! writes what Python's `json.dumps` writes. Checked byte for byte against transformers by
//! `tests/fixtures/models/smollm2_chat_template.json` (`tests/scripts/make_chat_template_reference.py`).
//!
//! Not provided: `strftime_now` (templates that print today's date) and the `{% generation %}`
//! tag transformers uses for assistant masks; a template using them fails to compile or render
//! with [`ModelError::ChatTemplate`].

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, Serde, Value, ValueKind};
use minijinja::{context, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use super::ModelError;

/// The name the template is registered under; it appears in error locations.
const NAME: &str = "chat_template";

/// One turn of a conversation, as the OpenAI chat API and chat templates spell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A model's chat template, compiled once and rendered per request.
pub struct ChatTemplate {
    model: String,
    env: Environment<'static>,
}

/// What `raise_exception(message)` raised, kept as the minijinja error's source so that the
/// template author's message reaches the client unchanged.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Raised(String);

impl ChatTemplate {
    /// Compiles `source`; a syntax error is reported here, not at the first request.
    pub fn new(model: &str, source: &str) -> Result<Self, ModelError> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| template_error(model, &e))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, "the template raised an exception").with_source(Raised(message)))
        });
        env.add_filter("tojson", tojson);
        env.add_template_owned(NAME, source.to_string()).map_err(|e| template_error(model, &e))?;
        Ok(ChatTemplate { model: model.into(), env })
    }

    /// The prompt text for `messages`; with `add_generation_prompt` it ends where the assistant's
    /// reply should begin. `bos_token` / `eos_token` are the token texts templates may print.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String, ModelError> {
        let template = self.env.get_template(NAME).map_err(|e| template_error(&self.model, &e))?;
        // `tools` and `documents` are none, not undefined: templates test `tools is not none`.
        let ctx = context! {
            messages => Value::from(Serde(messages)),
            tools => Value::from(()),
            documents => Value::from(()),
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token,
            eos_token => eos_token,
        };
        template.render(ctx).map_err(|e| template_error(&self.model, &e))
    }
}

/// The template's own message for `raise_exception`, else minijinja's description with its
/// location in the template.
fn template_error(model: &str, e: &Error) -> ModelError {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(raised) = s.downcast_ref::<Raised>() {
            return ModelError::ChatTemplate { model: model.into(), what: format!("the template refused the conversation: {raised}") };
        }
        source = s.source();
    }
    ModelError::ChatTemplate { model: model.into(), what: e.to_string() }
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)` with those keyword arguments. minijinja's own filter escapes `<`, `>`, `&`
/// and `'` for HTML, which would change the prompt.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    let indent = match kwargs.get::<Option<Value>>("indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => Some(" ".repeat(usize::try_from(v)?)),
        },
    };
    // Python's defaults: (", ", ": ") on one line, ("," , ": ") when indenting.
    let (item_sep, key_sep) = match kwargs.get::<Option<Value>>("separators")? {
        Some(v) if !v.is_none() => {
            let parts: Vec<String> = v.try_iter()?.map(|p| p.as_str().map(str::to_string)).collect::<Option<_>>().unwrap_or_default();
            match <[String; 2]>::try_from(parts) {
                Ok([item, key]) => (item, key),
                Err(_) => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings")),
            }
        }
        _ => (if indent.is_some() { "," } else { ", " }.to_string(), ": ".to_string()),
    };
    kwargs.assert_all_used()?;
    let mut writer = PyJson { out: String::new(), ensure_ascii, sort_keys, indent, item_sep, key_sep };
    writer.value(value, 0)?;
    Ok(Value::from_safe_string(writer.out))
}

/// A writer of Python's `json.dumps` text.
struct PyJson {
    out: String,
    ensure_ascii: bool,
    sort_keys: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
}

impl PyJson {
    fn value(&mut self, v: &Value, depth: usize) -> Result<(), Error> {
        match v.kind() {
            ValueKind::None => self.out.push_str("null"),
            ValueKind::Bool => self.out.push_str(if v.is_true() { "true" } else { "false" }),
            ValueKind::Number if v.is_integer() => self.out.push_str(&v.to_string()),
            ValueKind::Number => self.out.push_str(&py_float(f64::try_from(v.clone())?)),
            ValueKind::String => self.string(v.as_str().unwrap_or_default()),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = v.try_iter()?.collect();
                self.container('[', ']', items.len(), depth, |w, i, depth| w.value(&items[i], depth))?;
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in v.try_iter()? {
                    let item = v.get_item(&key)?;
                    entries.push((py_key(&key)?, item));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.container('{', '}', entries.len(), depth, |w, i, depth| {
                    w.string(&entries[i].0);
                    w.out.push_str(&w.key_sep.clone());
                    w.value(&entries[i].1, depth)
                })?;
            }
            kind => {
                return Err(Error::new(ErrorKind::InvalidOperation, format!("tojson: a value of type {kind} is not JSON serializable")));
            }
        }
        Ok(())
    }

    fn container(
        &mut self,
        open: char,
        close: char,
        len: usize,
        depth: usize,
        mut item: impl FnMut(&mut Self, usize, usize) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.out.push(open);
        if len > 0 {
            for i in 0..len {
                if i > 0 {
                    self.out.push_str(&self.item_sep.clone());
                }
                self.newline(depth + 1);
                item(self, i, depth + 1)?;
            }
            self.newline(depth);
        }
        self.out.push(close);
        Ok(())
    }

    fn newline(&mut self, depth: usize) {
        if let Some(indent) = &self.indent {
            self.out.push('\n');
            for _ in 0..depth {
                self.out.push_str(indent);
            }
        }
    }

    /// Python's string escaping: the two-character escapes, `\u00XX` for other control
    /// characters, and with `ensure_ascii` every non-ASCII character as UTF-16 `\uXXXX`.
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
                c if (c as u32) < 0x20 || (self.ensure_ascii && !c.is_ascii()) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        self.out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }
}

/// A dict key as `json.dumps` writes it: strings as they are, numbers, booleans and none
/// converted to their JSON text.
fn py_key(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_string()),
        ValueKind::None => Ok("null".into()),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.into()),
        ValueKind::Number if key.is_integer() => Ok(key.to_string()),
        ValueKind::Number => Ok(py_float(f64::try_from(key.clone())?)),
        kind => Err(Error::new(ErrorKind::InvalidOperation, format!("tojson: keys must be str, int, float, bool or None, not {kind}"))),
    }
}

/// Python's `repr(float)`: the shortest digits that read back, positional for decimal
/// exponents -4..16, else `d.ddde+XX` with at least two exponent digits.
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0.0");
    }
    // Rust's `{:e}` prints the shortest round-tripping digits, as Python's repr does.
    let scientific = format!("{:e}", f.abs());
    let (mantissa, exp) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let body = if (-4..16).contains(&exp) {
        if exp < 0 {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        } else {
            let whole = exp as usize + 1;
            if digits.len() <= whole {
                format!("{digits}{}.0", "0".repeat(whole - digits.len()))
            } else {
                format!("{}.{}", &digits[..whole], &digits[whole..])
            }
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        format!("{first}{dot}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;

    fn fixture() -> Json {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/models/smollm2_chat_template.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("chat template fixture")).expect("JSON")
    }

    /// Every case of every template renders byte for byte as transformers rendered it, or fails
    /// with the message the template raised; all differing cases are listed at once.
    #[test]
    fn chat_templates_render_as_transformers_renders_them() {
        let fixture = fixture();
        let mut failures = Vec::new();
        let mut count = 0;
        for t in fixture["templates"].as_array().expect("templates") {
            let name = t["name"].as_str().expect("name");
            let template = ChatTemplate::new(name, t["source"].as_str().expect("source")).expect("compiles");
            let (bos, eos) = (t["bos_token"].as_str().expect("bos"), t["eos_token"].as_str().expect("eos"));
            for case in t["cases"].as_array().expect("cases") {
                count += 1;
                let label = format!("{name}/{}", case["name"].as_str().expect("case name"));
                let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).expect("messages");
                let got = template.render(&messages, case["add_generation_prompt"].as_bool().expect("flag"), bos, eos);
                match (got, case["rendered"].as_str(), case["error"].as_str()) {
                    (Ok(got), Some(want), _) if got == want => {}
                    (Ok(got), Some(want), _) => failures.push(format!("{label}: rendered\n{got:?}\ntransformers:\n{want:?}")),
                    (Err(ModelError::ChatTemplate { what, .. }), None, Some(want)) if what == format!("the template refused the conversation: {want}") => {}
                    (got, _, error) => failures.push(format!("{label}: got {got:?}, transformers raised {error:?}")),
                }
            }
        }
        assert!(count >= 10, "the fixture should hold the case set, has {count}");
        assert!(failures.is_empty(), "{} of {count} cases differ from transformers:\n{}", failures.len(), failures.join("\n"));
    }

    #[test]
    fn a_syntax_error_is_reported_at_compile_time_with_the_model() {
        let err = ChatTemplate::new("m", "{% for m in messages %}{{ m.content }}").err().expect("unclosed for is an error");
        let text = err.to_string();
        assert!(text.starts_with("model m: chat template: syntax error:") && text.contains("chat_template:1"), "{text}");
    }

    #[test]
    fn python_float_repr() {
        for (f, want) in [
            (2.71875, "2.71875"),
            (1e-5, "1e-05"),
            (1e20, "1e+20"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (2.0, "2.0"),
            (-0.0001, "-0.0001"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-1.5e-7, "-1.5e-07"),
            (1.5e300, "1.5e+300"),
        ] {
            assert_eq!(py_float(f), want, "{f:e}");
        }
    }
}
