//! A GGUF reader in pure Rust: header, metadata of every type, tensor infos, alignment.
//!
//! It reads only the header (metadata and tensor infos), never the tensor data, so it is cheap on
//! a 100 GB file and safe on hostile input: every length and count is checked against the bytes
//! that remain before anything is allocated, and every error names the byte offset and what was
//! expected there.
//!
//! This crate knows nothing of llama.cpp: the engine uses it to reject bad files with a precise
//! message before handing them to llama.cpp, and the store and `fit` use it to describe models.
//! Its [`writer`] module writes GGUF files (whole or split into shards) for tests and for
//! synthetic models. The reader is fuzzed (`fuzz/`, see its README); inputs that once broke it
//! live in `tests/regressions/`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::Path;

pub mod fit;
pub mod plan;
mod summary;
pub mod writer;

pub use summary::{file_type_name, human_count, Summary};

pub use writer::{split_path, GgufWriter, Layout, TensorData, TensorSpec, WriteError};

/// The four bytes every GGUF file starts with.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// Tensor data starts at a multiple of this unless `general.alignment` says otherwise.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The key that overrides [`DEFAULT_ALIGNMENT`] (llama.cpp wants it as a u32).
pub const KEY_ALIGNMENT: &str = "general.alignment";
/// In a split model: this shard's index, 0-based (u16).
pub const KEY_SPLIT_NO: &str = "split.no";
/// In a split model: how many shards there are (u16).
pub const KEY_SPLIT_COUNT: &str = "split.count";
/// In a split model: how many tensors the whole model has, over all shards (i32).
pub const KEY_SPLIT_TENSORS_COUNT: &str = "split.tensors.count";
/// ggml's tensor names are at most this many bytes (`GGML_MAX_NAME` less the NUL).
pub const MAX_TENSOR_NAME: usize = 63;
/// ggml tensors have one to this many dimensions (`GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;

/// Why a file could not be read as GGUF.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a GGUF file: it starts with {found:?} instead of the magic \"GGUF\"")]
    NotGguf { found: String },
    #[error("unsupported GGUF version {0} (versions 2 and 3 are supported)")]
    Version(u32),
    #[error("truncated GGUF: needed {needed} more bytes at offset {offset} for {what}, but the file ends there")]
    Truncated {
        offset: u64,
        needed: u64,
        what: String,
    },
    #[error("malformed GGUF at offset {offset}: {message}")]
    Malformed { offset: u64, message: String },
}

/// A metadata value, of any of the GGUF value types.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
    /// An array longer than a lean read keeps ([`Gguf::open_lean`]): its element type and
    /// length, not its items (a tokenizer's vocabulary, or a hostile 20M-element array).
    Skipped { elem_type: u32, len: u64 },
}

impl Value {
    /// The GGUF type id of this value (0 = u8 ... 8 = string, 9 = array, ... 12 = f64).
    pub fn gguf_type(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) | Value::Skipped { .. } => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    /// An array of anything that converts to a value, e.g. `Value::array(["a", "b"])`.
    pub fn array<T: Into<Value>>(items: impl IntoIterator<Item = T>) -> Value {
        Value::Array(items.into_iter().map(Into::into).collect())
    }

    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The length of an array, kept or skipped.
    pub fn array_len(&self) -> Option<u64> {
        match self {
            Value::Array(a) => Some(a.len() as u64),
            Value::Skipped { len, .. } => Some(*len),
            _ => None,
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $v:ident),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::$v(v.into())
            }
        })*
    };
}

value_from!(
    u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, String => String, &str => String, Vec<Value> => Array,
    u64 => U64, i64 => I64, f64 => F64,
);

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::U8(v) => write!(f, "{v}"),
            Value::I8(v) => write!(f, "{v}"),
            Value::U16(v) => write!(f, "{v}"),
            Value::I16(v) => write!(f, "{v}"),
            Value::U32(v) => write!(f, "{v}"),
            Value::I32(v) => write!(f, "{v}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::String(v) => write!(f, "{v:?}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            Value::Array(a) => write!(f, "[{} items]", a.len()),
            Value::Skipped { len, .. } => write!(f, "[{len} items]"),
        }
    }
}

/// One tensor's description from the header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    /// The ggml type id (0 = F32, 1 = F16, 2 = Q4_0, ...).
    pub ggml_type: u32,
    /// Offset of the data relative to the start of the tensor data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The number of elements, or `None` when the product of the dimensions overflows a u64.
    /// [`Gguf::read`] rejects such tensors, but a `TensorInfo` can be built by hand.
    pub fn checked_n_elements(&self) -> Option<u64> {
        checked_product(&self.dims)
    }

    /// The number of elements, saturating at `u64::MAX` (see [`Self::checked_n_elements`]).
    pub fn n_elements(&self) -> u64 {
        self.checked_n_elements().unwrap_or(u64::MAX)
    }

    /// Size of the tensor's data in bytes, when its type is known and its shape is valid for it
    /// (see [`tensor_n_bytes`]).
    pub fn n_bytes(&self) -> Option<u64> {
        tensor_n_bytes(&self.dims, self.ggml_type).ok().flatten()
    }
}

/// The product of `dims`, or `None` when it overflows a u64.
fn checked_product(dims: &[u64]) -> Option<u64> {
    dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))
}

/// The element count of a tensor of these dimensions, or `None` when it does not fit ggml's
/// `int64_t` count.
fn ggml_element_count(dims: &[u64]) -> Option<u64> {
    checked_product(dims).filter(|&n| n <= i64::MAX as u64)
}

/// Size in bytes of a tensor of this shape and type, as ggml computes it: `Ok(None)` when the
/// type is unknown; an error saying why when the shape is impossible for the type: the first
/// dimension (a row) is not a whole number of blocks, or the size overflows a u64.
pub fn tensor_n_bytes(dims: &[u64], ggml_type: u32) -> Result<Option<u64>, String> {
    let Some((block, bytes)) = type_block_size(ggml_type) else {
        return Ok(None);
    };
    let row = dims.first().copied().unwrap_or(1);
    if row % block != 0 {
        return Err(format!(
            "{row} elements per row is not a multiple of the block size {block} of type {}",
            type_name(ggml_type)
        ));
    }
    checked_product(dims)
        .and_then(|n| (n / block).checked_mul(bytes))
        .map(Some)
        .ok_or_else(|| format!("the size in bytes of dimensions {dims:?} overflows"))
}

/// The parsed header of a GGUF file.
#[derive(Debug, Clone)]
pub struct Gguf {
    pub version: u32,
    /// Metadata in file order is not needed by anyone; sorted keys make output stable.
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute offset where the tensor data section starts.
    pub data_offset: u64,
}

impl Gguf {
    /// Reads the header of the file at `path` and checks that the tensor data it describes
    /// fits inside the file.
    pub fn open(path: &Path) -> Result<Gguf, GgufError> {
        Gguf::open_with(path, None)
    }

    /// Like [`Gguf::open`], but arrays of more than [`LEAN_ARRAY`] items are read past, not
    /// kept ([`Value::Skipped`]): what a server needs (sizes, architecture, scalars) in
    /// bounded memory, whatever the file holds.
    pub fn open_lean(path: &Path) -> Result<Gguf, GgufError> {
        Gguf::open_with(path, Some(LEAN_ARRAY))
    }

    /// The header of the file at `path`, keeping arrays of at most `max_array` items.
    fn open_with(path: &Path, max_array: Option<u64>) -> Result<Gguf, GgufError> {
        let io = |source| GgufError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let gguf = Gguf::read_with(std::io::BufReader::new(file), Some(file_len), max_array)?;
        gguf.check_data_fits(file_len)?;
        Ok(gguf)
    }

    /// Reads a header from any reader. `limit` bounds every allocation by the bytes that can
    /// possibly remain (the file length); without it, counts are bounded by a fixed cap.
    pub fn read<R: Read>(reader: R, limit: Option<u64>) -> Result<Gguf, GgufError> {
        Gguf::read_with(reader, limit, None)
    }

    /// [`Gguf::read`], keeping arrays of at most `max_array` items (all when `None`).
    pub fn read_with<R: Read>(reader: R, limit: Option<u64>, max_array: Option<u64>) -> Result<Gguf, GgufError> {
        let mut r = Reader {
            inner: reader,
            offset: 0,
            limit: limit.unwrap_or(u64::MAX),
            max_array: max_array.unwrap_or(u64::MAX),
        };
        let mut magic = [0u8; 4];
        r.fill(&mut magic, "the magic \"GGUF\"")?;
        if &magic != MAGIC {
            if magic == *b"FUGG" {
                return Err(GgufError::Malformed {
                    offset: 0,
                    message:
                        "this is a big-endian GGUF file; only little-endian files are supported"
                            .into(),
                });
            }
            return Err(GgufError::NotGguf {
                found: String::from_utf8_lossy(&magic).into_owned(),
            });
        }
        let version = r.u32("the version")?;
        if version.swap_bytes() == 2 || version.swap_bytes() == 3 {
            return Err(GgufError::Malformed {
                offset: 4,
                message: "this is a big-endian GGUF file; only little-endian files are supported"
                    .into(),
            });
        }
        if version != 2 && version != 3 {
            return Err(GgufError::Version(version));
        }
        let n_tensors = r.u64("the tensor count")?;
        let n_kv = r.u64("the metadata count")?;
        // Each key-value pair is at least 12 bytes, each tensor info at least 24.
        r.check_count(n_kv, 12, "metadata entries")?;
        r.check_count(n_tensors, 24, "tensor infos")?;

        let mut metadata = BTreeMap::new();
        // Where general.alignment's value is, for an error about it.
        let mut alignment_offset = 0;
        for _ in 0..n_kv {
            let key_offset = r.offset;
            let key = r.string("a metadata key")?;
            let type_offset = r.offset;
            let ty = r.u32("a value type")?;
            if key == KEY_ALIGNMENT {
                alignment_offset = r.offset;
            }
            let value = r.value(ty, type_offset, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(GgufError::Malformed {
                    offset: key_offset,
                    message: format!("duplicate metadata key {key:?}"),
                });
            }
        }
        // Capacity grows with the data actually read, never from a count alone.
        let mut tensors = Vec::with_capacity(n_tensors.min(PREALLOC) as usize);
        let mut names = HashSet::new();
        // Where each tensor's data offset is, for an error about its alignment.
        let mut offset_fields = Vec::with_capacity(n_tensors.min(PREALLOC) as usize);
        for _ in 0..n_tensors {
            let name_offset = r.offset;
            let name = r.string("a tensor name")?;
            if !names.insert(name.clone()) {
                return Err(GgufError::Malformed {
                    offset: name_offset,
                    message: format!("duplicate tensor name {name:?}"),
                });
            }
            let dims_offset = r.offset;
            let n_dims = r.u32("the tensor's dimension count")?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(GgufError::Malformed {
                    offset: dims_offset,
                    message: format!(
                        "tensor {name:?} has {n_dims} dimensions (1 to {MAX_DIMS} expected)"
                    ),
                });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64("a tensor dimension")?);
            }
            // ggml counts elements in an i64.
            if ggml_element_count(&dims).is_none() {
                return Err(GgufError::Malformed {
                    offset: dims_offset,
                    message: format!(
                        "tensor {name:?} has dimensions {dims:?} whose product overflows \
                         ggml's element count (at most {})",
                        i64::MAX
                    ),
                });
            }
            let type_offset = r.offset;
            let ggml_type = r.u32("the tensor type")?;
            if let Err(why) = tensor_n_bytes(&dims, ggml_type) {
                return Err(GgufError::Malformed {
                    offset: type_offset,
                    message: format!("tensor {name:?}: {why}"),
                });
            }
            offset_fields.push(r.offset);
            let offset = r.u64("the tensor data offset")?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(GgufError::Malformed {
                        offset: alignment_offset,
                        message: format!("{KEY_ALIGNMENT} is {v}, not a power of two"),
                    })
                }
            },
        };
        for (t, &at) in tensors.iter().zip(&offset_fields) {
            if t.offset % alignment != 0 {
                return Err(GgufError::Malformed {
                    offset: at,
                    message: format!(
                        "tensor {:?} has data offset {}, not a multiple of the alignment {alignment}",
                        t.name, t.offset
                    ),
                });
            }
        }
        let data_offset = r
            .offset
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| GgufError::Malformed {
                offset: alignment_offset,
                message: format!(
                    "{KEY_ALIGNMENT} {alignment} puts the tensor data past the largest offset"
                ),
            })?;
        Ok(Gguf {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
        })
    }

    /// Checks that every tensor of a known type lies inside a file of `file_len` bytes.
    pub fn check_data_fits(&self, file_len: u64) -> Result<(), GgufError> {
        for t in &self.tensors {
            let n_bytes = match tensor_n_bytes(&t.dims, t.ggml_type) {
                Ok(Some(n)) => n,
                Ok(None) => continue,
                // Only a hand-built header gets here: `read` rejects such shapes.
                Err(why) => {
                    return Err(GgufError::Malformed {
                        offset: self.data_offset.saturating_add(t.offset),
                        message: format!("tensor {:?}: {why}", t.name),
                    })
                }
            };
            let end = self
                .data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(n_bytes));
            match end {
                Some(end) if end <= file_len => {}
                None => {
                    return Err(GgufError::Malformed {
                        offset: self.data_offset.saturating_add(t.offset),
                        message: format!(
                            "the {n_bytes} bytes of tensor {:?} at data offset {} would end past \
                             the largest possible file offset",
                            t.name, t.offset
                        ),
                    })
                }
                Some(_) => {
                    let start = self.data_offset.saturating_add(t.offset);
                    return Err(GgufError::Truncated {
                        offset: file_len.min(start),
                        needed: start.saturating_add(n_bytes).saturating_sub(file_len),
                        what: format!("the data of tensor {:?}", t.name),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    /// `general.architecture`, e.g. "llama".
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// An architecture-scoped key such as `{arch}.context_length`.
    pub fn arch_u64(&self, suffix: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.get_u64(&format!("{arch}.{suffix}"))
    }

    /// Checks the hyperparameters and tokenizer tables llama.cpp trusts (and aborts on, or
    /// reads out of bounds with, when they are wrong), so a malformed model is refused with a
    /// message instead of taking its runner down: a negative or non-finite norm epsilon, zero
    /// heads or layers, an absurd layer count, more experts used than there are, score or
    /// token-type tables whose length differs from the vocabulary's.
    pub fn check_hparams(&self) -> Result<(), String> {
        let Some(arch) = self.architecture() else { return Ok(()) };
        let key = |suffix: &str| format!("{arch}.{suffix}");
        for eps in ["attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon"] {
            let v = match self.get(&key(eps)) {
                Some(Value::F32(f)) => f64::from(*f),
                Some(Value::F64(f)) => *f,
                _ => continue,
            };
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{} is {v}: a norm epsilon must be a finite number of at least 0", key(eps)));
            }
        }
        if let Some(n) = self.arch_u64("block_count") {
            if n == 0 || n > 100_000 {
                return Err(format!("{} is {n}: not a number of layers", key("block_count")));
            }
        }
        if self.arch_u64("embedding_length") == Some(0) {
            return Err(format!("{} is 0", key("embedding_length")));
        }
        match self.get(&key("attention.head_count")) {
            Some(Value::Array(a)) if a.iter().any(|h| h.as_u64() == Some(0)) && a.iter().all(|h| h.as_u64() == Some(0)) => {
                return Err(format!("{} is 0 for every layer", key("attention.head_count")));
            }
            Some(v) if v.as_u64() == Some(0) => return Err(format!("{} is 0", key("attention.head_count"))),
            _ => {}
        }
        if let (Some(count), Some(used)) = (self.arch_u64("expert_count"), self.arch_u64("expert_used_count")) {
            if used > count {
                return Err(format!("{} is {used}, more than the {count} experts ({})", key("expert_used_count"), key("expert_count")));
            }
        }
        if let Some(n) = self.get("tokenizer.ggml.tokens").and_then(Value::array_len) {
            for table in ["tokenizer.ggml.scores", "tokenizer.ggml.token_type"] {
                if let Some(len) = self.get(table).and_then(Value::array_len) {
                    if len != n {
                        return Err(format!("{table} has {len} entries for a vocabulary of {n} tokens"));
                    }
                }
            }
        }
        Ok(())
    }

    /// `split.count` when this file is one shard of a split model.
    pub fn split_count(&self) -> Option<u64> {
        self.get_u64(KEY_SPLIT_COUNT)
    }

    /// `split.no`, this shard's 0-based index, when this file is one shard of a split model.
    pub fn split_no(&self) -> Option<u64> {
        self.get_u64(KEY_SPLIT_NO)
    }
}

/// (elements per block, bytes per block) for the ggml types we know, from ggml's type traits.
pub fn type_block_size(ggml_type: u32) -> Option<(u64, u64)> {
    Some(match ggml_type {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        16 => (256, 66),  // IQ2_XXS
        17 => (256, 74),  // IQ2_XS
        18 => (256, 98),  // IQ3_XXS
        19 => (256, 50),  // IQ1_S
        20 => (32, 18),   // IQ4_NL
        21 => (256, 110), // IQ3_S
        22 => (256, 82),  // IQ2_S
        23 => (256, 136), // IQ4_XS
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        29 => (256, 56),  // IQ1_M
        30 => (1, 2),     // BF16
        34 => (256, 54),  // TQ1_0
        35 => (256, 66),  // TQ2_0
        39 => (32, 17),   // MXFP4
        _ => return None,
    })
}

/// The name ggml gives a type id, e.g. "Q4_K".
pub fn type_name(ggml_type: u32) -> &'static str {
    match ggml_type {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => "unknown",
    }
}

/// Any count above this is corrupt input, whatever the file length.
const MAX_COUNT: u64 = 1 << 40;

/// The most items allocated ahead of reading them.
const PREALLOC: u64 = 4096;

/// Arrays nest at most this deep; deeper input is rejected instead of recursing without bound.
const MAX_DEPTH: u32 = 8;

struct Reader<R> {
    inner: R,
    offset: u64,
    /// No read may go past this offset (the file length, when known).
    limit: u64,
    /// Longer arrays are read past, not kept.
    max_array: u64,
}

/// The longest array [`Gguf::open_lean`] keeps.
pub const LEAN_ARRAY: u64 = 4096;

impl<R: Read> Reader<R> {
    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), GgufError> {
        let want = buf.len() as u64;
        if self.offset.saturating_add(want) > self.limit {
            return Err(self.truncated(want, what));
        }
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) => return Err(self.truncated(want - done as u64, what)),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(GgufError::Io {
                        path: format!("<offset {}>", self.offset),
                        source: e,
                    })
                }
            }
        }
        self.offset += want;
        Ok(())
    }

    fn truncated(&self, needed: u64, what: &str) -> GgufError {
        GgufError::Truncated {
            offset: self.offset,
            needed,
            what: what.to_string(),
        }
    }

    /// Rejects a count of items that cannot fit in the bytes that remain, before allocating.
    fn check_count(&self, count: u64, min_item_size: u64, what: &str) -> Result<(), GgufError> {
        // No real file has more than 2^40 of anything: such a count is corruption.
        if count > MAX_COUNT {
            return Err(GgufError::Malformed {
                offset: self.offset,
                message: format!("implausible count of {count} {what}"),
            });
        }
        let remaining = self.limit.saturating_sub(self.offset);
        // Cannot overflow under MAX_COUNT today, but nothing here should rely on that.
        let Some(needed) = count.checked_mul(min_item_size) else {
            return Err(GgufError::Malformed {
                offset: self.offset,
                message: format!(
                    "{count} {what} of at least {min_item_size} bytes each overflow a u64"
                ),
            });
        };
        if needed > remaining {
            return Err(GgufError::Truncated {
                offset: self.offset,
                needed: needed - remaining,
                what: format!("{count} {what}"),
            });
        }
        Ok(())
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        self.fill(&mut b, what)?;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let at = self.offset;
        let len = self.u64(what)?;
        self.check_count(len, 1, "string bytes")?;
        let mut buf = Vec::with_capacity(len.min(PREALLOC) as usize);
        let mut chunk = [0u8; 4096];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            self.fill(&mut chunk[..n], what)?;
            buf.extend_from_slice(&chunk[..n]);
            left -= n as u64;
        }
        String::from_utf8(buf).map_err(|_| GgufError::Malformed {
            offset: at,
            message: format!("{what} is not valid UTF-8"),
        })
    }

    /// Reads a value of type `ty`, whose type id was read at `type_offset`.
    /// Reads past `n` items of type `ty`, allocating nothing for them.
    fn skip_items(&mut self, ty: u32, n: u64, type_offset: u64, depth: u32) -> Result<(), GgufError> {
        let fixed = match ty {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        };
        if let Some(size) = fixed {
            return self.skip(n.saturating_mul(size), "array elements");
        }
        for _ in 0..n {
            match ty {
                8 => {
                    let len = self.u64("a string's length")?;
                    self.skip(len, "string bytes")?;
                }
                // Nested arrays (and unknown types, which `value` reports) item by item.
                _ => {
                    self.value(ty, type_offset, depth)?;
                }
            }
        }
        Ok(())
    }

    /// Reads past `n` bytes.
    fn skip(&mut self, n: u64, what: &str) -> Result<(), GgufError> {
        if self.offset.saturating_add(n) > self.limit {
            return Err(self.truncated(n, what));
        }
        let mut chunk = [0u8; 4096];
        let mut left = n;
        while left > 0 {
            let k = left.min(chunk.len() as u64) as usize;
            self.fill(&mut chunk[..k], what)?;
            left -= k as u64;
        }
        Ok(())
    }

    fn value(&mut self, ty: u32, type_offset: u64, depth: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U8(u8::from_le_bytes(self.bytes("a u8 value")?)),
            1 => Value::I8(i8::from_le_bytes(self.bytes("an i8 value")?)),
            2 => Value::U16(u16::from_le_bytes(self.bytes("a u16 value")?)),
            3 => Value::I16(i16::from_le_bytes(self.bytes("an i16 value")?)),
            4 => Value::U32(self.u32("a u32 value")?),
            5 => Value::I32(i32::from_le_bytes(self.bytes("an i32 value")?)),
            6 => Value::F32(f32::from_le_bytes(self.bytes("an f32 value")?)),
            7 => {
                let at = self.offset;
                match u8::from_le_bytes(self.bytes("a bool value")?) {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    b => {
                        return Err(GgufError::Malformed {
                            offset: at,
                            message: format!("bool value {b} is neither 0 nor 1"),
                        })
                    }
                }
            }
            8 => Value::String(self.string("a string value")?),
            9 => {
                let at = self.offset;
                if depth >= MAX_DEPTH {
                    return Err(GgufError::Malformed {
                        offset: at,
                        message: format!("arrays nested deeper than {MAX_DEPTH}"),
                    });
                }
                let elem_type_offset = self.offset;
                let elem_ty = self.u32("an array's element type")?;
                let n = self.u64("an array's length")?;
                let min = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    _ => {
                        return Err(GgufError::Malformed {
                            offset: elem_type_offset,
                            message: format!("unknown array element type {elem_ty}"),
                        })
                    }
                };
                self.check_count(n, min, "array elements")?;
                if n > self.max_array {
                    self.skip_items(elem_ty, n, elem_type_offset, depth + 1)?;
                    return Ok(Value::Skipped { elem_type: elem_ty, len: n });
                }
                let mut items = Vec::with_capacity(n.min(PREALLOC) as usize);
                for _ in 0..n {
                    items.push(self.value(elem_ty, elem_type_offset, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64("a u64 value")?),
            11 => Value::I64(i64::from_le_bytes(self.bytes("an i64 value")?)),
            12 => Value::F64(f64::from_le_bytes(self.bytes("an f64 value")?)),
            _ => {
                return Err(GgufError::Malformed {
                    offset: type_offset,
                    message: format!("unknown value type {ty}"),
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(n_tensors.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b
    }

    fn string(b: &mut Vec<u8>, s: &str) {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    }

    /// Models whose hyperparameters would abort llama.cpp are refused with what is wrong.
    #[test]
    fn malformed_hyperparameters_are_named() {
        let check = |pairs: &[(&str, Value)]| {
            let mut w = crate::GgufWriter::new();
            w.set("general.architecture", "llama");
            for (k, v) in pairs {
                w.set(*k, v.clone());
            }
            Gguf::read(std::io::Cursor::new(w.to_bytes().unwrap()), None).unwrap().check_hparams()
        };
        assert!(check(&[("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)), ("llama.block_count", Value::U32(30))]).is_ok());
        assert!(check(&[("llama.attention.layer_norm_rms_epsilon", Value::F32(-1.0))]).unwrap_err().contains("epsilon"));
        assert!(check(&[("llama.attention.layer_norm_rms_epsilon", Value::F32(f32::NAN))]).is_err());
        assert!(check(&[("llama.block_count", Value::U32(0))]).is_err());
        assert!(check(&[("llama.attention.head_count", Value::U32(0))]).is_err());
        assert!(check(&[("llama.expert_count", Value::U32(4)), ("llama.expert_used_count", Value::U32(8))]).is_err());
        let err = check(&[("tokenizer.ggml.tokens", Value::array(["a", "b", "c"])), ("tokenizer.ggml.scores", Value::array([0.0f32, 1.0]))]).unwrap_err();
        assert!(err.contains("2 entries for a vocabulary of 3"), "{err}");
    }

    /// A lean read keeps scalars and short arrays and reads past long ones, so a server can
    /// read any header in bounded memory (a 20M-element array once took gigabytes).
    #[test]
    fn a_lean_read_skips_long_arrays_and_keeps_the_rest() {
        let mut w = crate::GgufWriter::new();
        w.set("general.architecture", "llama");
        w.set("tokenizer.ggml.tokens", Value::array((0..100_000).map(|i| format!("t{i}"))));
        w.set("big.numbers", Value::array(0..100_000u32));
        w.set("small", Value::array([1u32, 2, 3]));
        w.set("z.after", 7u32);
        let dir = std::env::temp_dir().join(format!("hearth-lean-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.gguf");
        w.write_to_path(&path).unwrap();
        let g = Gguf::open_lean(&path).unwrap();
        assert_eq!(g.get("tokenizer.ggml.tokens"), Some(&Value::Skipped { elem_type: 8, len: 100_000 }));
        assert_eq!(g.get("big.numbers").and_then(Value::array_len), Some(100_000));
        assert_eq!(g.get("small").and_then(Value::as_array).map(<[Value]>::len), Some(3));
        assert_eq!(g.get("z.after").and_then(Value::as_u64), Some(7));
        let full = Gguf::open(&path).unwrap();
        assert_eq!(full.get("tokenizer.ggml.tokens").and_then(Value::array_len), Some(100_000));
        assert_eq!(crate::fit::estimate(&[g], &crate::fit::ContextPlan::f16(512, 512)), crate::fit::estimate(&[full], &crate::fit::ContextPlan::f16(512, 512)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_metadata_of_every_kind_and_a_tensor() {
        let mut b = header(1, 3);
        string(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        string(&mut b, "llama");
        string(&mut b, "llama.context_length");
        b.extend(4u32.to_le_bytes());
        b.extend(2048u32.to_le_bytes());
        string(&mut b, "nested");
        b.extend(9u32.to_le_bytes());
        b.extend(9u32.to_le_bytes()); // array of arrays
        b.extend(1u64.to_le_bytes());
        b.extend(0u32.to_le_bytes()); // inner: u8
        b.extend(2u64.to_le_bytes());
        b.extend([7u8, 9]);
        string(&mut b, "tok");
        b.extend(1u32.to_le_bytes());
        b.extend(64u64.to_le_bytes());
        b.extend(0u32.to_le_bytes()); // F32
        b.extend(0u64.to_le_bytes());
        let data_start = b.len().div_ceil(32) * 32;
        b.resize(data_start + 256, 0);
        let g = Gguf::read(&b[..], Some(b.len() as u64)).unwrap();
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.arch_u64("context_length"), Some(2048));
        assert_eq!(
            g.get("nested"),
            Some(&Value::Array(vec![Value::Array(vec![
                Value::U8(7),
                Value::U8(9)
            ])]))
        );
        assert_eq!(g.data_offset, data_start as u64);
        assert_eq!(g.tensors[0].n_bytes(), Some(256));
        g.check_data_fits(b.len() as u64).unwrap();
        let err = g.check_data_fits(b.len() as u64 - 1).unwrap_err();
        assert!(err.to_string().contains("tensor \"tok\""), "{err}");
    }

    #[test]
    fn rejects_bad_input_precisely() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"\x7fELF rest".to_vec(), "not a GGUF file"),
            (b"GG".to_vec(), "truncated GGUF"),
            (
                {
                    let mut b = MAGIC.to_vec();
                    b.extend(7u32.to_le_bytes());
                    b
                },
                "version 7",
            ),
            (header(0, 1 << 60), "implausible count"),
            (header(1 << 60, 0), "implausible count"),
            (
                header(0, 1000),
                "truncated GGUF: needed 12000 more bytes at offset 24 for 1000 metadata entries",
            ),
            (
                {
                    let mut b = header(0, 1);
                    string(&mut b, "k");
                    b.extend(99u32.to_le_bytes());
                    b
                },
                "unknown value type 99",
            ),
            (
                {
                    let mut b = header(0, 1);
                    b.extend(u64::MAX.to_le_bytes());
                    b.extend([0u8; 16]);
                    b
                },
                "implausible count",
            ),
            (
                {
                    let mut b = b"FUGG".to_vec();
                    b.extend([0, 0, 0, 3]);
                    b
                },
                "big-endian",
            ),
            (tensor_file("t", &[16], 2), "offset 45: tensor \"t\": 16 elements per row is not a multiple of the block size 32 of type Q4_0"),
            (tensor_file("t", &[u64::MAX], 0), "offset 33: tensor \"t\" has dimensions [18446744073709551615] whose product overflows"),
            (tensor_file("t", &[1 << 63], 24), "whose product overflows ggml's element count"),
            (tensor_file("t", &[1 << 32, 1 << 32], 0), "whose product overflows"),
            (tensor_file("t", &[(1 << 62) + 1], 0), "the size in bytes of dimensions [4611686018427387905] overflows"),
            (tensor_file("t", &[], 0), "offset 33: tensor \"t\" has 0 dimensions"),
            (tensor_file("t", &[1; 5], 0), "5 dimensions"),
            ({ let mut b = tensor_file("t", &[1], 0); let n = b.len(); b[n - 8] = 4; b }, "offset 49: tensor \"t\" has data offset 4, not a multiple of the alignment 32"),
            ([header(2, 0), tensor_file("t", &[1], 0)[24..].repeat(2)].concat(), "offset 57: duplicate tensor name \"t\""),
            (kv_file("general.alignment", 4, &48u32.to_le_bytes()), "offset 53: general.alignment is 48, not a power of two"),
            (kv_file("general.alignment", 10, &0u64.to_le_bytes()), "offset 53: general.alignment is 0, not a power of two"),
            (kv_file("general.alignment", 8, &[1, 0, 0, 0, 0, 0, 0, 0, b'x']), "offset 53: general.alignment is \"x\", not a power of two"),
            (kv_file("k", 9, &[13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), "offset 37: unknown array element type 13"),
            (kv_file("k", 7, &[2]), "offset 37: bool value 2"),
            (kv_file("k", 9, &[[9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]; 9].concat()), "offset 133: arrays nested deeper than 8"),
            (kv_file("k", 8, &[1, 0, 0, 0, 0, 0, 0, 0, 0xff]), "offset 37: a string value is not valid UTF-8"),
        ];
        for (bytes, want) in cases {
            let err = Gguf::read(&bytes[..], Some(bytes.len() as u64)).unwrap_err();
            assert!(err.to_string().contains(want), "{want}: got {err}");
        }
    }

    /// A file with one metadata entry: `key`, the type id `ty`, then `value` as it is.
    fn kv_file(key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
        let mut b = header(0, 1);
        string(&mut b, key);
        b.extend(ty.to_le_bytes());
        b.extend(value);
        b
    }

    /// A file with one tensor info and no data.
    fn tensor_file(name: &str, dims: &[u64], ggml_type: u32) -> Vec<u8> {
        let mut b = header(1, 0);
        string(&mut b, name);
        b.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(ggml_type.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b
    }

    #[test]
    fn sizes_use_checked_math() {
        let t = |dims: &[u64], ggml_type| TensorInfo {
            name: "t".into(),
            dims: dims.to_vec(),
            ggml_type,
            offset: 0,
        };
        // (tensor, n_elements, n_bytes)
        let cases = [
            (t(&[3, 2], 0), 6, Some(24)),
            (t(&[0, 5], 1), 0, Some(0)),
            (t(&[256, 2], 12), 512, Some(288)),
            (t(&[64], 39), 64, Some(34)),
            (t(&[16], 2), 16, None),      // half a Q4_0 block per row
            (t(&[32, 3], 999), 96, None), // unknown type
            (t(&[u64::MAX, 2], 0), u64::MAX, None), // saturates, no panic
            (t(&[u64::MAX], 0), u64::MAX, None), // the bytes overflow
            (t(&[], 0), 1, Some(4)),
        ];
        for (tensor, n_elements, n_bytes) in cases {
            assert_eq!(tensor.n_elements(), n_elements, "{tensor:?}");
            assert_eq!(tensor.n_bytes(), n_bytes, "{tensor:?}");
        }
        // A hand-built header whose tensor size overflows is an error, not a skipped tensor.
        let g = Gguf {
            version: 3,
            metadata: BTreeMap::new(),
            tensors: vec![t(&[u64::MAX], 0)],
            alignment: 32,
            data_offset: 64,
        };
        let err = g.check_data_fits(u64::MAX).unwrap_err();
        assert!(
            err.to_string()
                .contains("offset 64: tensor \"t\": the size in bytes"),
            "{err}"
        );
        // One whose end overflows says so instead of asking for 2^64 more bytes.
        let mut g = g;
        g.tensors = vec![TensorInfo {
            offset: u64::MAX - 63,
            ..t(&[8], 0)
        }];
        let err = g.check_data_fits(u64::MAX).unwrap_err().to_string();
        let want =
            "the 32 bytes of tensor \"t\" at data offset 18446744073709551552 would end past";
        assert!(err.contains(want), "{err}");
    }

    #[test]
    fn huge_counts_without_a_length_do_not_allocate() {
        let b = header(0, 1u64 << 60);
        let err = Gguf::read(&b[..], None).unwrap_err();
        assert!(err.to_string().contains("implausible count"), "{err}");
        // Within the cap but beyond the data: the reader fails on the missing bytes.
        let b = header(0, 1u64 << 30);
        let err = Gguf::read(&b[..], None).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
