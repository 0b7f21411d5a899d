//! Validating GGUF reader over a memory map. Every count, length and offset is
//! checked against the file size before use; errors name the field and offset.

use super::types::{type_id_name, GgmlType};
use super::value::{Value, ValueType};
use anyhow::{bail, Result};
use std::collections::HashMap;
use std::path::Path;

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_DIMS: u32 = 4;
const MAX_ARRAY_DEPTH: usize = 8;

/// One tensor's description and the byte range of its data in the file.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: dims[0] is the row length (contiguous).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: usize,
    pub n_bytes: usize,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
    pub fn row_len(&self) -> usize {
        self.dims[0] as usize
    }
    pub fn n_rows(&self) -> usize {
        (self.n_elements() / self.dims[0].max(1)) as usize
    }
}

/// A parsed GGUF file. Tensor data stays in `data` (a mmap or an owned buffer).
pub struct GgufFile {
    pub version: u32,
    pub alignment: u64,
    pub metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub data_offset: usize,
    data: Data,
}

enum Data {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Data {
    fn bytes(&self) -> &[u8] {
        match self {
            Data::Mmap(m) => m,
            Data::Owned(v) => v,
        }
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn need(&self, n: usize, what: &str) -> Result<()> {
        if self.buf.len().saturating_sub(self.pos) < n {
            bail!("{what} at offset {}: needs {n} bytes but the file ends at {} (truncated file?)", self.pos, self.buf.len());
        }
        Ok(())
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        self.need(n, what)?;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    /// A count that is then used to read `min_elem_bytes` bytes per element:
    /// rejected if the rest of the file cannot hold that many.
    fn count(&mut self, v2: bool, min_elem_bytes: usize, what: &str) -> Result<u64> {
        let at = self.pos;
        let n = if v2 { self.u64(what)? } else { self.u32(what)? as u64 };
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_elem_bytes.max(1) as u64) > left && min_elem_bytes > 0 {
            bail!("{what} at offset {at}: {n} is more than the {left} bytes left in the file can hold");
        }
        Ok(n)
    }
    fn string(&mut self, v2: bool, what: &str) -> Result<String> {
        let at = self.pos;
        let n = self.count(v2, 1, what)? as usize;
        let bytes = self.take(n, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => bail!("{what} at offset {at}: string is not valid UTF-8"),
        }
    }
}

fn scalar_size(t: ValueType) -> usize {
    match t {
        ValueType::U8 | ValueType::I8 | ValueType::Bool => 1,
        ValueType::U16 | ValueType::I16 => 2,
        ValueType::U32 | ValueType::I32 | ValueType::F32 => 4,
        ValueType::U64 | ValueType::I64 | ValueType::F64 => 8,
        ValueType::String => 8, // at least its length field (4 in v1)
        ValueType::Array => 12, // at least its type and count
    }
}

fn read_value(c: &mut Cursor, t: ValueType, v2: bool, key: &str, depth: usize) -> Result<Value> {
    let what = key;
    Ok(match t {
        ValueType::U8 => Value::U8(c.u8(what)?),
        ValueType::I8 => Value::I8(c.u8(what)? as i8),
        ValueType::U16 => Value::U16(c.u16(what)?),
        ValueType::I16 => Value::I16(c.u16(what)? as i16),
        ValueType::U32 => Value::U32(c.u32(what)?),
        ValueType::I32 => Value::I32(c.u32(what)? as i32),
        ValueType::F32 => Value::F32(f32::from_bits(c.u32(what)?)),
        ValueType::Bool => {
            let at = c.pos;
            match c.u8(what)? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => bail!("{what} at offset {at}: bool byte is {b}, not 0 or 1"),
            }
        }
        ValueType::String => Value::String(c.string(v2, what)?),
        ValueType::U64 => Value::U64(c.u64(what)?),
        ValueType::I64 => Value::I64(c.u64(what)? as i64),
        ValueType::F64 => Value::F64(f64::from_bits(c.u64(what)?)),
        ValueType::Array => {
            let at = c.pos;
            if depth >= MAX_ARRAY_DEPTH {
                bail!("{what} at offset {at}: arrays nested deeper than {MAX_ARRAY_DEPTH}");
            }
            let et_raw = c.u32(what)?;
            let Some(et) = ValueType::from_u32(et_raw) else {
                bail!("{what} at offset {at}: unknown array element type {et_raw}");
            };
            let min = if v2 { scalar_size(et) } else { scalar_size(et).min(4) };
            let n = c.count(v2, min, what)? as usize;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(read_value(c, et, v2, key, depth + 1)?);
            }
            Value::Array(et, items)
        }
    })
}

impl GgufFile {
    /// Open and validate a GGUF file; tensor data is memory-mapped, not copied.
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            bail!("{}: cannot open: it is a directory, not a GGUF file", path.display());
        }
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => bail!("{}: cannot open: {e}", path.display()),
        };
        // SAFETY: the map is read-only; a model file changed underneath us by
        // another process is outside what any mmap-based loader can defend against.
        let map = match unsafe { memmap2::Mmap::map(&file) } {
            Ok(m) => m,
            Err(e) => bail!("{}: cannot map: {e}", path.display()),
        };
        Self::parse(Data::Mmap(map)).map_err(|e| anyhow::anyhow!("{}: invalid GGUF: {e}", path.display()))
    }

    /// Parse a GGUF image held in memory (used by tests and the writer).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(Data::Owned(bytes)).map_err(|e| anyhow::anyhow!("invalid GGUF: {e}"))
    }

    fn parse(data: Data) -> Result<Self> {
        let buf = data.bytes();
        let mut c = Cursor { buf, pos: 0 };
        let magic = c.take(4, "magic")?;
        if magic != GGUF_MAGIC {
            bail!("magic at offset 0: expected \"GGUF\", found {:?}", String::from_utf8_lossy(magic));
        }
        let version = c.u32("version")?;
        if !(1..=3).contains(&version) {
            bail!("version at offset 4: {version} is not a supported GGUF version (1, 2 or 3)");
        }
        let v2 = version >= 2;
        // each tensor info is at least 8+4+8+4+8 bytes, each kv at least 8+4+1
        let n_tensors = c.count(v2, 24, "tensor_count")?;
        let n_kv = c.count(v2, 13, "metadata_kv_count")?;

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut index = HashMap::new();
        for i in 0..n_kv {
            let key = c.string(v2, &format!("metadata key #{i}"))?;
            let at = c.pos;
            let traw = c.u32(&key)?;
            let Some(t) = ValueType::from_u32(traw) else {
                bail!("{key} at offset {at}: unknown metadata value type {traw}");
            };
            let v = read_value(&mut c, t, v2, &key, 0)?;
            if index.insert(key.clone(), metadata.len()).is_some() {
                bail!("{key} at offset {at}: duplicate metadata key");
            }
            metadata.push((key, v));
        }
        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_i64() {
                // the spec: a power of two and a multiple of 8 (the block casts rely on it)
                Some(a) if a >= 8 && (a as u64).is_power_of_two() => a as u64,
                _ => bail!("general.alignment: {v:?} is not a power of two of at least 8"),
            },
        };

        let mut infos = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = c.string(v2, &format!("tensor #{i} name"))?;
            let at = c.pos;
            let nd = c.u32(&format!("tensor {name} n_dims"))?;
            if nd == 0 || nd > MAX_DIMS {
                bail!("tensor {name} n_dims at offset {at}: {nd} is not in 1..={MAX_DIMS}");
            }
            let mut dims = Vec::with_capacity(nd as usize);
            let mut n: u64 = 1;
            for _ in 0..nd {
                let at = c.pos;
                let d = if v2 { c.u64(&format!("tensor {name} dims"))? } else { c.u32(&format!("tensor {name} dims"))? as u64 };
                n = match n.checked_mul(d) {
                    Some(n) if d <= i64::MAX as u64 && n <= i64::MAX as u64 => n,
                    _ => bail!("tensor {name} dims at offset {at}: element count overflows"),
                };
                dims.push(d);
            }
            let at = c.pos;
            let traw = c.u32(&format!("tensor {name} type"))?;
            let Some(ty) = GgmlType::from_id(traw) else {
                bail!("tensor {name} type at offset {at}: {} (id {traw}) is not supported", type_id_name(traw));
            };
            if matches!(ty, GgmlType::Q8_1 | GgmlType::Q8_K) {
                bail!("tensor {name} type at offset {at}: {} is an activation type, not a weight type", ty.name());
            }
            let at_off = c.pos;
            let off = c.u64(&format!("tensor {name} offset"))?;
            if off % alignment != 0 {
                bail!("tensor {name} offset at offset {at_off}: {off} is not a multiple of the alignment {alignment}");
            }
            if dims[0] % ty.block_elems() as u64 != 0 {
                bail!("tensor {name} dims at offset {at}: row length {} is not a multiple of the {} block size {}", dims[0], ty.name(), ty.block_elems());
            }
            let nb = (n / ty.block_elems() as u64).checked_mul(ty.block_bytes() as u64);
            let Some(nb) = nb else { bail!("tensor {name}: byte size overflows") };
            infos.push((name, dims, ty, off, nb, at_off));
        }
        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = buf.len() as u64;
        let mut tensors = Vec::with_capacity(infos.len());
        let mut tensor_index = HashMap::new();
        // As llama.cpp: each tensor's data starts where the previous one's
        // (padded to the alignment) ends, so no two tensors overlap.
        let mut expected = 0u64;
        for (name, dims, ty, off, nb, at_off) in infos {
            let start = data_offset.checked_add(off);
            let end = start.and_then(|s| s.checked_add(nb));
            match end {
                Some(e) if e <= file_len => {}
                _ => {
                    bail!("tensor {name} offset at offset {at_off}: data [{}+{off}, +{nb} bytes) lies past the end of the file ({file_len} bytes)", data_offset)
                }
            }
            if off != expected {
                bail!("tensor {name} offset at offset {at_off}: {off}, expected {expected} (tensor data must follow in order, without overlap)");
            }
            expected = off.saturating_add(nb.div_ceil(alignment).saturating_mul(alignment));
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                bail!("tensor {name}: duplicate tensor name");
            }
            tensors.push(TensorInfo { name, dims, ty, offset: (data_offset + off) as usize, n_bytes: nb as usize });
        }
        Ok(GgufFile { version, alignment, metadata, index, tensors, tensor_index, data_offset: data_offset as usize, data })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(|v| v.as_str())
    }
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(|v| v.as_i64())
    }
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(|v| v.as_f64())
    }
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(|v| v.as_bool())
    }
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }
    /// The raw bytes of a tensor (zero-copy view into the mapping).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        &self.data.bytes()[t.offset..t.offset + t.n_bytes]
    }
    /// Bytes at an absolute offset (used by views that remember where their tensor lives).
    pub fn tensor_data_at(&self, offset: usize, len: usize) -> &[u8] {
        &self.data.bytes()[offset..offset + len]
    }
    /// Whole file size in bytes.
    pub fn file_len(&self) -> usize {
        self.data.bytes().len()
    }
}
