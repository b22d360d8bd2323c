//! Command-line arguments. Flag names follow llama.cpp's where they exist.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use hearth_protocol::LoadSettings;


#[derive(Debug, Parser)]
#[command(name = "hearth", version, about = "Run large language models on hardware you own")]
pub struct Cli {
    /// More output on stderr: timings and logs (-v), debug logs (-vv)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Chat with a model, or answer one prompt and exit
    Run(RunArgs),
    /// Download a model from Hugging Face, an Ollama registry or a URL
    Pull(PullArgs),
    /// Add a GGUF file from this machine (hardlinked when possible)
    Add(AddArgs),
    /// List the models in the store
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Describe a model: architecture, size, context, template, whether llama.cpp supports it
    Show(ShowArgs),
    /// Remove models (and the files no other model uses)
    Rm(RmArgs),
    /// Copy a model under another name (no bytes are copied)
    Cp(CpArgs),
    /// Make another tool's models usable by hearth, by hardlink
    Import(ImportArgs),
    /// Make a hearth model usable by another tool, by hardlink
    Export(ExportArgs),
    /// Serve the Ollama and OpenAI APIs on one port
    Serve(ServeArgs),
    /// Will a model fit? Memory for weights, KV cache and compute, from its header alone (even
    /// a remote one: only the header is read)
    Fit(FitArgs),
    /// Measure TTFT and tokens/s of endpoints (hearth, Ollama, llama-server, ...) side by side
    Bench(BenchArgs),
    /// List the models a running server has loaded
    Ps,
    /// Unload a model from a running server
    Stop(StopArgs),
    /// This machine's compute devices (CPU, GPUs) and their memory, as llama.cpp sees them
    Devices(DevicesArgs),
    /// Lend this machine's devices to a controller (`hearth serve --workers`)
    Worker(WorkerArgs),
    /// The workers of a cluster: reachable, versions, devices, memory, what they host
    Cluster(ClusterCmd),
    /// Runs one model for `hearth serve` (internal)
    #[command(hide = true)]
    Runner(RunnerArgs),
}

#[derive(Debug, Args)]
pub struct FitArgs {
    /// A store name, a .gguf path, or a remote reference (hf.co/USER/REPO:QUANT, a URL, a registry model)
    pub model: String,
    /// Sequences decoded together (-np)
    #[arg(long, default_value_t = 1)]
    pub parallel: u32,
    /// The devices to fit in, in order, e.g. "cpu=24GiB" or "cpu=128G,w1=128G,w2=128G"
    /// (the first is the host) [default: this machine's available memory, then the workers']
    #[arg(long)]
    pub devices: Option<String>,
    #[command(flatten)]
    pub load: LoadSettings,
    #[command(flatten)]
    pub cluster: WorkersArgs,
    /// Allow plain http for a registry host
    #[arg(long)]
    pub insecure: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchApi {
    /// `/v1/completions`: the prompt as is
    Openai,
    /// `/v1/chat/completions`: the prompt as the user's message, through the chat template
    OpenaiChat,
    /// `/api/generate` with `raw`
    Ollama,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The model, as the endpoints name it
    #[arg(long)]
    pub model: Option<String>,
    /// An endpoint's base URL (repeatable: the first is the baseline of the ratios)
    #[arg(long = "url", value_name = "URL")]
    pub urls: Vec<String>,
    /// The API of each --url, in order (the last one given applies to the rest)
    #[arg(long, value_enum, default_value = "openai")]
    pub api: Vec<BenchApi>,
    /// Prompt length in the model's tokens
    #[arg(long = "prompt-tokens", default_value_t = 512)]
    pub prompt_tokens: u32,
    /// Tokens to generate per request
    #[arg(long = "gen-tokens", default_value_t = 128)]
    pub gen_tokens: u32,
    /// Concurrency levels, comma-separated
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    pub concurrency: Vec<usize>,
    /// Where the prompts' random words start: another seed, other prompts (so that no prompt
    /// cache holds them from an earlier run)
    #[arg(long, default_value_t = 1000)]
    pub seed: u64,
    /// Compare hearth without and with speculative decoding (ngram, draft, mtp): two servers
    /// started here
    #[arg(long, value_name = "ngram|draft|mtp")]
    pub spec: Option<hearth_protocol::Spec>,
    /// The draft model of `--spec draft` (-md)
    #[arg(long = "model-draft", value_name = "MODEL")]
    pub model_draft: Option<String>,
    /// Sampling temperature (0: greedy)
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Runs per level (medians are reported)
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Print JSON instead of a markdown table
    #[arg(long)]
    pub json: bool,
    /// Draw aggregate tok/s against concurrency into this SVG file
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// The workers a controller uses.
#[derive(Debug, Args, Clone, Default)]
pub struct WorkersArgs {
    /// Workers (`hearth worker`) to spread models over, comma-separated HOST:PORT
    #[arg(long, env = crate::env::WORKERS, value_delimiter = ',', value_name = "HOST:PORT")]
    pub workers: Vec<String>,
    /// The shared cluster secret the workers were started with
    #[arg(long = "cluster-token", env = crate::env::CLUSTER_TOKEN, hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Public address [default: 0.0.0.0:50052 with a token, else 127.0.0.1:50052]
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Devices to serve, comma-separated ggml names (CPU, CUDA0, ...) [default: the GPUs, else the CPU]
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub devices: Vec<String>,
    /// Most memory the controller may use here, e.g. 100G [default: what is free]
    #[arg(long, value_name = "BYTES")]
    pub mem: Option<String>,
    /// CPU threads for computing [default: all cores]
    #[arg(short = 't', long, value_name = "N")]
    pub threads: Option<usize>,
    /// Where received and preloaded tensors are cached [default: ~/.hearth/rpc-cache]
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// The shared cluster secret; controllers must present it
    #[arg(long, env = crate::env::CLUSTER_TOKEN, hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Allow a non-loopback --listen without a token (anyone who reaches the port can use it)
    #[arg(long)]
    pub insecure: bool,
    /// Hash this model (from this machine's store) into the cache first, so loads move no
    /// weights over the network (repeatable)
    #[arg(long, value_name = "MODEL")]
    pub preload: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ClusterCmd {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Each worker: reachable or not, versions, devices, free/total memory, round trip, models
    Status(ClusterStatusArgs),
}

#[derive(Debug, Args)]
pub struct ClusterStatusArgs {
    #[command(flatten)]
    pub cluster: WorkersArgs,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    pub model: String,
}

#[derive(Debug, Args)]
pub struct RunnerArgs {
    #[arg(long)]
    pub spec: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on: HOST:PORT, HOST, or http://HOST:PORT
    #[arg(long, env = crate::env::HOST, default_value = "127.0.0.1:11434")]
    pub host: String,
    /// Sequences decoded together per model (continuous batching)
    #[arg(long, env = crate::env::NUM_PARALLEL, default_value_t = 4, value_name = "N")]
    pub parallel: u32,
    /// Requests waiting per model beyond the running ones; past it the answer is 503
    #[arg(long = "max-queue", env = crate::env::MAX_QUEUE, default_value_t = 64, value_name = "N")]
    pub max_queue: usize,
    /// Models loaded at once
    #[arg(long = "max-loaded-models", env = crate::env::MAX_LOADED_MODELS, default_value_t = 3, value_name = "N")]
    pub max_loaded_models: usize,
    /// Memory all loaded models may use together, e.g. 12G or 800M [default: 80% of RAM]
    #[arg(long = "memory-budget", env = crate::env::MEMORY_BUDGET, value_name = "BYTES")]
    pub memory_budget: Option<String>,
    /// Most of a GPU's memory models may use, NAME=SIZE, comma-separated (e.g. Vulkan0=6G), to
    /// leave room for other programs [default: its free memory at start]
    #[arg(long = "device-memory", env = crate::env::DEVICE_MEMORY, value_delimiter = ',', value_name = "DEV=SIZE")]
    pub device_memory: Vec<String>,
    /// How long a model stays loaded after its last request (e.g. 5m, 1h, 0, -1 for ever)
    #[arg(long = "keep-alive", env = crate::env::KEEP_ALIVE, default_value = "5m", value_name = "DURATION")]
    pub keep_alive: String,
    /// Require `Authorization: Bearer KEY` on every route except / and /health
    #[arg(long = "api-key", env = crate::env::API_KEY, value_name = "KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Allow browser requests from this origin (repeatable; localhost is always allowed)
    #[arg(long = "cors-origin", env = crate::env::ORIGINS, value_delimiter = ',', value_name = "ORIGIN")]
    pub cors_origin: Vec<String>,
    /// Largest request body, in bytes (model uploads to /api/blobs are not limited)
    #[arg(long = "max-body", default_value_t = 64 << 20, value_name = "BYTES")]
    pub max_body: usize,
    /// Seconds a model may take to load
    #[arg(long = "load-timeout", default_value_t = 600, value_name = "SECONDS")]
    pub load_timeout: u64,
    #[command(flatten)]
    pub load: LoadSettings,
    #[command(flatten)]
    pub cluster: WorkersArgs,
}


#[derive(Debug, Args)]
pub struct PullArgs {
    /// hf.co/USER/REPO[:QUANT], hf.co/USER/REPO/FILE.gguf, NAME[:TAG] (Ollama library),
    /// HOST/NAMESPACE/NAME[:TAG] (another registry) or an https:// URL of a .gguf
    pub reference: String,
    /// Store it under this name instead
    #[arg(long)]
    pub name: Option<String>,
    /// Allow plain http to a registry
    #[arg(long)]
    pub insecure: bool,
    /// Parallel connections per file [env: HEARTH_PULL_CONNECTIONS] [default: 4]
    #[arg(long, value_name = "N")]
    pub connections: Option<usize>,
    /// Seconds without data before a connection is dropped and resumed [env: HEARTH_STALL_TIMEOUT] [default: 30]
    #[arg(long = "stall-timeout", value_name = "SECONDS")]
    pub stall_timeout: Option<f64>,
    /// Failures in a row (without progress) before giving up [env: HEARTH_PULL_RETRIES] [default: 6]
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// No progress bars (notes and errors still print)
    #[arg(long = "no-progress")]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// A .gguf file (the first shard of a split model brings the others)
    pub path: PathBuf,
    /// The model's name [default: from the file name]
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long = "no-progress")]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A model name or a path to a .gguf
    pub model: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub models: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    pub source: String,
    pub destination: String,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Tool {
    Ollama,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    pub tool: Tool,
    /// Ollama's models directory [default: $OLLAMA_MODELS or ~/.ollama/models]
    #[arg(long)]
    pub from: Option<PathBuf>,
    #[arg(long = "no-progress")]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    pub tool: Tool,
    /// The model to export
    pub model: String,
    /// Ollama's models directory [default: $OLLAMA_MODELS or ~/.ollama/models]
    #[arg(long)]
    pub to: Option<PathBuf>,
    #[arg(long = "no-progress")]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A model name from the store (`hearth list`) or a path to a GGUF file
    pub model: String,
    /// Answer this prompt and exit; without it, start an interactive chat
    pub prompt: Option<String>,
    /// Send the prompt as it is, without the chat template
    #[arg(long)]
    pub raw: bool,
    /// A system prompt for the conversation
    #[arg(long)]
    pub system: Option<String>,
    #[command(flatten)]
    pub load: LoadSettings,
    #[command(flatten)]
    pub cluster: WorkersArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// How tokens are picked. Defaults are llama.cpp's.
#[derive(Debug, Args, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 is greedy
    #[arg(long, default_value_t = 0.8, value_name = "T")]
    pub temp: f32,
    /// Top-k sampling (0 = off)
    #[arg(long = "top-k", default_value_t = 40, value_name = "N")]
    pub top_k: i32,
    /// Top-p sampling (1.0 = off)
    #[arg(long = "top-p", default_value_t = 0.95, value_name = "P")]
    pub top_p: f32,
    /// Min-p sampling (0.0 = off)
    #[arg(long = "min-p", default_value_t = 0.05, value_name = "P")]
    pub min_p: f32,
    /// Locally typical sampling (1.0 = off)
    #[arg(long = "typical", default_value_t = 1.0, value_name = "P")]
    pub typical_p: f32,
    /// Penalty for repeated tokens (1.0 = off)
    #[arg(long = "repeat-penalty", default_value_t = 1.0, value_name = "F")]
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties consider (0 = off, -1 = the context)
    #[arg(long = "repeat-last-n", default_value_t = 64, value_name = "N", allow_negative_numbers = true)]
    pub repeat_last_n: i32,
    /// Presence penalty (0.0 = off)
    #[arg(long = "presence-penalty", default_value_t = 0.0, value_name = "F")]
    pub presence_penalty: f32,
    /// Frequency penalty (0.0 = off)
    #[arg(long = "frequency-penalty", default_value_t = 0.0, value_name = "F")]
    pub frequency_penalty: f32,
    /// Random seed (default: random)
    #[arg(long, value_name = "N")]
    pub seed: Option<u32>,
    /// Most tokens to generate (-1 = until the model stops or the context is full)
    #[arg(short = 'n', long = "predict", visible_alias = "n-predict", default_value_t = -1, value_name = "N", allow_negative_numbers = true)]
    pub predict: i64,
    /// Stop when this text appears (repeatable); it is not printed
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,
}

/// llama.cpp's multi-letter short flags (`-ngl 99`), which clap cannot declare, become their
/// long forms.
pub fn normalize(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    const SHORTS: &[(&str, &str)] = &[
        ("-ngl", "--gpu-layers"),
        ("-fa", "--flash-attn"),
        ("-tb", "--threads-batch"),
        ("-ub", "--ubatch-size"),
        ("-ctk", "--cache-type-k"),
        ("-ctv", "--cache-type-v"),
        ("-ts", "--tensor-split"),
        ("-dev", "--device"),
        ("-sm", "--split-mode"),
        ("-mg", "--main-gpu"),
        ("-ot", "--override-tensor"),
        ("-cmoe", "--cpu-moe"),
        ("-ncmoe", "--n-cpu-moe"),
        ("-md", "--model-draft"),
        ("-kvu", "--kv-unified"),
    ];
    args.into_iter()
        .map(|a| {
            let Some(s) = a.to_str() else { return a };
            for (short, long) in SHORTS {
                if s == *short {
                    return OsString::from(long);
                }
                if let Some(v) = s.strip_prefix(short).and_then(|r| r.strip_prefix('=')) {
                    return OsString::from(format!("{long}={v}"));
                }
            }
            a
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_short_flags_are_accepted() {
        let args = normalize(["hearth", "run", "m.gguf", "-ngl", "99", "-fa=on", "-c", "512", "-kvu"].map(OsString::from));
        let cli = Cli::try_parse_from(args).unwrap();
        let Command::Run(run) = cli.command else { panic!("run") };
        assert!(run.load.kv_unified);
        assert_eq!(run.load.gpu_layers, Some(99));
        assert_eq!(run.load.flash_attn, hearth_protocol::FlashAttn::On);
        assert_eq!(run.load.ctx_size, Some(512));
    }

    #[test]
    fn load_flags_are_the_same_everywhere() {
        let flags = ["-c", "512", "-ngl", "-1", "-ts", "1,2", "-fa", "off", "-ctk", "q8_0", "-b", "64", "-ub", "32", "-t", "2", "--no-mmap"];
        let parse = |cmd: &[&str]| {
            let mut args = vec!["hearth"];
            args.extend(cmd);
            args.extend(flags);
            match Cli::try_parse_from(normalize(args.into_iter().map(OsString::from))).unwrap().command {
                Command::Run(a) => a.load,
                Command::Serve(a) => a.load,
                Command::Fit(a) => a.load,
                _ => unreachable!(),
            }
        };
        let run = parse(&["run", "m.gguf"]);
        assert_eq!(run, parse(&["serve"]));
        assert_eq!(run, parse(&["fit", "m.gguf"]));
        assert_eq!((run.ctx_size, run.gpu_layers, run.tensor_split.as_slice(), run.batch_size), (Some(512), Some(-1), &[1.0, 2.0][..], 64));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for bad in [["-fa", "maybe"], ["-ctk", "q9"], ["--temp", "hot"]] {
            let mut args = vec!["hearth", "run", "m.gguf"];
            args.extend(bad);
            let err = Cli::try_parse_from(normalize(args.into_iter().map(OsString::from))).unwrap_err();
            assert!(err.use_stderr(), "{bad:?}");
        }
    }
}
