// hearth's bridge to llama.cpp's chat code (common/chat.h): templates rendered with tools,
// reasoning and JSON schemas, the grammar that constrains the output, and the parser that
// turns the model's text back into a message with reasoning and tool calls.
//
// Everything crosses the boundary as JSON text, and no C++ exception crosses it: each entry
// point catches and returns NULL with a message in *err (free it with hearth_string_free).

#include "chat.h"
#include "common.h"
#include "json-schema-to-grammar.h"
#include "llama.h"

#include <nlohmann/json.hpp>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

using ojson = nlohmann::ordered_json;

namespace {

char * dup(const std::string & s) {
    char * out = static_cast<char *>(std::malloc(s.size() + 1));
    if (out) {
        std::memcpy(out, s.data(), s.size());
        out[s.size()] = '\0';
    }
    return out;
}

void set_err(char ** err, const char * what) {
    if (err) {
        *err = dup(what ? what : "unknown error");
    }
}

ojson msg_to_json(const common_chat_msg & m) {
    ojson j = ojson::object();
    j["role"] = m.role;
    j["content"] = m.content;
    j["reasoning_content"] = m.reasoning_content;
    ojson calls = ojson::array();
    for (const auto & c : m.tool_calls) {
        calls.push_back(ojson{ { "name", c.name }, { "arguments", c.arguments }, { "id", c.id } });
    }
    j["tool_calls"] = calls;
    return j;
}

}  // namespace

struct hearth_chat {
    common_chat_templates_ptr templates;
};

struct hearth_chat_parser {
    common_chat_parser_params params;
};

extern "C" {

void hearth_string_free(char * s) { std::free(s); }

// The model's templates (its own Jinja template, or `override_src` when not empty).
hearth_chat * hearth_chat_init(const llama_model * model, const char * override_src, char ** err) {
    try {
        auto * c = new hearth_chat();
        c->templates = common_chat_templates_init(model, override_src ? override_src : "");
        return c;
    } catch (const std::exception & e) {
        set_err(err, e.what());
    } catch (...) {
        set_err(err, "failed to load the chat template");
    }
    return nullptr;
}

void hearth_chat_free(hearth_chat * c) { delete c; }

// {"supports_tool_calls": bool, ...} and "source".
char * hearth_chat_caps(const hearth_chat * c, char ** err) {
    try {
        ojson j = ojson::object();
        for (const auto & kv : common_chat_templates_get_caps(c->templates.get())) {
            j[kv.first] = kv.second;
        }
        j["supports_enable_thinking"] = common_chat_templates_support_enable_thinking(c->templates.get());
        j["source"] = common_chat_templates_source(c->templates.get());
        return dup(j.dump());
    } catch (const std::exception & e) {
        set_err(err, e.what());
    } catch (...) {
        set_err(err, "failed to read the template's capabilities");
    }
    return nullptr;
}

// inputs: {"messages": [OpenAI chat messages], "tools": [OpenAI function tools] | absent,
//          "tool_choice": "auto"|"none"|"required", "parallel_tool_calls": bool,
//          "json_schema": "<schema text>" | "", "enable_thinking": bool,
//          "reasoning_format": "auto"|"none", "chat_template_kwargs": {name: "<json text>"},
//          "add_generation_prompt": bool}
char * hearth_chat_apply(const hearth_chat * c, const char * inputs_json, char ** err) {
    try {
        const ojson in = ojson::parse(inputs_json);
        common_chat_templates_inputs inputs;
        inputs.messages = common_chat_msgs_parse_oaicompat(common_json::parse(in.at("messages").dump()));
        if (in.contains("tools") && in.at("tools").is_array() && !in.at("tools").empty()) {
            inputs.tools = common_chat_tools_parse_oaicompat(common_json::parse(in.at("tools").dump()));
        }
        inputs.tool_choice = common_chat_tool_choice_parse_oaicompat(in.value("tool_choice", std::string("auto")));
        inputs.parallel_tool_calls = in.value("parallel_tool_calls", false);
        inputs.json_schema = in.value("json_schema", std::string());
        inputs.enable_thinking = in.value("enable_thinking", true);
        inputs.reasoning_format = common_reasoning_format_from_name(in.value("reasoning_format", std::string("auto")));
        inputs.add_generation_prompt = in.value("add_generation_prompt", true);
        inputs.use_jinja = true;
        if (in.contains("chat_template_kwargs") && in.at("chat_template_kwargs").is_object()) {
            for (const auto & kv : in.at("chat_template_kwargs").items()) {
                inputs.chat_template_kwargs[kv.key()] = kv.value().get<std::string>();
            }
        }
        const common_chat_params p = common_chat_templates_apply(c->templates.get(), inputs);
        ojson out = ojson::object();
        out["format"] = static_cast<int>(p.format);
        out["format_name"] = common_chat_format_name(p.format);
        out["prompt"] = p.prompt;
        out["grammar"] = p.grammar;
        out["grammar_lazy"] = p.grammar_lazy;
        ojson triggers = ojson::array();
        for (const auto & t : p.grammar_triggers) {
            triggers.push_back(ojson{ { "type", static_cast<int>(t.type) }, { "value", t.value }, { "token", t.token } });
        }
        out["grammar_triggers"] = triggers;
        out["preserved_tokens"] = p.preserved_tokens;
        out["additional_stops"] = p.additional_stops;
        out["generation_prompt"] = p.generation_prompt;
        out["supports_thinking"] = p.supports_thinking;
        out["thinking_start_tag"] = p.thinking_start_tag;
        out["thinking_end_tags"] = p.thinking_end_tags;
        out["parser"] = p.parser;
        return dup(out.dump());
    } catch (const std::exception & e) {
        set_err(err, e.what());
    } catch (...) {
        set_err(err, "failed to apply the chat template");
    }
    return nullptr;
}

// params: {"format": int, "generation_prompt": str, "parser": str, "reasoning": bool,
//          "tools": bool}
hearth_chat_parser * hearth_chat_parser_new(const char * params_json, char ** err) {
    try {
        const ojson in = ojson::parse(params_json);
        auto * p = new hearth_chat_parser();
        p->params.format = static_cast<common_chat_format>(in.value("format", 0));
        p->params.generation_prompt = in.value("generation_prompt", std::string());
        p->params.reasoning_format =
            in.value("reasoning", true) ? COMMON_REASONING_FORMAT_DEEPSEEK : COMMON_REASONING_FORMAT_NONE;
        p->params.reasoning_in_content = false;
        p->params.parse_tool_calls = in.value("tools", false);
        const std::string parser = in.value("parser", std::string());
        if (!parser.empty()) {
            p->params.parser.load(parser);
        }
        return p;
    } catch (const std::exception & e) {
        set_err(err, e.what());
    } catch (...) {
        set_err(err, "failed to build the output parser");
    }
    return nullptr;
}

void hearth_chat_parser_free(hearth_chat_parser * p) { delete p; }

// The model's output so far as a message: {"content", "reasoning_content", "tool_calls":
// [{"name", "arguments", "id"}]}. `partial`: more text may follow.
char * hearth_chat_parse(const hearth_chat_parser * p, const char * text, size_t len, bool partial, char ** err) {
    try {
        const common_chat_msg m = common_chat_parse(std::string(text, len), partial, p->params);
        return dup(msg_to_json(m).dump());
    } catch (const std::exception & e) {
        set_err(err, e.what());
    } catch (...) {
        set_err(err, "failed to parse the model's output");
    }
    return nullptr;
}

// A JSON schema as a GBNF grammar (llama.cpp's converter).
char * hearth_json_schema_to_grammar(const char * schema_json, char ** err) {
    try {
        return dup(json_schema_to_grammar(common_json::parse(schema_json)));
    } catch (const std::exception & e) {
        set_err(err, e.what());
    } catch (...) {
        set_err(err, "failed to convert the JSON schema");
    }
    return nullptr;
}

}  // extern "C"
