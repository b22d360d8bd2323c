//! A GGUF writer: builds little-endian GGUF v3 files, whole or split into shards the way
//! llama.cpp's `gguf-split` writes them.
//!
//! It exists for tests and for synthetic models (the memory planner and cluster work need files
//! of a given shape, not real weights), so it favours being exact over being fast: every value,
//! shape, size and offset is checked before the first byte is written, and a file it writes is
//! one that [`Gguf::read`](crate::Gguf::read) and llama.cpp's loader accept (except for nested
//! arrays, which this crate reads but llama.cpp rejects).
//!
//! Layout, as GGUF requires: the header (magic, version, tensor count, metadata count), the
//! metadata, the tensor infos, zero padding to the alignment (`general.alignment`, default 32),
//! then each tensor's data at an offset (relative to the data section) that is a multiple of the
//! alignment, each followed by zero padding to the next multiple, the last one too (as ggml does).
//! Zero-filled tensors are streamed, never held in memory; written to a path they become holes
//! in a sparse file, so a synthetic 70B model costs no disk.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{
    tensor_n_bytes, type_name, Value, DEFAULT_ALIGNMENT, KEY_ALIGNMENT, KEY_SPLIT_COUNT,
    KEY_SPLIT_NO, KEY_SPLIT_TENSORS_COUNT, MAGIC, MAX_DIMS, MAX_TENSOR_NAME,
};

/// The GGUF version this writer writes.
pub const VERSION: u32 = 3;

/// Why a GGUF file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write {target}: {source}")]
    Io {
        /// The path, or "the output" for a plain writer.
        target: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot write metadata key {key:?}: {message}")]
    Metadata { key: String, message: String },
    #[error("cannot write tensor {name:?}: {message}")]
    Tensor { name: String, message: String },
    #[error("cannot split the model: {0}")]
    Split(String),
}

/// A tensor's data.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// These exact bytes.
    Bytes(Vec<u8>),
    /// This many zero bytes, streamed (or left as a hole when writing to a path).
    Zeros(u64),
}

impl TensorData {
    /// How many bytes of data this is.
    pub fn len(&self) -> u64 {
        match self {
            TensorData::Bytes(b) => b.len() as u64,
            TensorData::Zeros(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One tensor to write: what its info in the header says, and its data.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    /// One to four dimensions, innermost (a row) first, as ggml's `ne`.
    pub dims: Vec<u64>,
    /// The ggml type id (0 = F32, 1 = F16, ...; see [`crate::type_name`]).
    pub ggml_type: u32,
    pub data: TensorData,
}

/// Where everything lands in a written file; what [`crate::Gguf::read`] should find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub alignment: u64,
    /// The end of the tensor infos: the header's size before padding.
    pub header_len: u64,
    /// Absolute offset of the tensor data section (`header_len` aligned up).
    pub data_offset: u64,
    /// Each tensor's offset relative to `data_offset`, in the order the tensors were added.
    pub tensor_offsets: Vec<u64>,
    /// The length of the whole file.
    pub file_len: u64,
}

/// Builds a GGUF file: metadata in insertion order, then tensors in insertion order.
///
/// ```
/// use hearth_gguf::{Gguf, GgufWriter, TensorData};
/// let mut w = GgufWriter::new();
/// w.set("general.architecture", "llama").set("llama.context_length", 2048u32);
/// w.tensor("output.weight", [64, 2], 0, TensorData::Zeros(512));
/// let bytes = w.to_bytes().unwrap();
/// let g = Gguf::read(&bytes[..], Some(bytes.len() as u64)).unwrap();
/// assert_eq!(g.arch_u64("context_length"), Some(2048));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufWriter {
    /// In file order; a key appears once (setting it again replaces the value in place).
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorSpec>,
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// A copy of the GGUF file at `path`: its metadata and tensors, data read into memory
    /// (to write the same weights with other metadata, e.g. another chat template).
    pub fn from_file(path: &Path) -> Result<GgufWriter, WriteError> {
        use std::io::Read;
        let io_err = |source: io::Error| WriteError::Io { target: path.display().to_string(), source };
        let g = crate::Gguf::open(path).map_err(|e| WriteError::Io { target: path.display().to_string(), source: io::Error::other(e.to_string()) })?;
        let mut w = GgufWriter::new();
        for (k, v) in &g.metadata {
            w.set(k.clone(), v.clone());
        }
        let mut file = File::open(path).map_err(io_err)?;
        for t in &g.tensors {
            let n = match tensor_n_bytes(&t.dims, t.ggml_type) {
                Ok(Some(n)) => n,
                _ => return Err(WriteError::Tensor { name: t.name.clone(), message: format!("type {} has no known size", t.ggml_type) }),
            };
            let mut data = vec![0u8; n as usize];
            file.seek(SeekFrom::Start(g.data_offset + t.offset)).map_err(io_err)?;
            file.read_exact(&mut data).map_err(io_err)?;
            w.tensor(t.name.clone(), t.dims.clone(), t.ggml_type, TensorData::Bytes(data));
        }
        Ok(w)
    }

    /// Sets a metadata key, replacing its value in place if it is already set.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) -> &mut GgufWriter {
        let (key, value) = (key.into(), value.into());
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key, value)),
        }
        self
    }

    /// Removes a metadata key, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.metadata.iter().position(|(k, _)| k == key)?;
        Some(self.metadata.remove(i).1)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Sets `general.alignment` (a u32, as llama.cpp requires). It must be a power of two.
    pub fn alignment(&mut self, alignment: u32) -> &mut GgufWriter {
        self.set(KEY_ALIGNMENT, alignment)
    }

    /// Adds a tensor. Its data must be exactly as long as its shape and type say when the type
    /// is known; [`Self::layout`] and the writers check that.
    pub fn tensor(
        &mut self,
        name: impl Into<String>,
        dims: impl Into<Vec<u64>>,
        ggml_type: u32,
        data: TensorData,
    ) -> &mut GgufWriter {
        self.tensors.push(TensorSpec {
            name: name.into(),
            dims: dims.into(),
            ggml_type,
            data,
        });
        self
    }

    /// Adds a zero-filled tensor of a known type, sized from its shape.
    pub fn zeroed_tensor(
        &mut self,
        name: impl Into<String>,
        dims: impl Into<Vec<u64>>,
        ggml_type: u32,
    ) -> Result<&mut GgufWriter, WriteError> {
        let (name, dims) = (name.into(), dims.into());
        let n_bytes = match tensor_n_bytes(&dims, ggml_type) {
            Ok(Some(n)) => n,
            Ok(None) => {
                return Err(WriteError::Tensor {
                    name,
                    message: format!("type {ggml_type} is unknown, so its size cannot be computed"),
                })
            }
            Err(message) => return Err(WriteError::Tensor { name, message }),
        };
        Ok(self.tensor(name, dims, ggml_type, TensorData::Zeros(n_bytes)))
    }

    /// Adds a tensor as it is.
    pub fn push_tensor(&mut self, tensor: TensorSpec) -> &mut GgufWriter {
        self.tensors.push(tensor);
        self
    }

    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// Checks everything and computes where everything goes, without writing.
    pub fn layout(&self) -> Result<Layout, WriteError> {
        self.plan().map(|(layout, _)| layout)
    }

    /// Writes the file to `out`, streaming zero-filled tensors.
    pub fn write_to<W: Write>(&self, out: W) -> Result<Layout, WriteError> {
        let (layout, header) = self.plan()?;
        let io = |source| WriteError::Io {
            target: "the output".into(),
            source,
        };
        let mut sink = StreamSink(out);
        self.emit(&layout, &header, &mut sink).map_err(io)?;
        sink.0.flush().map_err(io)?;
        Ok(layout)
    }

    /// Writes the file to `path` (created or truncated). Zero-filled tensors become holes.
    pub fn write_to_path(&self, path: &Path) -> Result<Layout, WriteError> {
        let (layout, header) = self.plan()?;
        let io = |source| WriteError::Io {
            target: path.display().to_string(),
            source,
        };
        let file = File::create(path).map_err(io)?;
        let mut sink = FileSink(BufWriter::new(file));
        self.emit(&layout, &header, &mut sink).map_err(io)?;
        let file = sink.0.into_inner().map_err(|e| io(e.into_error()))?;
        // Seeking past the end writes nothing: set_len makes trailing holes part of the file.
        file.set_len(layout.file_len).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(layout)
    }

    /// The whole file in memory (for tests and small models).
    pub fn to_bytes(&self) -> Result<Vec<u8>, WriteError> {
        let mut out = Vec::new();
        self.write_to(&mut out)?;
        Ok(out)
    }

    /// Splits the model into `n_shards` shards as llama.cpp's `gguf-split` does: every shard
    /// carries `split.no` (u16, 0-based), `split.count` (u16) and `split.tensors.count` (i32, the
    /// whole model's tensor count); the first shard also carries all of the model's metadata
    /// (`split.*` keys last), later shards only the `split.*` keys (so their alignment is the
    /// default). Tensors keep their order and are dealt out in contiguous runs as even as
    /// possible, the earlier shards taking one more; every shard gets at least one tensor.
    pub fn split(&self, n_shards: u16) -> Result<Vec<GgufWriter>, WriteError> {
        let n_tensors = self.tensors.len();
        if n_shards == 0 {
            return Err(WriteError::Split(
                "the shard count must be at least 1".into(),
            ));
        }
        if usize::from(n_shards) > n_tensors.max(1) {
            return Err(WriteError::Split(format!(
                "{n_shards} shards for {n_tensors} tensors would leave a shard without tensors"
            )));
        }
        let tensors_count = i32::try_from(n_tensors).map_err(|_| {
            WriteError::Split(format!(
                "{n_tensors} tensors do not fit {KEY_SPLIT_TENSORS_COUNT} (an i32)"
            ))
        })?;
        let (base, extra) = (
            n_tensors / usize::from(n_shards),
            n_tensors % usize::from(n_shards),
        );
        let mut rest = self.tensors.iter();
        let mut shards = Vec::with_capacity(n_shards.into());
        for no in 0..n_shards {
            let mut shard = if no == 0 {
                GgufWriter {
                    metadata: self.metadata.clone(),
                    tensors: Vec::new(),
                }
            } else {
                GgufWriter::new()
            };
            shard
                .set(KEY_SPLIT_NO, no)
                .set(KEY_SPLIT_COUNT, n_shards)
                .set(KEY_SPLIT_TENSORS_COUNT, tensors_count);
            let take = base + usize::from(usize::from(no) < extra);
            shard.tensors.extend(rest.by_ref().take(take).cloned());
            shards.push(shard);
        }
        Ok(shards)
    }

    /// Splits the model (see [`Self::split`]) and writes the shards as
    /// `<prefix>-00001-of-0000N.gguf` ([`split_path`]), returning their paths in order.
    pub fn write_split(&self, prefix: &Path, n_shards: u16) -> Result<Vec<PathBuf>, WriteError> {
        let shards = self.split(n_shards)?;
        let mut paths = Vec::with_capacity(shards.len());
        for (no, shard) in (0..n_shards).zip(&shards) {
            let path = split_path(prefix, no, n_shards);
            shard.write_to_path(&path)?;
            paths.push(path);
        }
        Ok(paths)
    }

    /// Validates everything, computes the layout and serialises the header (metadata and tensor
    /// infos; it is small next to the data, so it is built in memory).
    fn plan(&self) -> Result<(Layout, Vec<u8>), WriteError> {
        let alignment = match self.get(KEY_ALIGNMENT) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v {
                Value::U32(a) if a.is_power_of_two() => u64::from(*a),
                _ => {
                    return Err(WriteError::Metadata {
                        key: KEY_ALIGNMENT.into(),
                        message: format!("it is {v}, not a u32 power of two"),
                    })
                }
            },
        };

        let mut header = Vec::new();
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            if key.is_empty() {
                return Err(WriteError::Metadata {
                    key: key.clone(),
                    message: "keys cannot be empty".into(),
                });
            }
            put_string(&mut header, key);
            header.extend_from_slice(&value.gguf_type().to_le_bytes());
            put_value(&mut header, value).map_err(|message| WriteError::Metadata {
                key: key.clone(),
                message,
            })?;
        }

        let mut tensor_offsets = Vec::with_capacity(self.tensors.len());
        let mut next = 0u64;
        let mut names = std::collections::HashSet::new();
        for t in &self.tensors {
            let bad = |message: String| WriteError::Tensor {
                name: t.name.clone(),
                message,
            };
            check_tensor(t).map_err(bad)?;
            if !names.insert(t.name.as_str()) {
                return Err(bad("a tensor of that name was already added".into()));
            }
            tensor_offsets.push(next);
            next = next
                .checked_add(t.data.len())
                .and_then(|end| end.checked_next_multiple_of(alignment))
                .ok_or_else(|| bad("the data section would pass the largest offset".into()))?;
            put_string(&mut header, &t.name);
            header.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.ggml_type.to_le_bytes());
            header.extend_from_slice(&tensor_offsets[tensor_offsets.len() - 1].to_le_bytes());
        }
        let header_len = header.len() as u64;
        let past_end = || WriteError::Tensor {
            name: self
                .tensors
                .last()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            message: "the file would pass the largest offset".into(),
        };
        let data_offset = header_len
            .checked_next_multiple_of(alignment)
            .ok_or_else(past_end)?;
        let layout = Layout {
            alignment,
            header_len,
            data_offset,
            file_len: data_offset.checked_add(next).ok_or_else(past_end)?,
            tensor_offsets,
        };
        Ok((layout, header))
    }

    fn emit(&self, layout: &Layout, header: &[u8], sink: &mut impl Sink) -> io::Result<()> {
        sink.bytes(header)?;
        sink.zeros(layout.data_offset - layout.header_len)?;
        let ends = layout.tensor_offsets.iter().skip(1).copied();
        let data_len = layout.file_len - layout.data_offset;
        for ((t, start), end) in self
            .tensors
            .iter()
            .zip(&layout.tensor_offsets)
            .zip(ends.chain([data_len]))
        {
            match &t.data {
                TensorData::Bytes(b) => sink.bytes(b)?,
                TensorData::Zeros(n) => sink.zeros(*n)?,
            }
            sink.zeros(end - start - t.data.len())?;
        }
        Ok(())
    }
}

/// The path of shard `no` (0-based) of `n_shards`: `<prefix>-00001-of-00003.gguf` for the first
/// of three, as llama.cpp's `llama_split_path` names them.
pub fn split_path(prefix: &Path, no: u16, n_shards: u16) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(format!("-{:05}-of-{:05}.gguf", u32::from(no) + 1, n_shards));
    PathBuf::from(name)
}

/// Checks one tensor's name, shape and data size against what GGUF and ggml allow.
fn check_tensor(t: &TensorSpec) -> Result<(), String> {
    if t.name.len() > MAX_TENSOR_NAME {
        return Err(format!(
            "the name is {} bytes long (ggml allows {MAX_TENSOR_NAME})",
            t.name.len()
        ));
    }
    if t.dims.is_empty() || t.dims.len() > MAX_DIMS as usize {
        return Err(format!(
            "it has {} dimensions (1 to {MAX_DIMS} expected)",
            t.dims.len()
        ));
    }
    if crate::ggml_element_count(&t.dims).is_none() {
        return Err(format!(
            "dimensions {:?} overflow ggml's element count",
            t.dims
        ));
    }
    if let Some(n_bytes) = tensor_n_bytes(&t.dims, t.ggml_type)? {
        if t.data.len() != n_bytes {
            return Err(format!(
                "{} bytes of data, but a {} tensor of dimensions {:?} is {n_bytes} bytes",
                t.data.len(),
                type_name(t.ggml_type),
                t.dims
            ));
        }
    }
    Ok(())
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Serialises a value (without its type id). Arrays must hold one type of element; an empty
/// array is written as an array of u8 (any element type reads back the same).
fn put_value(out: &mut Vec<u8>, value: &Value) -> Result<(), String> {
    match value {
        Value::U8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_string(out, s),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Skipped { len, .. } => return Err(format!("an array of {len} items that was read past (a lean read) cannot be written")),
        Value::Array(items) => {
            let elem_type = items.first().map_or(0, Value::gguf_type);
            out.extend_from_slice(&elem_type.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for (i, item) in items.iter().enumerate() {
                if item.gguf_type() != elem_type {
                    return Err(format!(
                        "array item {i} is {item:?}, but item 0 is of GGUF type {elem_type}: \
                         arrays hold one type"
                    ));
                }
                put_value(out, item).map_err(|e| format!("in array item {i}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// Where the bytes go: a plain stream writes zeros, a file can skip over them.
trait Sink {
    fn bytes(&mut self, b: &[u8]) -> io::Result<()>;
    fn zeros(&mut self, n: u64) -> io::Result<()>;
}

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

struct StreamSink<W>(W);

impl<W: Write> Sink for StreamSink<W> {
    fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        self.0.write_all(b)
    }

    fn zeros(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            let k = n.min(ZEROS.len() as u64) as usize;
            self.0.write_all(&ZEROS[..k])?;
            n -= k as u64;
        }
        Ok(())
    }
}

struct FileSink(BufWriter<File>);

impl Sink for FileSink {
    fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        self.0.write_all(b)
    }

    fn zeros(&mut self, n: u64) -> io::Result<()> {
        // Short runs (padding) are cheaper written than sought over.
        if n < ZEROS.len() as u64 {
            return self.0.write_all(&ZEROS[..n as usize]);
        }
        let n = i64::try_from(n).map_err(|_| io::Error::other("a hole larger than i64::MAX"))?;
        self.0.seek(SeekFrom::Current(n)).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Gguf, TensorInfo};

    /// A scratch directory removed on drop (no tempfile dependency for one test module).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "hearth-gguf-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn read(bytes: &[u8]) -> Gguf {
        let g = Gguf::read(bytes, Some(bytes.len() as u64)).unwrap();
        g.check_data_fits(bytes.len() as u64).unwrap();
        g
    }

    /// Every value type, nested arrays included.
    fn every_value() -> Vec<(&'static str, Value)> {
        vec![
            ("general.architecture", Value::from("llama")),
            ("t.u8", Value::U8(200)),
            ("t.i8", Value::I8(-100)),
            ("t.u16", Value::U16(60_000)),
            ("t.i16", Value::I16(-30_000)),
            ("t.u32", Value::U32(4_000_000_000)),
            ("t.i32", Value::I32(-2_000_000_000)),
            ("t.f32", Value::F32(-1.5)),
            ("t.bool", Value::Bool(true)),
            ("t.string", Value::from("héllo\0world")),
            ("t.empty_string", Value::from("")),
            ("t.u64", Value::U64(u64::MAX)),
            ("t.i64", Value::I64(i64::MIN)),
            ("t.f64", Value::F64(1e300)),
            ("t.strings", Value::array(["a", "bb", ""])),
            ("t.f32s", Value::array([0.5f32, -0.25])),
            ("t.bools", Value::array([true, false])),
            ("t.empty", Value::Array(vec![])),
            (
                "t.nested",
                Value::Array(vec![
                    Value::array([1u8, 2]),
                    Value::array(["x"]),
                    Value::Array(vec![]),
                    Value::Array(vec![Value::array([7i64])]),
                ]),
            ),
        ]
    }

    #[test]
    fn round_trips_every_value_type_and_tensor_layout() {
        // (alignment, tensors as (name, dims, type, data)).
        type Case = (Option<u32>, Vec<(&'static str, Vec<u64>, u32, TensorData)>);
        let cases: Vec<Case> = vec![
            (None, vec![]),
            (
                None,
                vec![("a", vec![3], 0, TensorData::Bytes(vec![1; 12]))],
            ),
            (
                Some(64),
                vec![
                    ("tok_embd.weight", vec![64, 3], 1, TensorData::Zeros(384)),
                    (
                        "blk.0.attn_q.weight",
                        vec![256, 2],
                        12,
                        TensorData::Zeros(288),
                    ),
                    ("odd", vec![5], 24, TensorData::Bytes(vec![9, 8, 7, 6, 5])),
                    (
                        "unknown_type",
                        vec![7],
                        1000,
                        TensorData::Bytes(vec![1, 2, 3]),
                    ),
                ],
            ),
            (
                Some(1),
                vec![
                    ("x", vec![1], 24, TensorData::Bytes(vec![42])),
                    ("y", vec![32, 1, 1, 2], 2, TensorData::Zeros(36)),
                    ("empty", vec![0, 4], 0, TensorData::Bytes(vec![])),
                ],
            ),
            (
                Some(4096),
                vec![("z", vec![2], 28, TensorData::Bytes(vec![3; 16]))],
            ),
        ];
        for (alignment, tensors) in cases {
            let mut w = GgufWriter::new();
            for (k, v) in every_value() {
                w.set(k, v);
            }
            if let Some(a) = alignment {
                w.alignment(a);
            }
            for (name, dims, ty, data) in &tensors {
                w.tensor(*name, dims.clone(), *ty, data.clone());
            }
            let bytes = w.to_bytes().unwrap();
            let layout = w.layout().unwrap();
            let g = read(&bytes);
            let want_align = alignment.map_or(DEFAULT_ALIGNMENT, u64::from);
            assert_eq!(g.version, VERSION);
            assert_eq!(g.alignment, want_align);
            assert_eq!(layout.alignment, want_align);
            assert_eq!(g.data_offset, layout.data_offset);
            assert_eq!(g.data_offset % want_align, 0);
            assert!(
                g.data_offset >= layout.header_len
                    && g.data_offset - layout.header_len < want_align
            );
            assert_eq!(bytes.len() as u64, layout.file_len);
            assert_eq!(
                layout.file_len % want_align,
                0,
                "the last tensor is padded too"
            );
            let want_meta: std::collections::BTreeMap<String, Value> =
                w.metadata().iter().cloned().collect();
            assert_eq!(g.metadata, want_meta);
            assert_eq!(g.tensors.len(), tensors.len());
            for ((t, (name, dims, ty, data)), off) in
                g.tensors.iter().zip(&tensors).zip(&layout.tensor_offsets)
            {
                assert_eq!(
                    t,
                    &TensorInfo {
                        name: name.to_string(),
                        dims: dims.clone(),
                        ggml_type: *ty,
                        offset: *off,
                    }
                );
                assert_eq!(t.offset % want_align, 0, "{name}");
                let start = (g.data_offset + t.offset) as usize;
                let got = &bytes[start..start + data.len() as usize];
                match data {
                    TensorData::Bytes(b) => assert_eq!(got, &b[..], "{name}"),
                    TensorData::Zeros(_) => assert!(got.iter().all(|&b| b == 0), "{name}"),
                }
            }
            // The file is exactly as long as it needs to be: one byte less and the last
            // tensor of known type no longer fits.
            if let Some(last) = g
                .tensors
                .iter()
                .rev()
                .find(|t| t.n_bytes().is_some_and(|n| n > 0))
            {
                let end = g.data_offset + last.offset + last.n_bytes().unwrap();
                let err = g.check_data_fits(end - 1).unwrap_err();
                assert!(
                    err.to_string().contains(&format!("{:?}", last.name)),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn writes_to_a_path_with_holes_and_open_reads_it() {
        let dir = Scratch::new("path");
        let path = dir.0.join("model.gguf");
        let mut w = GgufWriter::new();
        w.set("general.architecture", "llama")
            .set("llama.block_count", 2u32);
        w.zeroed_tensor("big", [4096, 256], 0).unwrap();
        w.tensor("small", [4], 0, TensorData::Bytes(vec![5; 16]));
        // A trailing hole: only set_len makes it part of the file.
        w.zeroed_tensor("tail", [65536], 0).unwrap();
        let layout = w.write_to_path(&path).unwrap();
        let g = Gguf::open(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), layout.file_len);
        assert_eq!(g.data_offset, layout.data_offset);
        assert_eq!(g.tensors[1].offset, 4096 * 256 * 4);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            bytes,
            w.to_bytes().unwrap(),
            "the path writer and the stream writer agree"
        );
    }

    #[test]
    fn set_replaces_in_place_and_remove_removes() {
        let mut w = GgufWriter::new();
        w.set("a", 1u32).set("b", 2u32).set("a", "one");
        assert_eq!(w.metadata()[0], ("a".to_string(), Value::from("one")));
        assert_eq!(w.metadata().len(), 2);
        assert_eq!(w.remove("a"), Some(Value::from("one")));
        assert_eq!(w.get("a"), None);
    }

    #[test]
    fn rejects_what_would_not_be_a_valid_file() {
        type Build = Box<dyn Fn(&mut GgufWriter)>;
        let cases: Vec<(Build, &str)> = vec![
            (
                Box::new(|w| {
                    w.alignment(48);
                }),
                "general.alignment\": it is 48, not a u32 power of two",
            ),
            (
                Box::new(|w| {
                    w.set(KEY_ALIGNMENT, 32u64);
                }),
                "not a u32 power of two",
            ),
            (
                Box::new(|w| {
                    w.set("", 1u8);
                }),
                "keys cannot be empty",
            ),
            (
                Box::new(|w| {
                    w.set("k", Value::Array(vec![Value::U8(1), Value::I8(1)]));
                }),
                "arrays hold one type",
            ),
            (
                Box::new(|w| {
                    w.set(
                        "k",
                        Value::Array(vec![Value::Array(vec![Value::U8(1), Value::from("x")])]),
                    );
                }),
                "in array item 0: array item 1",
            ),
            (
                Box::new(|w| {
                    w.tensor("t", [3], 0, TensorData::Zeros(11));
                }),
                "11 bytes of data, but a F32 tensor of dimensions [3] is 12 bytes",
            ),
            (
                Box::new(|w| {
                    w.tensor("t", [16], 2, TensorData::Zeros(9));
                }),
                "not a multiple of the block size 32 of type Q4_0",
            ),
            (
                Box::new(|w| {
                    w.tensor("t", Vec::new(), 0, TensorData::Zeros(4));
                }),
                "0 dimensions",
            ),
            (
                Box::new(|w| {
                    w.tensor("t", [1, 1, 1, 1, 1], 0, TensorData::Zeros(4));
                }),
                "5 dimensions",
            ),
            (
                Box::new(|w| {
                    w.tensor("t", [1 << 32, 1 << 32], 0, TensorData::Zeros(0));
                }),
                "overflow ggml's element count",
            ),
            (
                Box::new(|w| {
                    w.tensor("t", [1 << 62], 0, TensorData::Zeros(0));
                }),
                "overflows",
            ),
            (
                Box::new(|w| {
                    w.tensor("x".repeat(64), [1], 0, TensorData::Zeros(4));
                }),
                "64 bytes long",
            ),
            (
                Box::new(|w| {
                    w.tensor("t", [1], 0, TensorData::Zeros(4)).tensor(
                        "t",
                        [1],
                        0,
                        TensorData::Zeros(4),
                    );
                }),
                "already added",
            ),
            (
                Box::new(|w| {
                    w.tensor("t", [1], 999, TensorData::Zeros(u64::MAX));
                }),
                "largest offset",
            ),
        ];
        for (build, want) in cases {
            let mut w = GgufWriter::new();
            build(&mut w);
            let err = w.to_bytes().unwrap_err().to_string();
            assert!(err.contains(want), "want {want:?}, got {err:?}");
            assert_eq!(w.layout().unwrap_err().to_string(), err);
        }
        let err = GgufWriter::new().zeroed_tensor("t", [4], 77).unwrap_err();
        assert!(err.to_string().contains("type 77 is unknown"), "{err}");
    }

    fn model(n_tensors: usize) -> GgufWriter {
        let mut w = GgufWriter::new();
        w.set("general.architecture", "llama")
            .set("llama.block_count", 4u32)
            .set("tokenizer.ggml.tokens", Value::array(["<s>", "a"]));
        for i in 0..n_tensors {
            w.tensor(
                format!("t{i}"),
                [i as u64 + 1],
                0,
                TensorData::Bytes(vec![i as u8; 4 * (i + 1)]),
            );
        }
        w
    }

    #[test]
    fn splits_like_gguf_split() {
        // (tensors, shards, tensors per shard)
        let cases: &[(usize, u16, &[usize])] = &[
            (0, 1, &[0]),
            (1, 1, &[1]),
            (5, 2, &[3, 2]),
            (6, 3, &[2, 2, 2]),
            (7, 7, &[1, 1, 1, 1, 1, 1, 1]),
            (10, 4, &[3, 3, 2, 2]),
        ];
        for &(n_tensors, n_shards, per_shard) in cases {
            let w = model(n_tensors);
            let shards = w.split(n_shards).unwrap();
            assert_eq!(shards.len(), usize::from(n_shards));
            let mut seen = Vec::new();
            for (no, shard) in shards.iter().enumerate() {
                let g = read(&shard.to_bytes().unwrap());
                assert_eq!(g.get(KEY_SPLIT_NO), Some(&Value::U16(no as u16)));
                assert_eq!(g.get(KEY_SPLIT_COUNT), Some(&Value::U16(n_shards)));
                assert_eq!(
                    g.get(KEY_SPLIT_TENSORS_COUNT),
                    Some(&Value::I32(n_tensors as i32))
                );
                assert_eq!(g.split_no(), Some(no as u64));
                assert_eq!(g.split_count(), Some(u64::from(n_shards)));
                if no == 0 {
                    assert_eq!(g.architecture(), Some("llama"));
                    assert_eq!(g.metadata.len(), w.metadata().len() + 3);
                    let keys: Vec<&str> =
                        shard.metadata().iter().map(|(k, _)| k.as_str()).collect();
                    assert_eq!(
                        &keys[keys.len() - 3..],
                        [KEY_SPLIT_NO, KEY_SPLIT_COUNT, KEY_SPLIT_TENSORS_COUNT]
                    );
                } else {
                    assert_eq!(
                        g.metadata.len(),
                        3,
                        "later shards carry only the split keys"
                    );
                }
                assert_eq!(g.tensors.len(), per_shard[no]);
                seen.extend(g.tensors.iter().map(|t| t.name.clone()));
            }
            let all: Vec<String> = w.tensors().iter().map(|t| t.name.clone()).collect();
            assert_eq!(seen, all, "every tensor once, in order");
        }
        for (n_tensors, n_shards, want) in [
            (3, 0, "at least 1"),
            (3, 4, "without tensors"),
            (0, 2, "without tensors"),
        ] {
            let err = model(n_tensors).split(n_shards).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[test]
    fn writes_split_files_named_like_llama_cpp() {
        let dir = Scratch::new("split");
        let prefix = dir.0.join("m");
        let paths = model(5).write_split(&prefix, 3).unwrap();
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "m-00001-of-00003.gguf",
                "m-00002-of-00003.gguf",
                "m-00003-of-00003.gguf"
            ]
        );
        for (no, p) in paths.iter().enumerate() {
            let g = Gguf::open(p).unwrap();
            assert_eq!(g.split_no(), Some(no as u64));
        }
        assert_eq!(
            split_path(Path::new("a/b"), 11, 12),
            PathBuf::from("a/b-00012-of-00012.gguf")
        );
    }
}
