// Records what upstream llama.cpp's chat code (common/chat.cpp) makes of hearth's conformance
// cases, as llama-server calls it: the prompt, format and grammar of each case, and the message
// it parses from each pinned model output. Built by record.sh against an upstream build; its
// output is the test data of crates/engine/tests/chat_conformance.rs.
//
//   record <vocab.gguf> <cases.json> <templates dir> <fixtures dir> <upstream version note>

#include "chat.h"
#include "common.h"
#include "llama.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

using ojson = nlohmann::ordered_json;

static std::string read_file(const std::string & path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw std::runtime_error("cannot read " + path);
    }
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

static ojson msg_to_json(const common_chat_msg & m) {
    ojson calls = ojson::array();
    for (const auto & c : m.tool_calls) {
        calls.push_back(ojson{ { "name", c.name }, { "arguments", c.arguments }, { "id", c.id } });
    }
    return ojson{ { "content", m.content }, { "reasoning_content", m.reasoning_content }, { "tool_calls", calls } };
}

// One case: the request as llama-server builds it (server-common.cpp, oaicompat_chat_params_parse)
// with its default reasoning format (deepseek), then each output parsed as the server parses it.
static ojson record_case(const common_chat_templates * tmpls, const ojson & spec, const ojson & c) {
    const ojson & messages = spec.at("conversations").at(c.at("conversation").get<std::string>());
    const bool    tools    = c.at("tools").get<bool>();

    common_chat_templates_inputs inputs;
    inputs.messages = common_chat_msgs_parse_oaicompat(common_json::parse(messages.dump()));
    if (tools) {
        inputs.tools = common_chat_tools_parse_oaicompat(common_json::parse(spec.at("tools").dump()));
    }
    inputs.tool_choice           = common_chat_tool_choice_parse_oaicompat(c.at("tool_choice").get<std::string>());
    inputs.parallel_tool_calls   = c.at("parallel_tool_calls").get<bool>();
    inputs.enable_thinking       = c.at("enable_thinking").get<bool>();
    inputs.reasoning_format      = COMMON_REASONING_FORMAT_DEEPSEEK;
    inputs.add_generation_prompt = true;
    inputs.use_jinja             = true;
    if (c.contains("json_schema")) {
        inputs.json_schema = c.at("json_schema").dump();
    }
    if (c.contains("chat_template_kwargs")) {
        for (const auto & kv : c.at("chat_template_kwargs").items()) {
            inputs.chat_template_kwargs[kv.key()] = kv.value().dump();
        }
    }
    // As llama-server: an enable_thinking kwarg overrides the request's setting.
    if (inputs.chat_template_kwargs.count("enable_thinking")) {
        inputs.enable_thinking = inputs.chat_template_kwargs.at("enable_thinking") == "true";
    }

    ojson out = ojson::object();
    out["name"]                = c.at("name");
    out["messages"]            = messages;
    out["tools"]               = tools ? spec.at("tools") : ojson::array();
    out["tool_choice"]         = c.at("tool_choice");
    out["parallel_tool_calls"] = c.at("parallel_tool_calls");
    out["enable_thinking"]     = c.at("enable_thinking");
    out["json_schema"]         = c.value("json_schema", ojson());
    out["chat_template_kwargs"] = c.value("chat_template_kwargs", ojson::object());
    if (c.contains("known_difference")) {
        out["known_difference"] = c.at("known_difference");
    }

    common_chat_params params;
    try {
        params = common_chat_templates_apply(tmpls, inputs);
    } catch (const std::exception & e) {
        out["error"] = e.what();
        return out;
    }
    ojson stops = ojson::array();
    for (const auto & s : params.additional_stops) {
        stops.push_back(s);
    }
    out["expect"] = ojson{
        { "format", common_chat_format_name(params.format) },
        { "prompt", params.prompt },
        { "generation_prompt", params.generation_prompt },
        { "supports_thinking", params.supports_thinking },
        { "grammar_lazy", params.grammar_lazy },
        { "grammar", params.grammar },
        { "additional_stops", stops },
    };

    common_chat_parser_params pp(params);
    pp.reasoning_format     = COMMON_REASONING_FORMAT_DEEPSEEK;
    pp.reasoning_in_content = false;
    pp.parse_tool_calls     = tools && inputs.tool_choice != COMMON_CHAT_TOOL_CHOICE_NONE;
    if (!params.parser.empty()) {
        pp.parser.load(params.parser);
    }
    ojson outputs = ojson::array();
    for (const auto & o : c.at("outputs")) {
        const bool partial = o.value("partial", false);
        ojson      r       = ojson{ { "name", o.at("name") }, { "text", o.at("text") }, { "partial", partial } };
        if (o.contains("known_difference")) {
            r["known_difference"] = o.at("known_difference");
        }
        try {
            r["expect"] = msg_to_json(common_chat_parse(o.at("text").get<std::string>(), partial, pp));
        } catch (const std::exception & e) {
            r["error"] = e.what();
        }
        outputs.push_back(r);
    }
    out["outputs"] = outputs;
    return out;
}

int main(int argc, char ** argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s <vocab.gguf> <cases.json> <templates dir> <fixtures dir> <upstream version>\n", argv[0]);
        return 2;
    }
    llama_log_set([](ggml_log_level level, const char * text, void *) {
        if (level >= GGML_LOG_LEVEL_WARN) {
            fputs(text, stderr);
        }
    }, nullptr);
    llama_backend_init();
    auto mparams       = llama_model_default_params();
    mparams.vocab_only = true;
    llama_model * model = llama_model_load_from_file(argv[1], mparams);
    if (!model) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    try {
        const ojson spec = ojson::parse(read_file(argv[2]));
        for (const auto & fam : spec.at("families")) {
            const std::string family   = fam.at("family");
            const std::string template_name = fam.at("template");
            const std::string source   = read_file(std::string(argv[3]) + "/" + template_name);
            auto              tmpls    = common_chat_templates_init(model, source);
            ojson             fixture  = ojson::object();
            fixture["family"]          = family;
            fixture["template"]        = template_name;
            fixture["upstream"]        = argv[5];
            fixture["recorded_with"]   = "bench/chat-fixtures/record.sh (vocabulary: SmolLM2-135M-Instruct)";
            ojson cases                = ojson::array();
            for (const auto & c : fam.at("cases")) {
                cases.push_back(record_case(tmpls.get(), spec, c));
            }
            fixture["cases"]  = cases;
            const std::string path = std::string(argv[4]) + "/" + family + ".json";
            std::ofstream(path) << fixture.dump(1) << "\n";
            fprintf(stderr, "wrote %s\n", path.c_str());
        }
    } catch (const std::exception & e) {
        fprintf(stderr, "error: %s\n", e.what());
        llama_model_free(model);
        return 1;
    }
    llama_model_free(model);
    return 0;
}
