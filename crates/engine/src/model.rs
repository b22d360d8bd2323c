//! A loaded model: weights and vocabulary. Immutable after loading, so shared between threads.

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Once;
use std::time::Instant;

use crate::{sys, EngineError, Token};

/// How to load a model. Names follow llama.cpp's flags.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// A GGUF file, or the first shard (`…-00001-of-0000N.gguf`) of a split model.
    pub path: PathBuf,
    /// Layers to offload to GPUs or RPC devices; `None` lets llama.cpp decide (all that fit).
    pub gpu_layers: Option<i32>,
    /// Memory-map the file (llama.cpp's default) instead of reading it into memory.
    pub mmap: bool,
    /// Lock the weights in RAM.
    pub mlock: bool,
    /// RPC servers (`host:port`) whose devices receive layers, as llama.cpp's `--rpc`.
    pub rpc_servers: Vec<String>,
    /// Proportion of the model for each device, as llama.cpp's `--tensor-split`.
    pub tensor_split: Vec<f32>,
    /// The device for the whole model when it is not split.
    pub main_gpu: i32,
    /// Offload devices by ggml name (`--device`); empty: llama.cpp's choice (every GPU),
    /// `["none"]`: no offload. The RPC devices of `rpc_servers` are always added in front.
    pub devices: Vec<String>,
    pub split_mode: hearth_protocol::SplitMode,
    /// (regex, device name) pairs: tensors whose name matches go to that device's buffer.
    pub tensor_overrides: Vec<(String, String)>,
    /// Why the settings these options came from are invalid (reported by [`Model::load`]).
    pub invalid: Option<String>,
    /// Load only the vocabulary (and check the architecture), not the weights.
    pub vocab_only: bool,
    /// Load the model's multi-token-prediction layers too (for `--spec mtp`).
    pub mtp: bool,
    /// Over RPC servers: this many of the last units (layers, then the output) go to this
    /// machine's CPU, listed as the last device, instead of the last worker; taken from the
    /// end of `tensor_split`, which must then hold each device's count (0: none). See
    /// [`mtp_units_here`].
    pub last_units_here: u32,
}

impl ModelOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            gpu_layers: None,
            mmap: true,
            mlock: false,
            rpc_servers: Vec::new(),
            tensor_split: Vec::new(),
            main_gpu: 0,
            devices: Vec::new(),
            split_mode: hearth_protocol::SplitMode::Layer,
            tensor_overrides: Vec::new(),
            invalid: None,
            vocab_only: false,
            mtp: false,
            last_units_here: 0,
        }
    }
}

/// What a loaded model says about itself.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub architecture: String,
    /// llama.cpp's one-line description, e.g. "llama ?B Q4_1".
    pub description: String,
    pub n_params: u64,
    pub size_bytes: u64,
    pub n_ctx_train: u32,
    pub n_embd: u32,
    pub n_layer: u32,
    pub n_vocab: u32,
    /// `tokenizer.chat_template`, when the GGUF has one.
    pub chat_template: Option<String>,
    pub bos_token: String,
    pub eos_token: String,
    pub add_bos: bool,
    pub load_ms: f64,
}

pub struct Model {
    ptr: NonNull<sys::llama_model>,
    vocab: NonNull<sys::llama_vocab>,
    info: ModelInfo,
}

// SAFETY: a llama_model is not mutated after loading; llama.cpp's own server tokenizes from
// several threads at once. The context, which is mutable, stays on the engine thread.
unsafe impl Send for Model {}
unsafe impl Sync for Model {}

static BACKEND: Once = Once::new();

/// Initialises llama.cpp's backends and routes its log to `tracing`, once per process.
pub(crate) fn backend_init() {
    BACKEND.call_once(|| {
        crate::log::install();
        // SAFETY: called once, before any other llama.cpp use.
        unsafe { sys::llama_backend_init() };
    });
}

impl Model {
    pub fn load(opts: &ModelOptions) -> Result<Model, EngineError> {
        let path = &opts.path;
        if let Some(why) = &opts.invalid {
            return Err(EngineError::InvalidRequest(why.clone()));
        }
        check_file(path)?;
        backend_init();
        let mut rpc_devices = Vec::new();
        for ep in &opts.rpc_servers {
            rpc_devices.extend(crate::rpc::add_server(ep)?);
        }
        let cpath = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
            EngineError::BadModel {
                path: path.clone(),
                reason: "the path contains a NUL byte".into(),
            }
        })?;
        // SAFETY: default params are plain data; pointers we set outlive the load call.
        let mut params = unsafe { sys::llama_model_default_params() };
        if let Some(n) = opts.gpu_layers {
            params.n_gpu_layers = n;
        }
        params.load_mode = match (opts.mmap, opts.mlock) {
            (true, false) => sys::LLAMA_LOAD_MODE_MMAP,
            (true, true) => sys::LLAMA_LOAD_MODE_MMAP_MLOCK,
            (false, true) => sys::LLAMA_LOAD_MODE_MLOCK,
            (false, false) => sys::LLAMA_LOAD_MODE_NONE,
        };
        params.main_gpu = opts.main_gpu;
        params.split_mode = match opts.split_mode {
            hearth_protocol::SplitMode::None => sys::LLAMA_SPLIT_MODE_NONE,
            hearth_protocol::SplitMode::Layer => sys::LLAMA_SPLIT_MODE_LAYER,
            hearth_protocol::SplitMode::Row => sys::LLAMA_SPLIT_MODE_ROW,
        };
        params.vocab_only = opts.vocab_only;
        params.load_mtp = opts.mtp;
        // Both lists are read by llama.cpp during the load only; they end with a null entry.
        let mut devices: Vec<sys::ggml_backend_dev_t> = Vec::new();
        let mut tensor_split = opts.tensor_split.clone();
        if opts.last_units_here > 0 {
            // The workers' devices, then this machine's CPU for the last units.
            devices.extend(&rpc_devices);
            devices.push(crate::devices::by_name("CPU")?);
            devices.push(std::ptr::null_mut());
            params.devices = devices.as_mut_ptr();
            tensor_split = units_to_last(&opts.tensor_split, rpc_devices.len(), opts.last_units_here);
        } else if !opts.devices.is_empty() {
            devices.extend(&rpc_devices);
            if !(opts.devices.len() == 1 && opts.devices[0].eq_ignore_ascii_case("none")) {
                for name in &opts.devices {
                    devices.push(crate::devices::by_name(name)?);
                }
            }
            devices.push(std::ptr::null_mut());
            params.devices = devices.as_mut_ptr();
        }
        let patterns: Vec<CString> = opts
            .tensor_overrides
            .iter()
            .map(|(re, _)| CString::new(re.as_str()))
            .collect::<Result<_, _>>()
            .map_err(|_| EngineError::InvalidRequest("--override-tensor: a pattern contains a NUL byte".into()))?;
        let mut overrides: Vec<sys::llama_model_tensor_buft_override> = Vec::new();
        for ((re, dev), pattern) in opts.tensor_overrides.iter().zip(&patterns) {
            regex_check(re)?;
            overrides.push(sys::llama_model_tensor_buft_override { pattern: pattern.as_ptr(), buft: crate::devices::buffer_type(dev)? });
        }
        if !overrides.is_empty() {
            overrides.push(sys::llama_model_tensor_buft_override { pattern: std::ptr::null(), buft: std::ptr::null_mut() });
            params.tensor_buft_overrides = overrides.as_ptr();
        }
        // SAFETY: plain query.
        let max_devices = unsafe { sys::llama_max_devices() };
        let mut split = vec![0f32; max_devices.max(1)];
        if !tensor_split.is_empty() {
            if tensor_split.len() > max_devices {
                return Err(EngineError::InvalidRequest(format!(
                    "--tensor-split has {} values but at most {max_devices} devices are supported",
                    tensor_split.len()
                )));
            }
            split[..tensor_split.len()].copy_from_slice(&tensor_split);
            params.tensor_split = split.as_ptr();
        }
        crate::log::clear_last_error();
        let start = Instant::now();
        // SAFETY: `cpath` is a valid C string, `params` valid; null on failure.
        let ptr = unsafe { sys::llama_model_load_from_file(cpath.as_ptr(), params) };
        let load_ms = start.elapsed().as_secs_f64() * 1e3;
        let ptr = NonNull::new(ptr).ok_or_else(|| EngineError::Load {
            path: path.clone(),
            reason: crate::log::take_last_error()
                .unwrap_or_else(|| "llama.cpp could not load it (run with -v for its log)".into()),
        })?;
        // SAFETY: `ptr` is a valid model; the vocab lives as long as the model.
        let vocab = unsafe { sys::llama_model_get_vocab(ptr.as_ptr()) };
        let vocab = NonNull::new(vocab as *mut sys::llama_vocab).ok_or_else(|| EngineError::Load {
            path: path.clone(),
            reason: "the model has no vocabulary".into(),
        })?;
        let mut model = Model {
            ptr,
            vocab,
            info: ModelInfo {
                path: path.clone(),
                architecture: String::new(),
                description: String::new(),
                n_params: 0,
                size_bytes: 0,
                n_ctx_train: 0,
                n_embd: 0,
                n_layer: 0,
                n_vocab: 0,
                chat_template: None,
                bos_token: String::new(),
                eos_token: String::new(),
                add_bos: false,
                load_ms,
            },
        };
        model.info = model.read_info(path, load_ms);
        Ok(model)
    }

    fn read_info(&self, path: &Path, load_ms: f64) -> ModelInfo {
        let m = self.ptr.as_ptr();
        let v = self.vocab.as_ptr();
        // SAFETY: all calls below are read-only queries on a valid model and vocab.
        unsafe {
            let mut buf = vec![0u8; 256];
            let n = sys::llama_model_desc(m, buf.as_mut_ptr() as *mut c_char, buf.len());
            buf.truncate(n.max(0) as usize);
            let template = sys::llama_model_chat_template(m, std::ptr::null());
            let chat_template = (!template.is_null())
                .then(|| CStr::from_ptr(template).to_string_lossy().into_owned());
            let token_text = |t: Token| {
                if t < 0 {
                    return String::new();
                }
                let p = sys::llama_vocab_get_text(v, t);
                if p.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            ModelInfo {
                path: path.to_path_buf(),
                architecture: self.meta("general.architecture").unwrap_or_default(),
                description: String::from_utf8_lossy(&buf).into_owned(),
                n_params: sys::llama_model_n_params(m),
                size_bytes: sys::llama_model_size(m),
                n_ctx_train: sys::llama_model_n_ctx_train(m).max(0) as u32,
                n_embd: sys::llama_model_n_embd(m).max(0) as u32,
                n_layer: sys::llama_model_n_layer(m).max(0) as u32,
                n_vocab: sys::llama_vocab_n_tokens(v).max(0) as u32,
                chat_template,
                bos_token: token_text(sys::llama_vocab_bos(v)),
                eos_token: token_text(sys::llama_vocab_eos(v)),
                add_bos: sys::llama_vocab_get_add_bos(v),
                load_ms,
            }
        }
    }

    /// Whether this build of llama.cpp can load the model at `path`: its architecture is known
    /// and its vocabulary loads. Reads no weights.
    pub fn probe(path: &Path) -> Result<(), EngineError> {
        let mut o = ModelOptions::new(path);
        o.vocab_only = true;
        Model::load(&o).map(drop)
    }

    /// A metadata value as a string.
    pub fn meta(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        let mut buf = vec![0u8; 512];
        loop {
            // SAFETY: valid model, key and buffer of the given size.
            let n = unsafe {
                sys::llama_model_meta_val_str(
                    self.ptr.as_ptr(),
                    key.as_ptr(),
                    buf.as_mut_ptr() as *mut c_char,
                    buf.len(),
                )
            };
            if n < 0 {
                return None;
            }
            if (n as usize) < buf.len() {
                buf.truncate(n as usize);
                return Some(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.resize(n as usize + 1, 0);
        }
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::llama_model {
        self.ptr.as_ptr()
    }

    /// The vocabulary, valid as long as the model.
    pub(crate) fn vocab_ptr(&self) -> *const sys::llama_vocab {
        self.vocab.as_ptr()
    }

    /// Text to tokens. `add_special` adds BOS/EOS as the model asks; `parse_special` turns
    /// special-token text such as `<|im_start|>` into those tokens.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<Token>, EngineError> {
        let len = i32::try_from(text.len())
            .map_err(|_| EngineError::InvalidRequest("the text is longer than 2 GiB".into()))?;
        let mut tokens: Vec<Token> = vec![0; text.len() + 2];
        loop {
            // SAFETY: valid vocab; `text` and `tokens` are valid for the lengths passed.
            let n = unsafe {
                sys::llama_tokenize(
                    self.vocab.as_ptr(),
                    text.as_ptr() as *const c_char,
                    len,
                    tokens.as_mut_ptr(),
                    tokens.len() as i32,
                    add_special,
                    parse_special,
                )
            };
            if n == i32::MIN {
                return Err(EngineError::InvalidRequest("the text has too many tokens".into()));
            }
            if n < 0 {
                tokens.resize((-n) as usize, 0);
                continue;
            }
            tokens.truncate(n as usize);
            return Ok(tokens);
        }
    }

    /// The bytes of one token's text (special tokens render as nothing unless `special`).
    /// A piece may be part of a multi-byte character: see [`crate::text::Utf8Stream`].
    pub fn token_piece(&self, token: Token, special: bool) -> Vec<u8> {
        let mut buf = vec![0u8; 32];
        loop {
            // SAFETY: valid vocab and buffer.
            let n = unsafe {
                sys::llama_token_to_piece(
                    self.vocab.as_ptr(),
                    token,
                    buf.as_mut_ptr() as *mut c_char,
                    buf.len() as i32,
                    0,
                    special,
                )
            };
            if n < 0 {
                buf.resize((-n) as usize, 0);
                continue;
            }
            buf.truncate(n as usize);
            return buf;
        }
    }

    /// Tokens to text, special tokens included when `special`.
    pub fn detokenize(&self, tokens: &[Token], special: bool) -> String {
        let mut out = Vec::new();
        for &t in tokens {
            out.extend(self.token_piece(t, special));
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Whether `token` ends generation (EOS, EOT and the like).
    pub fn is_eog(&self, token: Token) -> bool {
        // SAFETY: read-only query.
        unsafe { sys::llama_vocab_is_eog(self.vocab.as_ptr(), token) }
    }

    pub fn n_vocab(&self) -> i32 {
        self.info.n_vocab as i32
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: we own the model; every context using it was freed first (the engine holds
        // an Arc<Model> and drops its context before it).
        unsafe { sys::llama_model_free(self.ptr.as_ptr()) }
    }
}

/// How many of the model's last units (`load_tensors`' layers, the output being the last)
/// `--spec mtp` keeps on this machine over workers ([`ModelOptions::last_units_here`]): its
/// multi-token-prediction layers and the output head they share, so that drafting costs no
/// round trip (llama.cpp runs a layer's norms on that layer's device, so pinning the weights
/// alone would still send every norm of the block to a worker and back). Only with RPC
/// servers, a split by counts, and no GPU of this machine among the devices: llama.cpp lists
/// this machine's GPUs after the workers', so with one the last layers are here already. 0
/// otherwise, and for a model without the block.
pub(crate) fn mtp_units_here(opts: &ModelOptions) -> u32 {
    if opts.rpc_servers.is_empty() || opts.tensor_split.iter().all(|&x| x == 0.0) {
        return 0;
    }
    let gpus: Vec<String> = crate::devices::list().into_iter().filter(|d| d.is_gpu()).map(|d| d.name).collect();
    let local_gpu = match opts.devices.as_slice() {
        [] => !gpus.is_empty(),
        [only] if only.eq_ignore_ascii_case("none") => false,
        names => names.iter().any(|n| gpus.iter().any(|g| g.eq_ignore_ascii_case(n))),
    };
    if local_gpu {
        return 0;
    }
    // `Model::load` reports a file it cannot read.
    let Ok(g) = hearth_gguf::Gguf::open_lean(&opts.path) else { return 0 };
    let nextn = hearth_gguf::plan::mtp_layers(&g);
    if nextn == 0 {
        return 0;
    }
    let units = nextn + 1;
    // The split must offload them (counts covering at least the block and the output).
    if opts.tensor_split.iter().sum::<f32>() < units as f32 || opts.gpu_layers.is_some_and(|n| n < units as i32) {
        return 0;
    }
    units
}

/// `split` (units per device, for the first `n_dev` devices) with its last `units` moved to
/// one more device after them.
fn units_to_last(split: &[f32], n_dev: usize, units: u32) -> Vec<f32> {
    let mut out: Vec<f32> = (0..n_dev).map(|i| split.get(i).copied().unwrap_or(0.0)).collect();
    let mut left = units as f32;
    for x in out.iter_mut().rev() {
        let take = x.min(left);
        *x -= take;
        left -= take;
    }
    out.push(units as f32);
    out
}

/// Rejects a missing, unreadable, non-GGUF or truncated file with a precise message before
/// llama.cpp sees it.
fn check_file(path: &Path) -> Result<(), EngineError> {
    let meta = std::fs::metadata(path).map_err(|e| EngineError::BadModel {
        path: path.to_path_buf(),
        reason: match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".into(),
            _ => e.to_string(),
        },
    })?;
    if meta.is_dir() {
        return Err(EngineError::BadModel {
            path: path.to_path_buf(),
            reason: "it is a directory, not a .gguf file".into(),
        });
    }
    let header = hearth_gguf::Gguf::open_lean(path).map_err(|e| EngineError::BadModel {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    header.check_hparams().map_err(|reason| EngineError::BadModel { path: path.to_path_buf(), reason })
}

/// The number of physical CPU cores (llama.cpp's default thread count), else the logical count.
pub fn default_threads() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cores = std::collections::HashSet::new();
    for cpu in 0..logical.max(1) * 2 {
        let base = format!("/sys/devices/system/cpu/cpu{cpu}/topology");
        let pkg = std::fs::read_to_string(format!("{base}/physical_package_id"));
        let core = std::fs::read_to_string(format!("{base}/core_id"));
        if let (Ok(p), Ok(c)) = (pkg, core) {
            cores.insert((p.trim().to_string(), c.trim().to_string()));
        }
    }
    if cores.is_empty() {
        logical
    } else {
        cores.len().min(logical)
    }
}

/// The test model's vocabulary alone (no weights), for unit tests that need llama.cpp's view of
/// tokens: `$HEARTH_TEST_MODEL`, else what `scripts/fetch-model.sh` fetches.
#[cfg(test)]
pub(crate) fn test_vocab() -> std::sync::Arc<Model> {
    let path = std::env::var_os("HEARTH_TEST_MODEL").map(PathBuf::from).unwrap_or_else(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-model.sh");
        let out = std::process::Command::new("bash").arg(script).output().expect("run scripts/fetch-model.sh");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    });
    let mut o = ModelOptions::new(path);
    o.vocab_only = true;
    std::sync::Arc::new(Model::load(&o).expect("load the test model's vocabulary"))
}

/// llama.cpp matches override patterns with `std::regex`, which aborts the process on a bad
/// pattern: check it here first (ECMAScript syntax and Rust's `regex` agree on what users write:
/// classes, groups, alternation, escapes).
fn regex_check(re: &str) -> Result<(), EngineError> {
    regex::Regex::new(re)
        .map(|_| ())
        .map_err(|e| EngineError::InvalidRequest(format!("--override-tensor: {re:?} is not a valid regular expression ({e})")))
}

#[cfg(test)]
mod tests {
    use super::units_to_last;

    #[test]
    fn the_last_units_move_to_one_more_device() {
        // Two workers with 16 and 16 units; the block and the output (2) come here.
        assert_eq!(units_to_last(&[16.0, 16.0], 2, 2), vec![16.0, 14.0, 2.0]);
        // A last worker with fewer units than move: the one before gives the rest.
        assert_eq!(units_to_last(&[30.0, 1.0], 2, 2), vec![29.0, 0.0, 2.0]);
        // Devices without a count (a worker with two devices, the split naming one) count 0;
        // a longer split is cut to the devices.
        assert_eq!(units_to_last(&[10.0], 2, 3), vec![7.0, 0.0, 3.0]);
        assert_eq!(units_to_last(&[4.0, 4.0, 9.0], 2, 1), vec![4.0, 3.0, 1.0]);
    }
}
