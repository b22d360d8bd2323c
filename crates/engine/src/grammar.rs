//! Grammar-constrained generation: [`Grammar`] (JSON, or any GBNF grammar) and its compiled
//! form, the llama.cpp grammar sampler.
//!
//! The grammar sampler is not part of the sampler chain. Its state advances with every token
//! it accepts, so it must see the generated tokens and only those (never the prompt, which the
//! chain's penalties do see), and it must never be handed a token it does not allow: llama.cpp
//! answers that with a C++ exception or an abort, which would take the process down. See
//! [`crate::sampling`] for how a token is picked under a grammar.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::model::Model;
use crate::{sys, EngineError, Token};

/// Generic JSON whose top level is an object: what Ollama's `format: "json"` and OpenAI's
/// `response_format: {"type": "json_object"}` ask for. Written for hearth in llama.cpp's GBNF.
///
/// Whitespace is bounded: between two JSON tokens there is nothing, one space, or one line
/// break followed by at most 24 spaces or tabs, so a model cannot pad forever. Numbers are
/// bounded too (16 integer digits, 16 fraction digits, 3 exponent digits), against endless
/// digit runs. Nothing may follow the closing brace, so the generation ends right after the
/// object, with the model's end-of-generation token.
pub const JSON_OBJECT_GBNF: &str = r#"# A JSON object (RFC 8259) with bounded whitespace.
root    ::= object
value   ::= object | array | string | number | "true" | "false" | "null"
object  ::= "{" ws ( member ( "," ws member )* )? "}"
member  ::= string ws ":" ws value ws
array   ::= "[" ws ( element ( "," ws element )* )? "]"
element ::= value ws
string  ::= "\"" char* "\""
char    ::= [^"\\\x00-\x1F] | "\\" escape
escape  ::= ["\\/bfnrt] | "u" hex hex hex hex
hex     ::= [0-9a-fA-F]
number  ::= "-"? integer fraction? exponent?
integer ::= "0" | [1-9] [0-9]{0,15}
fraction ::= "." [0-9]{1,16}
exponent ::= [eE] [-+]? [0-9]{1,3}
# Nothing, one space, or a line break and an indentation of at most 24.
ws      ::= ( " " | "\n" [ \t]{0,24} )?
"#;

/// A grammar the generated text must follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grammar {
    /// Any JSON object ([`JSON_OBJECT_GBNF`]).
    Json,
    /// A grammar in llama.cpp's GBNF format (see llama.cpp's `grammars/README.md`); generation
    /// starts at the rule named `root`.
    ///
    /// Trusted input only (hearth's own grammars, not text from an API client): llama.cpp's
    /// grammar compiler recurses over nesting and rule chains, so a small but deeply nested
    /// grammar (ten thousand parentheses) overflows the stack and aborts the process. A grammar
    /// that merely does not parse is an [`EngineError::InvalidRequest`].
    Gbnf(String),
    /// A grammar from llama.cpp's chat code (tool calls, JSON schemas), compiled from the
    /// request's schemas by llama.cpp's converter.
    ///
    /// `lazy`: it applies only from a trigger on (a pattern of the text, or one of the tokens)
    /// and lets anything through before. `prefill`: the template's generation prompt, which the
    /// grammar's sentences start with; it is fed to a grammar that is not lazy and allows it.
    Chat { gbnf: String, lazy: bool, trigger_patterns: Vec<String>, trigger_tokens: Vec<Token>, prefill: String },
}

impl Grammar {
    /// The grammar's GBNF text.
    pub fn gbnf(&self) -> &str {
        match self {
            Grammar::Json => JSON_OBJECT_GBNF,
            Grammar::Gbnf(text) => text,
            Grammar::Chat { gbnf, .. } => gbnf,
        }
    }
}

/// A parsed grammar and its parse state: llama.cpp's grammar sampler, owned.
///
/// Compiled on the caller's thread (so a bad grammar is an error from `Engine::generate`, and
/// a large grammar does not hold up the engine thread), then moved to the engine thread.
pub(crate) struct CompiledGrammar {
    ptr: NonNull<sys::llama_sampler>,
    /// The sampler keeps a pointer to the model's vocabulary: the model must outlive it.
    _model: Arc<Model>,
}

// SAFETY: a grammar sampler is plain heap data with no tie to the thread that made it; it is
// used by one thread at a time (it moves to the engine thread with its job). The vocabulary it
// points into is immutable and kept alive by `_model`.
unsafe impl Send for CompiledGrammar {}

impl CompiledGrammar {
    /// Parses `grammar` for `model`'s vocabulary. A grammar that does not parse, has no `root`
    /// rule or is left-recursive is [`EngineError::InvalidRequest`] with llama.cpp's reason
    /// (for a syntax error only "failed to parse grammar": llama.cpp prints the details, with
    /// the grammar, straight to stderr, bypassing its log callback).
    pub(crate) fn new(model: &Arc<Model>, grammar: &Grammar) -> Result<CompiledGrammar, EngineError> {
        let text = grammar.gbnf();
        if text.trim().is_empty() {
            return Err(EngineError::InvalidRequest("the grammar is empty".into()));
        }
        let text = CString::new(text)
            .map_err(|_| EngineError::InvalidRequest("the grammar contains a NUL character".into()))?;
        // SAFETY: valid vocab (kept alive by the Arc stored beside the sampler) and two
        // NUL-terminated strings, which llama.cpp copies. Parse errors are caught inside
        // llama.cpp and come back as NULL.
        let (ptr, errors) = match grammar {
            Grammar::Chat { lazy: true, trigger_patterns, trigger_tokens, .. } => {
                let patterns = trigger_patterns
                    .iter()
                    .map(|p| CString::new(p.as_str()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| EngineError::InvalidRequest("a grammar trigger contains a NUL character".into()))?;
                let pattern_ptrs: Vec<*const std::ffi::c_char> = patterns.iter().map(|p| p.as_ptr()).collect();
                // SAFETY: as below, plus arrays of `len` valid pointers / tokens, copied by
                // llama.cpp (which also catches a bad trigger regex and returns NULL).
                crate::log::capture_errors(|| unsafe {
                    sys::llama_sampler_init_grammar_lazy_patterns(
                        model.vocab_ptr(),
                        text.as_ptr(),
                        c"root".as_ptr(),
                        pattern_ptrs.as_ptr().cast_mut(),
                        pattern_ptrs.len(),
                        trigger_tokens.as_ptr(),
                        trigger_tokens.len(),
                    )
                })
            }
            _ => crate::log::capture_errors(|| unsafe {
                sys::llama_sampler_init_grammar(model.vocab_ptr(), text.as_ptr(), c"root".as_ptr())
            }),
        };
        match NonNull::new(ptr) {
            Some(ptr) => {
                let mut g = CompiledGrammar { ptr, _model: model.clone() };
                if let Grammar::Chat { lazy: false, prefill, .. } = grammar {
                    g.prefill(model, prefill)?;
                }
                Ok(g)
            }
            None => {
                let why = if errors.is_empty() { "it does not parse".to_string() } else { errors.join("; ") };
                Err(EngineError::InvalidRequest(format!("invalid GBNF grammar: {why}")))
            }
        }
    }

    /// Feeds the template's generation prompt to a chat grammar whose sentences start with it
    /// (as llama.cpp's sampler does; a first token that is only a tokenizer's leading space is
    /// skipped). A grammar that does not start with it is left as it is.
    fn prefill(&mut self, model: &Model, prefill: &str) -> Result<(), EngineError> {
        if prefill.is_empty() {
            return Ok(());
        }
        let mut tokens = model.tokenize(prefill, false, true)?;
        if let Some(&first) = tokens.first() {
            let piece = model.token_piece(first, true);
            if piece.first().is_some_and(|b| b.is_ascii_whitespace()) && !prefill.starts_with(|c: char| c.is_whitespace()) {
                tokens.remove(0);
            }
        }
        if tokens.first().is_some_and(|&t| !self.allows(t)) {
            return Ok(());
        }
        for t in tokens {
            if !self.allows(t) {
                return Err(EngineError::InvalidRequest("the chat grammar does not accept the template's generation prompt".into()));
            }
            self.accept(t);
        }
        Ok(())
    }

    /// Whether the grammar allows `token` next. Costs one token's check, not the vocabulary's.
    pub(crate) fn allows(&mut self, token: Token) -> bool {
        let mut one = sys::llama_token_data { id: token, logit: 0.0, p: 0.0 };
        let mut arr = sys::llama_token_data_array { data: &mut one, size: 1, selected: -1, sorted: false };
        self.apply(&mut arr);
        one.logit != f32::NEG_INFINITY
    }

    /// Sets the logit of every candidate the grammar does not allow next to -inf.
    pub(crate) fn apply(&mut self, cur: &mut sys::llama_token_data_array) {
        // SAFETY: valid sampler; `cur` describes `size` valid entries.
        unsafe { sys::llama_sampler_apply(self.ptr.as_ptr(), cur) }
    }

    /// Advances the grammar over `token`.
    ///
    /// The caller must have checked that the grammar allows it ([`Self::allows`], or a finite
    /// logit after [`Self::apply`]): llama.cpp throws a C++ exception on a token the grammar
    /// rejects and aborts on an end-of-generation token before the grammar is complete.
    pub(crate) fn accept(&mut self, token: Token) {
        // SAFETY: valid sampler; the token is allowed (see above).
        unsafe { sys::llama_sampler_accept(self.ptr.as_ptr(), token) }
    }
}

impl Drop for CompiledGrammar {
    fn drop(&mut self) {
        // SAFETY: we own the sampler and free it once, before `_model` lets the vocab go.
        unsafe { sys::llama_sampler_free(self.ptr.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    //! [`JSON_OBJECT_GBNF`] driven through llama.cpp's grammar with the test model's
    //! vocabulary (loaded alone, no weights): texts tokenized, each token checked, then
    //! accepted.

    use super::*;
    use crate::model::test_vocab as vocab;

    /// Ok when the grammar allows every token of `text` and then the end of generation.
    fn follow(model: &Arc<Model>, grammar: &Grammar, text: &str) -> Result<(), String> {
        let mut g = CompiledGrammar::new(model, grammar).map_err(|e| e.to_string())?;
        for t in model.tokenize(text, false, false).unwrap() {
            if !g.allows(t) {
                return Err(format!("token {:?} refused", String::from_utf8_lossy(&model.token_piece(t, true))));
            }
            g.accept(t);
        }
        // SAFETY: plain query on a valid vocab.
        let eos = unsafe { sys::llama_vocab_eos(model.vocab_ptr()) };
        if g.allows(eos) { Ok(()) } else { Err("unfinished".into()) }
    }

    #[test]
    fn json_grammar_accepts_json_objects() {
        let model = vocab();
        let pretty = "{\n  \"name\": \"Tom\",\n  \"tags\": [\n    \"a\",\n    \"b\"\n  ],\n\t\"x\": {}\n}";
        for text in [
            "{}",
            "{ }",
            r#"{"a": 1}"#,
            r#"{"a":1,"b":2}"#,
            r#"{"name": "Tom", "age": 3, "tags": ["x", "y"], "ok": true, "no": false, "none": null}"#,
            r#"{"n": -1.5e+10, "z": 0, "f": 0.25, "e": 1E3, "big": 1234567890123456}"#,
            r#"{"a": {"b": [1, [2, {}], []]}}"#,
            r#"{"esc": "quote \" backslash \\ slash \/ \b\f\n\r\t \u00e9 \uD83D\uDE00"}"#,
            r#"{"unicode": "日本語 😀 é"}"#,
            pretty,
        ] {
            assert_eq!(follow(&model, &Grammar::Json, text), Ok(()), "{text:?}");
        }
    }

    #[test]
    fn json_grammar_refuses_anything_else() {
        let model = vocab();
        for text in [
            "[1, 2]",                // the top level must be an object
            "\"text\"",
            "42",
            " {}",                   // nothing before the object
            "{}\n",                  // nor after it
            "{} {}",
            r#"{"a": 1,}"#,          // trailing comma
            r#"{'a': 1}"#,           // single quotes
            r#"{a: 1}"#,             // bare key
            r#"{"a": 01}"#,          // leading zero
            r#"{"a": .5}"#,
            r#"{"a": NaN}"#,
            r#"{"a": tru}"#,
            "{\"a\": \"line\nbreak\"}", // raw control character in a string
            r#"{"a": "\x"}"#,        // unknown escape
            r#"{"a":  1}"#,          // two spaces: whitespace is bounded
            "{\n\n\"a\": 1}",        // two line breaks
            r#"{"a": 12345678901234567}"#, // 17 digits
            r#"{"a": 1"#,            // unfinished
            r#"{"a": 1}}"#,
        ] {
            assert!(follow(&model, &Grammar::Json, text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn indentation_is_bounded() {
        let model = vocab();
        let at = |n: usize| format!("{{\n{}\"a\": 1}}", " ".repeat(n));
        assert_eq!(follow(&model, &Grammar::Json, &at(24)), Ok(()));
        assert!(follow(&model, &Grammar::Json, &at(25)).is_err());
    }

    #[test]
    fn custom_grammars_and_errors() {
        let model = vocab();
        let yes_no = Grammar::Gbnf("root ::= (\"yes\" | \"no\") \".\"".into());
        assert_eq!(follow(&model, &yes_no, "yes."), Ok(()));
        assert_eq!(follow(&model, &yes_no, "no."), Ok(()));
        assert!(follow(&model, &yes_no, "maybe.").is_err());
        assert!(follow(&model, &yes_no, "yes").is_err());
        for (bad, why) in [
            ("", "empty"),
            ("root ::= (\"a\"", "failed to parse"),
            ("other ::= \"a\"", "'root'"),
            ("root ::= root \"a\"", "left recursion"),
        ] {
            let err = CompiledGrammar::new(&model, &Grammar::Gbnf(bad.into())).err().expect(bad).to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }
}
